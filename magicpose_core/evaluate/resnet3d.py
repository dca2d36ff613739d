"""The 3D ResNet-50 of Hara, Kataoka and Satoh (CVPR 2018, "Can Spatiotemporal 3D CNNs Retrace the History of
2D CNNs and ImageNet?"), the Kinetics-400 feature network behind DisCo's FID-VID ("FVD-3DRN50").

Architecture (the paper's Table 1, shortcut type B): conv 7x7x7 / stride (1, 2, 2) -> BN -> ReLU ->
max-pool 3x3x3 / 2 -> bottleneck stages [3, 4, 6, 3] with widths 64-512 (x4), stride 2 from the second stage
(on time as well) -> global average pool -> 2048-d feature (the 400-way ``fc`` is loaded but unused).
Parameter names follow the released ``resnet-50-kinetics.pth`` (``state_dict`` with a ``module.`` prefix),
so the file loads strictly.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .pixel import MetricUnavailable

STAGES = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


class Bottleneck3d(nn.Module):
    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, width * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(width * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class ResNet3d50(nn.Module):
    """(B, 3, T, H, W) mean-subtracted 0-255 clips -> (B, 2048) features."""

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        cin = 64
        for i, (n, width) in enumerate(zip(STAGES, WIDTHS)):
            stride = 1 if i == 0 else 2
            down = nn.Sequential(nn.Conv3d(cin, width * EXPANSION, 1, stride=stride, bias=False),
                                 nn.BatchNorm3d(width * EXPANSION))  # shortcut type B: projection
            blocks = [Bottleneck3d(cin, width, stride, down)]
            cin = width * EXPANSION
            blocks += [Bottleneck3d(cin, width) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, T/2, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 2048, T/16, H/32, W/32)
        return x.mean(dim=(2, 3, 4))  # (B, 2048): the released model's AvgPool3d covers the whole map


def load_resnet3d50(path: str | Path) -> ResNet3d50:
    """The Kinetics ResNet-50 from ``resnet-50-kinetics.pth`` (no pickled code: weights_only)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MetricUnavailable(f"{path} cannot be read as a weights-only checkpoint ({type(e).__name__}: {e})") \
            from None
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise MetricUnavailable(f"{path} holds no state_dict")
    sd = {k.removeprefix("module."): v.float() for k, v in sd.items()}
    model = ResNet3d50()
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise MetricUnavailable(f"{path} is not the 3D ResNet-50 layout: {str(e).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise MetricUnavailable(f"{path} is not the 3D ResNet-50 layout: missing {sorted(missing)[:3]}, "
                                f"unexpected {sorted(unexpected)[:3]}")
    return model.eval()
