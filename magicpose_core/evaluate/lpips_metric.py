"""LPIPS as DisCo computes it: ``lpips.LPIPS(net='vgg')`` (v0.1 linear layers) on ``ToTensor()`` images.

DisCo feeds the images in [0, 1] and does not pass ``normalize=True``, although LPIPS expects [-1, 1]
(docs/evaluation.md §2.2). That quirk is the protocol and is the default here; ``proper_range=True`` maps the
frames to [-1, 1] first (the LPIPS authors' intended use), off by default.

The VGG-16 trunk comes from ``vgg16-397923af.pth`` in the weights folder (weights.py), never from torchvision's
own download; the lpips package (an optional extra) provides the network and its linear layers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .pixel import MetricUnavailable

LPIPS_INSTALL = 'pip install lpips  (or: pip install "magicpose[metrics]")'
# lpips' vgg16 wrapper: torchvision's features[i] lives in slice k (lpips/pretrained_networks.py)
_SLICES = ((1, range(0, 4)), (2, range(4, 9)), (3, range(9, 16)), (4, range(16, 23)), (5, range(23, 30)))


def _trunk_state(vgg_path: Path) -> dict[str, torch.Tensor]:
    """torchvision VGG-16 ``features.*`` -> the lpips trunk's ``slice{k}.{i}.*`` names (26 tensors)."""
    sd = torch.load(vgg_path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise MetricUnavailable(f"{vgg_path} is not a VGG-16 state dict")
    out = {}
    for k, idx in _SLICES:
        for i in idx:
            for p in ("weight", "bias"):
                key = f"features.{i}.{p}"
                if key in sd:
                    out[f"slice{k}.{i}.{p}"] = sd[key].float()
    if len(out) != 26:
        raise MetricUnavailable(f"{vgg_path} has {len(out)} of the 26 VGG-16 conv tensors (features.*): not "
                                "torchvision's vgg16 weights")
    return out


class LpipsMetric:
    """Callable (gen, gt) uint8 RGB frames -> LPIPS distance."""

    def __init__(self, vgg_path: str | Path, device: str = "cpu", proper_range: bool = False) -> None:
        try:
            import lpips
        except ImportError:
            raise MetricUnavailable(f"LPIPS needs the lpips package: {LPIPS_INSTALL}") from None
        self.net = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)  # trunk weights loaded below
        missing, unexpected = self.net.net.load_state_dict(_trunk_state(Path(vgg_path)), strict=False)
        assert not missing and not unexpected, f"VGG-16 trunk keys: missing {missing[:3]}, unexpected {unexpected[:3]}"
        self.net.eval().to(device)
        self.device = device
        self.proper_range = proper_range

    def _tensor(self, rgb: np.ndarray) -> torch.Tensor:
        t = torch.tensor(rgb, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0  # (1, 3, H, W), 0-1
        return t.to(self.device)

    @torch.no_grad()
    def __call__(self, gen: np.ndarray, gt: np.ndarray) -> float:
        return float(self.net(self._tensor(gen), self._tensor(gt), normalize=self.proper_range).item())
