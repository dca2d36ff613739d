"""Set-up shared by the `make bench` workers: ComfyUI in-process, the pack, full-size random weights, timers.

- ``start_comfy(device)``: ComfyUI first on sys.path (the repo is appended, never prepended: our ``nodes/`` would
  shadow ComfyUI's ``nodes`` module), CLI flags set before ``comfy.model_management`` is imported (``--cpu`` on
  the CPU, PyTorch SDPA attention everywhere), then the pack imported as ComfyUI imports it (its ``__init__.py``
  as a package under a unique name, like ``tests/conftest.py: load_pack``).
- ``build_models(...)``: the main SD1.5 UNet, the appearance UNet (ACM) and the pose ControlNet as ComfyUI
  objects, from random weights generated in memory (no 9 GB file): every tensor has the value it has in
  ``tests/support/factories.py: magicpose_checkpoint(size)`` (same per-key seeds), so ``--tiny`` runs on the
  tiny factory weights and the default on the full-size SD1.5 widths (2.08 B parameters, 8.3 GB in fp32).
  Each part's state dict is dropped as soon as ComfyUI has copied it (peak about weights + one part).
- ``ModuleTimer``: exclusive wall time per module call (nested calls, e.g. the ACM inside the main UNet's
  DIFFUSION_MODEL wrapper, are subtracted from their parent), through forward pre/post hooks.
- ``flops_of``: FLOPs of one call (torch's FlopCounterMode; SDPA on the CPU counted with torch's SDPA formula).
"""
from __future__ import annotations

import gc
import importlib.util
import os
import sys
import time
import types
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_PATH = Path(os.environ.get("COMFYUI_PATH") or ROOT / ".cache" / "ComfyUI")
PACK_NAME = "magicpose_bench_pack"
DTYPE_NAMES = ("fp32", "fp16", "bf16")


def start_comfy(device: str, pack_root: Path | None = None) -> types.ModuleType:
    """Make ComfyUI importable for `device` ("cpu" or "cuda") and return the pack module (this checkout's, or the
    one at `pack_root`, e.g. an older commit's worktree, for before/after measurements)."""
    if not (COMFYUI_PATH / "main.py").is_file():
        raise RuntimeError(f"ComfyUI not found at {COMFYUI_PATH}: set COMFYUI_PATH or run `make bench`")
    if str(COMFYUI_PATH) not in sys.path:
        sys.path.insert(0, str(COMFYUI_PATH))
    for p in (ROOT, ROOT / "tests"):  # magicpose_core + tests/support (factories), appended
        if str(p) not in sys.path:
            sys.path.append(str(p))
    import comfy.cli_args as cli  # argparse only; must be set before comfy.model_management is imported

    cli.args.cpu = device == "cpu"
    cli.args.use_pytorch_cross_attention = True
    cli.args.disable_api_nodes = True
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    root = Path(pack_root) if pack_root else ROOT
    spec = importlib.util.spec_from_file_location(PACK_NAME, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = pack
    spec.loader.exec_module(pack)
    for sub in ("nodes.models", "nodes.patch.model_patch", "nodes.patch.run_sampling"):
        importlib.import_module(f"{PACK_NAME}.{sub}")
    return pack


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _part(prefix: str, shapes: dict) -> dict:
    """One network's state dict, each tensor with its factory value (seeded by its full official key)."""
    from support import factories

    return {k: factories.init_tensor(prefix + k, s) for k, s in shapes.items()}


def build_models(pack, tiny: bool, dtype: str) -> tuple[object, object, float]:
    """(main UNet ModelPatcher, MAGICPOSE_MODEL bundle, seconds) with weights in `dtype` ("fp32", "fp16", "bf16")."""
    import comfy.sd
    from support import factories

    from magicpose_core.weights import layout as L

    t0 = time.perf_counter()
    cfg = factories.TINY_UNET if tiny else L.SD15_UNET
    sd = _part(L.MAIN_PREFIX, L.unet_layout(cfg))
    unet = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": torch_dtype(dtype)})
    del sd
    gc.collect()
    parts = types.SimpleNamespace(
        appearance=_part(L.ACM_PREFIX, L.appearance_layout(cfg, with_hint_block=False)),
        pose_controlnet={L.CONTROL_PREFIX + k: v for k, v in _part(L.POSE_PREFIX, L.controlnet_layout(cfg)).items()})
    bundle = pack.nodes.models.build_magicpose_model(parts, dtype, name="bench")
    del parts
    gc.collect()
    if unet is None:
        raise RuntimeError("ComfyUI did not recognise the generated SD1.5 UNet")
    return unet, bundle, time.perf_counter() - t0


def rss_bytes() -> int:
    """Current resident memory of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_on_device(*patchers) -> None:
    """Put ComfyUI-managed models on their load device (a no-op on the CPU) before driving modules directly."""
    import comfy.model_management

    comfy.model_management.load_models_gpu(list(patchers))


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class ModuleTimer:
    """Exclusive seconds and call counts per (scope, label) module call, through forward pre/post hooks.

    ``attach(module, label)``: label is a string or a function (args, kwargs) -> string. A call nested in another
    timed call (the ACM run by the main UNet's DIFFUSION_MODEL wrapper) is subtracted from its parent. ``scope``
    tells interleaved runs apart (the same modules serve ours and the official structure).
    """

    def __init__(self, device: str):
        self.device = device
        self.scope = "ours"
        self.enabled = True
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: Counter = Counter()
        self._stack: list[list] = []
        self._handles: list = []

    def attach(self, module, label: str | Callable) -> None:
        name_of = label if callable(label) else (lambda args, kwargs, _l=label: _l)

        def pre(mod, args, kwargs):
            if self.enabled:
                synchronize(self.device)
                self._stack.append([(self.scope, name_of(args, kwargs)), time.perf_counter(), 0.0])

        def post(mod, args, kwargs, output):
            if self.enabled and self._stack:
                synchronize(self.device)
                key, t0, nested = self._stack.pop()
                elapsed = time.perf_counter() - t0
                self.seconds[key] += elapsed - nested
                self.calls[key] += 1
                if self._stack:
                    self._stack[-1][2] += elapsed

        self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        # always_call: the pack's ACM pass ends with an exception once its last bank site is written
        self._handles.append(module.register_forward_hook(post, with_kwargs=True, always_call=True))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self._stack.clear()

    def of(self, scope: str) -> tuple[dict[str, float], dict[str, int]]:
        """(seconds, calls) by label for one scope."""
        return ({k[1]: v for k, v in self.seconds.items() if k[0] == scope},
                {k[1]: v for k, v in self.calls.items() if k[0] == scope})

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0) (returns freed heap to the OS, so a reset peak RSS does not hide new allocations in
    it), or a no-op elsewhere."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return lambda: libc.malloc_trim(0)
    except (OSError, AttributeError):
        return lambda: None


def exact_malloc(threshold: int = 128 * 1024) -> bool:
    """Make RSS follow live memory: glibc's mallopt(M_MMAP_THRESHOLD) serves every allocation of `threshold` bytes
    or more (every tensor that matters) with its own mmap, unmapped when freed, and M_TRIM_THRESHOLD returns freed
    heap at once. Without it glibc raises the threshold as tensors come and go, and peak RSS then includes freed,
    fragmented heap: the same 512x512 run measured +280 MiB with it and +613..+860 MiB without. Costs some speed
    (page faults on every large allocation): for memory runs only. False where glibc is not there."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, threshold)) and bool(libc.mallopt(-1, threshold))   # M_MMAP_, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


class PeakMemory:
    """Peak resident memory (and peak GPU memory) between calls of ``take()``, without a sampling thread:
    Linux resets the VmHWM high-water mark when 5 is written to /proc/self/clear_refs (Documentation/filesystems/
    proc.rst); torch resets its CUDA peak with reset_peak_memory_stats."""

    def __init__(self, gpu: bool):
        self.gpu = gpu
        self.resettable = True
        self.take()

    @staticmethod
    def _hwm() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def take(self) -> tuple[int, int | None]:
        """(peak RSS bytes, peak GPU bytes or None) since the last call; resets both."""
        import torch

        rss = self._hwm()
        gpu = torch.cuda.max_memory_allocated() if self.gpu else None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.resettable = False   # then the figure is the process's lifetime peak
        if self.gpu:
            torch.cuda.reset_peak_memory_stats()
        return rss, gpu


def main_unet_label(args, kwargs) -> str:
    """'main_cond' for calls with conditional rows (bank + pose residuals), else 'main_uncond'."""
    topts = kwargs.get("transformer_options") or {}
    return "main_cond" if 0 in (topts.get("cond_or_uncond") or [0]) else "main_uncond"


@contextmanager
def timed(device: str) -> Iterator[list]:
    """with timed(dev) as t: ...; t[0] is the wall time in seconds (device synchronised)."""
    box = [0.0]
    synchronize(device)
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        synchronize(device)
        box[0] = time.perf_counter() - t0


def autocast_probe(pack, device: str):
    """The `auto` autocast probe of the pack (magicpose_core/model/precision.py: one UNet-like block in fp32 and
    under each autocast dtype, about a second) and its decision: (ProbeResult, choice, reason). One implementation:
    the bench reports what MagicPose Sampler's `autocast="auto"` would choose on this machine."""
    precision = pack.magicpose_core.model.precision
    result = precision.probe(device)
    choice, reason = precision.decide(result)
    return result, choice, reason


def flops_of(fn: Callable[[], object]) -> int:
    """FLOPs of one call of fn (2 per multiply-add; SDPA included; element-wise ops not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa_cpu(query, key, value, *args, **kwargs):
        return sdpa_flop_count(query, key, value)

    custom = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        custom[op] = sdpa_cpu
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
        try:
            fn()
        except Exception as e:  # the pack's ACM pass stops with an exception after its last bank site
            if type(e).__name__ != "_BankComplete":
                raise
    return int(counter.get_total_flops())
