"""The network weights of the learned metrics: one documented folder, never a silent download.

The folder is ``models/magicpose/eval/`` (the glue resolves it through ComfyUI's ``magicpose`` model folder;
the CLI takes ``--weights-dir``). Files with a stable public URL are downloaded there only when the caller
passes ``allow_download`` (the CLI's ``--download``, the node's ``allow_download``); the others are placed by
hand, and a missing file raises ``MetricUnavailable`` naming the file, the folder and where to get it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .pixel import MetricUnavailable

log = logging.getLogger("MagicPose")

EVAL_SUBFOLDER = "eval"


@dataclass(frozen=True)
class WeightFile:
    """One weight file of a metric network."""

    metric: str
    filename: str
    url: str | None          # None: no stable direct URL, the user places the file by hand
    source: str
    licence: str
    sha256_prefix: str | None = None


WEIGHTS: dict[str, WeightFile] = {
    "fid": WeightFile(
        "FID", "inception-2015-12-05.pt",
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
        "the TorchScript Inception-v3 (TensorFlow FID weights) that clean-fid loads", "see clean-fid / NVIDIA"),
    "lpips": WeightFile(
        "LPIPS", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
        "torchvision's ImageNet VGG-16 (LPIPS' linear layers ship inside the lpips package)", "BSD-3-Clause",
        sha256_prefix="397923af"),
    "fid_vid": WeightFile(
        "FID-VID", "resnet-50-kinetics.pth", None,
        "the Kinetics-400 3D ResNet-50 of Hara et al. (kenshohara/3D-ResNets-PyTorch), the 'pre-trained vision "
        "model' linked from DisCo's README", "MIT code; Kinetics-trained weights, research use"),
    "face_cos": WeightFile(
        "Face-Cos", "w600k_r50.onnx", None,
        "InsightFace's ArcFace ResNet-50 (WebFace600K) from its buffalo_l model pack", "non-commercial research only"),
}


def default_weights_dir() -> Path:
    """ComfyUI's models/magicpose/eval when the pack sits in ComfyUI/custom_nodes/, else ./models/magicpose/eval."""
    from ..weights.hub import FOLDER_NAME, default_model_dir

    base = default_model_dir()
    return base / EVAL_SUBFOLDER if base.name == FOLDER_NAME else Path("models") / FOLDER_NAME / EVAL_SUBFOLDER


def weight_path(key: str, folder: str | os.PathLike | None, allow_download: bool = False,
                url: str | None = None) -> Path:
    """Path of a metric's weight file in ``folder``; downloads it first only if ``allow_download``.

    ``url`` overrides the table's URL (tests serve a stand-in from 127.0.0.1). Raises ``MetricUnavailable``.
    """
    spec = WEIGHTS[key]
    if folder is None:
        raise MetricUnavailable(f"{spec.metric} needs {spec.filename} ({spec.source}) in a weights folder "
                                "(models/magicpose/eval/); none was given")
    path = Path(folder) / spec.filename
    if path.is_file():
        return path
    url = url or spec.url
    where = f"put {spec.filename} ({spec.source}; licence: {spec.licence}) into {Path(folder).resolve()}"
    if url is None:
        raise MetricUnavailable(f"{spec.metric} weights not found: {where}. It has no stable download URL, "
                                "so it is never downloaded automatically.")
    if not allow_download:
        raise MetricUnavailable(f"{spec.metric} weights not found: {where} (from {url}), or allow the download "
                                "(CLI --download, node allow_download).")
    _download(url, path, spec)
    return path


def _download(url: str, path: Path, spec: WeightFile) -> None:
    """torch.hub's downloader: a temporary file next to ``path``, the SHA-256 prefix checked, then moved in."""
    from torch.hub import download_url_to_file

    log.info("downloading %s for %s from %s", spec.filename, spec.metric, url)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(path), hash_prefix=spec.sha256_prefix, progress=False)
    except Exception as e:  # hash, network and disk errors: one message each, with the manual route
        if isinstance(e, RuntimeError) and "invalid hash value" in str(e):
            raise MetricUnavailable(f"{spec.filename} from {url} has the wrong SHA-256 ({e}): the download is "
                                    "corrupt or not the expected file") from None
        raise MetricUnavailable(f"could not download {spec.filename} from {url} ({type(e).__name__}: {e}); put it "
                                f"into {path.parent} by hand") from None
    if path.stat().st_size == 0:
        path.unlink()
        raise MetricUnavailable(f"the download of {spec.filename} from {url} was empty")
