"""Test-only ComfyUI custom node folder: one execution error in the middle of a sampling run, on the one server that
loads it (tests/e2e/test_split_render.py links it into that server's custom_nodes and whitelists it).

Armed by a file: when the environment variable MAGICPOSE_TEST_FAULT names a path and that file exists, the next
sampling run (``comfy.sample.sample``, which MagicPose Sampler calls) removes the file and raises RuntimeError after
its second step, from the progress callback, as a failing GPU or a node bug would. The server stays up and later runs
are untouched. Without the variable nothing is patched.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import comfy.sample

NODE_CLASS_MAPPINGS: dict = {}
TRIGGER = os.environ.get("MAGICPOSE_TEST_FAULT")

if TRIGGER:
    _sample = comfy.sample.sample

    def sample(*args, callback=None, **kwargs):
        trigger = Path(TRIGGER)
        if not trigger.exists():
            return _sample(*args, callback=callback, **kwargs)
        trigger.unlink()

        def failing(step, x0, x, total_steps):
            if callback is not None:
                callback(step, x0, x, total_steps)
            if step >= 1:
                raise RuntimeError(f"injected test fault at step {step + 1} of {total_steps}")

        logging.warning("magicpose_test_fault: this sampling run will fail after its second step")
        return _sample(*args, callback=failing, **kwargs)

    comfy.sample.sample = sample
