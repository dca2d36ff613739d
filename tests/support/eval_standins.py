"""Random-weight stand-ins with the real layouts of the metric networks (tests never download weights):
torchvision's VGG-16 ``features.*`` (LPIPS), a TorchScript module with clean-fid's Inception interface, the
3D ResNet-50 checkpoint layout (``state_dict`` with ``module.`` prefixes), a face-recognition ONNX file
with ArcFace's (N, 3, 112, 112) -> (N, 512) interface and the SD1.5 VAE (ldm keys) of the TikTok ground truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def vgg16_file(folder: Path) -> Path:
    import torchvision

    torch.manual_seed(0)
    sd = torchvision.models.vgg16(weights=None).features.state_dict()
    path = folder / "vgg16-397923af.pth"
    torch.save({f"features.{k}": v for k, v in sd.items()}, path)  # the trunk part of torchvision's file
    return path


class _Layers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=4)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(128, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))  # (B, 2048)


class _Inception(nn.Module):
    """clean-fid's InceptionV3W calls ``base.layers`` on (B, 3, 299, 299) in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = _Layers()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


def inception_file(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "inception-2015-12-05.pt"
    torch.jit.script(_Inception()).save(str(path))
    return path


def resnet3d_file(folder: Path) -> Path:
    from magicpose_core.evaluate.resnet3d import ResNet3d50

    torch.manual_seed(0)
    model = ResNet3d50()
    for m in model.modules():  # keep activations bounded through 16 random bottlenecks
        if isinstance(m, nn.BatchNorm3d):
            m.running_var.fill_(4.0)
    sd = {f"module.{k}": v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = folder / "resnet-50-kinetics.pth"
    torch.save({"epoch": 200, "arch": "resnet-50", "state_dict": sd}, path)
    return path


def face_onnx_file(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (588, 512)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 588], dtype=np.int64), "shape")
    nodes = [helper.make_node("AveragePool", ["input.1"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),  # (N,3,14,14)
             helper.make_node("Reshape", ["p", "shape"], ["f"]),                                        # (N, 588)
             helper.make_node("MatMul", ["f", "w"], ["683"])]                                           # (N, 512)
    graph = helper.make_graph(nodes, "arcface_standin",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
                              [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])],
                              initializer=[w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "w600k_r50.onnx"
    onnx.save(model, str(path))
    return path


def sd15_vae_file(folder: Path) -> Path:
    """The SD1.5 VAE in the ldm layout of the converted checkpoint (``first_stage_model.`` keys, fp16, all 248
    tensors at the real widths), random values (the factories' initialisation): the ground-truth VAE of the
    TikTok table."""
    from safetensors.torch import save_file
    from support.factories import init_tensor

    from magicpose_core.weights import layout as L

    sd = {L.VAE_PREFIX + k: init_tensor(L.VAE_PREFIX + k, shape).half() for k, shape in L.vae_layout().items()}
    path = folder / "sd15_vae.safetensors"
    save_file(sd, str(path))
    return path
