"""ComfyUI-side MagicPose: the patch that puts the bank and pose ControlNet into the user's MODEL, and its sampling.

model_patch       the bank writer/reader wrappers on ComfyUI's ModelPatcher and the pose ControlNet hint
frame_chunks      frame_batch: running the networks over chunks of frames
temporal_sources  the optional temporal sources (off by default)
official_schedule the magicpose_official scheduler
run_sampling      what MagicPose Sampler runs: patch, sample with ComfyUI's sampler, unpatch
See docs/comfyui-integration.md.
"""
