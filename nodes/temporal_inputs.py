"""The temporal-source inputs that MagicPose Apply and MagicPose Sampler share (not official MagicPose behaviour:
off by default). One definition, so both nodes offer the same choices, ranges and tooltips."""
from __future__ import annotations

from ..magicpose_core.model.temporal import MAX_STRENGTH, MODES, TemporalOptions
from ._api import io

_DEFAULT = TemporalOptions()  # off


def temporal_inputs() -> list:
    """temporal_mode, temporal_strength, temporal_start, temporal_end: optional, advanced, in this order."""
    return [
        io.Combo.Input("temporal_mode", options=list(MODES), default=_DEFAULT.mode, optional=True, advanced=True,
                       tooltip="Temporal sources (not in the official model): each frame's self-attention also reads "
                       "the first frame's, the previous frame's, or both frames' states at the same step (frame 0 "
                       "is unchanged). May steady appearance across frames; measure flicker on your renders. "
                       "Official: off."),
        io.Float.Input("temporal_strength", default=_DEFAULT.strength, min=0.0, max=MAX_STRENGTH, step=0.05,
                       optional=True, advanced=True,
                       tooltip="Softmax weight of the anchor frames' tokens (as reference_strength): 1 = plain, "
                       "0 = off."),
        io.Float.Input("temporal_start", default=_DEFAULT.start, min=0.0, max=1.0, step=0.01, optional=True,
                       advanced=True,
                       tooltip="Sampling progress at which the temporal sources start being used."),
        io.Float.Input("temporal_end", default=_DEFAULT.end, min=0.0, max=1.0, step=0.01, optional=True,
                       advanced=True,
                       tooltip="Sampling progress after which the temporal sources stop."),
    ]
