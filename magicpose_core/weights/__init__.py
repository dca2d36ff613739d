"""Weights: safe loading, validation, conversion, key maps and layouts, downloads.

Modules, each importing only those above it:
hub          where weights live and how they are downloaded
layout       the SD1.5 UNet / ControlNet / VAE / CLIP tensor layouts the files are checked against
keymap       diffusers key names -> official (ldm) names
errors       CheckpointError and the advice its messages end with
safe_load    reading .th/.pth/.ckpt and .safetensors files without executing pickled code
describe     what a state dict is: key groups, a guess at its kind, layout differences
validate     exact validation of the official checkpoint and its two parts
convert      the split into parts, the streaming safetensors writer, the convert-on-first-use cache
parts        load_parts: the two networks for ComfyUI from an official file, converted parts or a diffusers folder
report       inspect: a human-readable report of a weights file
cli          the command line (nothing imports it)
CLI: ``python -m magicpose_core.weights {convert,download,inspect}`` (also ``python -m magicpose_core.checkpoint``).
"""
