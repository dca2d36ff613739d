"""One ProgressBar over a whole streaming render: inner work that makes its own ProgressBar (MagicPose Sampler's
frames x steps) reports into a span of the clip's bar instead of starting a bar of its own."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import comfy.utils


@contextmanager
def inner_progress(clip_bar: comfy.utils.ProgressBar, offset: int, span: int) -> Iterator[None]:
    """While open, a ProgressBar created inside reports ``value / total`` of its own as
    ``offset + span * value / total`` of ``clip_bar`` (previews pass through)."""
    before = comfy.utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview=None, node_id=None):
        done = span if not total else min(span, round(span * value / total))
        clip_bar.update_absolute(offset + done, None, preview)

    comfy.utils.PROGRESS_BAR_HOOK = hook      # read by ProgressBar.__init__
    try:
        yield
    finally:
        comfy.utils.PROGRESS_BAR_HOOK = before
