"""Weights: safe loading, validation, conversion, key maps and layouts, downloads.

checkpoint   reading official/converted/diffusers weights without executing pickled code; conversion
keymap       official (LDM) key names <-> ComfyUI/diffusers names
layout       the SD1.5 UNet / ControlNet tensor layouts the files are checked against
hub          where weights live and how they are downloaded
CLI: ``python -m magicpose_core.weights {convert,download,inspect}`` (also ``python -m magicpose_core.checkpoint``).
"""
