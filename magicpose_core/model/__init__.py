"""The MagicPose method: what the official model computes, and nothing about files, video or servers.

constants        the official constants (inference settings, schedule, the 16 self-attention sites), stated once
attention_bank   multi-source attention: the reference's self-attention inputs appended to keys/values
reference        the reference image prepared the way the official code prepares it
guidance         the official DDIM schedule (the guidance itself is ComfyUI's CFG)
temporal         optional temporal sources (off by default; not in the official code)
See docs/method.md.
"""
