"""Random-weight checkpoints with the real MagicPose / SD1.5 layouts, for tests (no ComfyUI, no hub).

- ``sd15_checkpoint()``: a tiny SD1.5-architecture checkpoint (fp16 safetensors) that ComfyUI's
  CheckpointLoaderSimple detects as SD15: UNet model_channels 320, channel_mult (1,1,1,1) (the real 12 in /
  12 out blocks, the 16 attn1 sites at their real block ids), context 768; full-size CLIP-L; VAE encoder
  width 128, decoder width 32 (docs/comfyui-integration.md §7.2).
- ``magicpose_checkpoint(size)``: a ``.th`` in the exact layout of the official ``model_state-110000.th``
  (docs/method.md §11.2), fp32, ``torch.save`` of a plain dict. Its ``model.diffusion_model.``, VAE and
  CLIP tensors are those of ``sd15_checkpoint()`` before the fp16 cast (same seed); the ACM is a different
  random UNet of the same shapes. ``size="full"`` has the real SD1.5 widths (2182 tensors, ~9.15 GB): it is
  generated tensor by tensor into a memory-mapped file, so RAM stays small.

- ``ldm_to_diffusers(sd)``: a state dict renamed to diffusers naming (the reverse of
  ``magicpose_core.weights.keymap``), to write diffusers-layout copies; ``TINY_UNET`` is the tiny test layout.

Every tensor is drawn from its own generator seeded by (seed, full key), so values do not depend on the
order or the set of keys generated. Layouts come from ``magicpose_core.weights.layout``; the file names carry a
version and a digest of the layout, so a layout change regenerates them. Files are cached under
``.cache/factories/`` (``MAGICPOSE_FACTORY_DIR`` overrides), written atomically under a file lock.

Initialisation (ComfyUI's ops never initialise weights, so everything is explicit): 1-D weights (norms)
1 + 0.05·N(0,1), biases 0.02·N(0,1), embeddings N(0, 0.02), other weights N(0, min(0.02, fan_in^-0.5)),
``position_ids`` = arange(77), DDPM buffers their real values (SD1.5 linear schedule).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import mmap
import os
import pickle
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from magicpose_core.model.constants import LINEAR_END, LINEAR_START, NUM_TRAIN_TIMESTEPS
from magicpose_core.weights import keymap as K
from magicpose_core.weights import layout as L

ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("MAGICPOSE_FACTORY_DIR") or ROOT / ".cache" / "factories")
FACTORY_VERSION = "1"  # bump when the initialisation rules change
DEFAULT_SEED = 0
TINY_VAE_DECODER = 32
# Test layout (docs/comfyui-integration.md §7.2): the real 12 in / 12 out blocks and the 16 attn1 sites at their
# real block ids, every level 320 wide.
TINY_UNET = L.UNetConfig(channel_mult=(1, 1, 1, 1))
SIZES = {"tiny": (TINY_UNET, TINY_VAE_DECODER), "full": (L.SD15_UNET, L.VAE_ENCODER_WIDTH)}


def _configs(size: str) -> tuple[L.UNetConfig, int]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    return SIZES[size]


def _tag(layout: dict, seed: int) -> str:
    digest = hashlib.sha1(repr(sorted(layout.items())).encode()).hexdigest()[:8]
    return f"v{FACTORY_VERSION}-s{seed}-{digest}"


def key_seed(seed: int, key: str) -> int:
    """A 63-bit generator seed for one tensor, from the global seed and the tensor's full key."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "little") >> 1


def ddpm_schedule(timesteps: int = NUM_TRAIN_TIMESTEPS) -> dict[str, torch.Tensor]:
    """The 13 DDPM buffers of the official file: ldm `register_schedule` with the SD1.5 "linear" betas
    (sqrt-linear, 0.00085..0.012), computed in float64 and stored as float32 (v_posterior 0, logvar_init 0)."""
    betas = np.linspace(LINEAR_START ** 0.5, LINEAR_END ** 0.5, timesteps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    values = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0), "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        "logvar": np.zeros(timesteps),
    }
    assert tuple(values) == L.DDPM_BUFFERS
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}


def init_tensor(key: str, shape: tuple[int, ...], seed: int = DEFAULT_SEED) -> torch.Tensor:
    """The deterministic random value of one checkpoint tensor (fp32; int64 for position_ids)."""
    if key in L.DDPM_BUFFERS:
        return ddpm_schedule()[key]
    if L.is_integer_key(key):
        return torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
    g = torch.Generator().manual_seed(key_seed(seed, key))
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    if "embedding." in key:                       # CLIP token / position embeddings
        return x.mul_(0.02)
    if key.endswith(".bias"):
        return x.mul_(0.02)
    if len(shape) == 1:                           # norm weights
        return x.mul_(0.05).add_(1.0)
    fan_in = math.prod(shape[1:])
    return x.mul_(min(0.02, fan_in ** -0.5))


def _generate(layout: dict, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    schedule = ddpm_schedule()
    for key, shape in layout.items():
        yield key, schedule[key] if key in schedule else init_tensor(key, shape, seed)


def magicpose_layout(size: str = "tiny") -> dict[str, tuple[int, ...]]:
    unet, dec = _configs(size)
    return L.official_layout(unet, dec)


def sd15_layout() -> dict[str, tuple[int, ...]]:
    unet, dec = _configs("tiny")
    return L.sd15_checkpoint_layout(unet, dec)


def magicpose_state_dict(size: str = "tiny", seed: int = DEFAULT_SEED) -> dict[str, torch.Tensor]:
    """The official-layout state dict in memory (tiny: ~1.6 GiB fp32; full: ~9.15 GB, prefer the file)."""
    return dict(_generate(magicpose_layout(size), seed))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_th_streaming(path: Path, layout: dict, seed: int) -> None:
    """torch.save a plain dict with the layout's keys without holding it in RAM: save the structure with
    empty storages (`skip_data`), then map the file shared and fill each tensor in place."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        skeleton = {k: torch.empty(s, dtype=torch.int64 if L.is_integer_key(k) else torch.float32)
                    for k, s in layout.items()}
    with torch.serialization.skip_data(materialize_fake_tensors=True):
        torch.save(skeleton, path)
    del skeleton
    with torch.serialization.set_default_mmap_options(mmap.MAP_SHARED):
        sd = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
        for key, value in _generate(layout, seed):
            sd[key].copy_(value)
        del sd


def magicpose_checkpoint(size: str = "tiny", seed: int = DEFAULT_SEED) -> Path:
    """Path of the cached official-layout `.th` (generated on first use)."""
    layout = magicpose_layout(size)
    path = CACHE_DIR / f"magicpose_{size}_{_tag(layout, seed)}.th"
    if path.is_file():
        return path
    with _locked(path):
        if not path.is_file():
            tmp = _tmp(path)
            try:
                write_th_streaming(tmp, layout, seed)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    return path


def sd15_checkpoint(seed: int = DEFAULT_SEED) -> Path:
    """Path of the cached tiny SD1.5 checkpoint (fp16 safetensors; the fp16 cast of the magicpose file's
    main UNet, VAE and CLIP tensors)."""
    from safetensors.torch import save_file

    layout = sd15_layout()
    path = CACHE_DIR / f"sd15_tiny_{_tag(layout, seed)}.safetensors"
    if path.is_file():
        return path
    with _locked(path):
        if not path.is_file():
            sd = {k: v.to(torch.float16) for k, v in _generate(layout, seed)}
            tmp = _tmp(path)
            try:
                save_file(sd, str(tmp), metadata={"format": "pt"})
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    return path


class _CreatesFile:
    """Unpickling this object calls open(sentinel, "w"): a stand-in for arbitrary code execution."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return open, (self.sentinel, "w")


def malicious_pickle(path: Path, sentinel: Path, torch_format: bool = True) -> Path:
    """A checkpoint-looking pickle that would create `sentinel` if it were loaded with code execution.
    torch_format=True: a torch.save zip (tensors + the payload); False: a bare pickle.dump."""
    payload = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2), "config": _CreatesFile(sentinel)}
    path = Path(path)
    if torch_format:
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    return path


# --------------------------------------------------------------------------------------------------
# diffusers naming: the reverse of magicpose_core.weights.keymap (the loader only reads diffusers names), built
# from the same tables, to write diffusers-layout copies of the factory weights

_LDM_INPUT = re.compile(r"input_blocks\.(?P<n>\d+)\.(?P<sub>\d+)\.(?P<rest>.+)")
_LDM_MIDDLE = re.compile(r"middle_block\.(?P<sub>\d+)\.(?P<rest>.+)")
_LDM_OUTPUT = re.compile(r"output_blocks\.(?P<n>\d+)\.(?P<sub>\d+)\.(?P<rest>.+)")
_LDM_HINT = re.compile(r"input_hint_block\.(?P<n>\d+)\." + K._PARAM)
_LDM_ZERO = re.compile(r"zero_convs\.(?P<n>\d+)\.0\." + K._PARAM)


def ldm_to_diffusers_key(key: str, layers_per_block: int = K.LAYERS_PER_BLOCK) -> str:
    """One ldm UNet / ControlNet key (no checkpoint prefix) -> its diffusers name."""
    per = layers_per_block + 1
    simple = K._split_simple(key, K._SIMPLE_TO_DIFFUSERS)
    if simple is not None:
        return simple
    if m := _LDM_INPUT.fullmatch(key):
        n, sub, rest = int(m["n"]), m["sub"], m["rest"]
        i, j = divmod(n - 1, per)
        if j == layers_per_block:
            if sub == "0" and rest.startswith("op."):
                return f"down_blocks.{i}.downsamplers.0.conv.{rest[3:]}"
        elif sub == "0":
            return f"down_blocks.{i}.resnets.{j}.{K._res(rest, K._RES_TO_DIFFUSERS, key)}"
        elif sub == "1":
            return f"down_blocks.{i}.attentions.{j}.{rest}"
    elif m := _LDM_MIDDLE.fullmatch(key):
        if m["sub"] in K._MID:
            rest = m["rest"]
            if m["sub"] != "1":
                rest = K._res(rest, K._RES_TO_DIFFUSERS, key)
            return f"mid_block.{K._MID[m['sub']]}.{rest}"
    elif m := _LDM_OUTPUT.fullmatch(key):
        i, j = divmod(int(m["n"]), per)
        sub, rest = m["sub"], m["rest"]
        if sub == "0":
            return f"up_blocks.{i}.resnets.{j}.{K._res(rest, K._RES_TO_DIFFUSERS, key)}"
        if rest.startswith("conv.") and j == layers_per_block:  # Upsample: output_blocks.n.{1|2}.conv
            return f"up_blocks.{i}.upsamplers.0.conv.{rest[5:]}"
        if sub == "1":
            return f"up_blocks.{i}.attentions.{j}.{rest}"
    elif m := _LDM_HINT.fullmatch(key):
        n = int(m["n"])
        if n % 2 == 0 and 0 < n < 2 * (K.NUM_HINT_CONVS - 1):
            return f"controlnet_cond_embedding.blocks.{n // 2 - 1}.{m['param']}"
    elif m := _LDM_ZERO.fullmatch(key):
        return f"controlnet_down_blocks.{m['n']}.{m['param']}"
    raise K.KeyMapError(f"{key!r} is not an SD1.5 UNet/ControlNet key in ldm naming")


def ldm_to_diffusers(sd: dict, layers_per_block: int = K.LAYERS_PER_BLOCK) -> dict:
    """Rename a whole ldm UNet / ACM / ControlNet state dict (keys without prefix) to diffusers naming."""
    return K._rename(sd, lambda k: ldm_to_diffusers_key(k, layers_per_block))
