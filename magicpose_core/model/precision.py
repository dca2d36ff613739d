"""The `auto` autocast choice: measure, on this machine, whether a half-precision autocast pays off.

CPUs differ by two orders of magnitude here: with bf16 units (AVX512-BF16, AMX) bf16 autocast runs the networks
faster than fp32; without them torch emulates bf16/fp16 kernels and runs ~50-150x slower. A guess from the CPU
flags alone is not enough (an AVX512-BF16 CPU may still run a given conv faster in fp32), so `auto` times a small
UNet-like block (`unet_like_block`: conv + group norm + self-attention + linear at the SD1.5 level-0 width) in
fp32 and under each autocast dtype, measures its deviation from fp32, and applies `decide`. The measurement is
cached per machine (`choose_autocast(cache_path=...)`: a JSON file keyed by `machine_key`), so it runs once.

Torch only: the glue passes the device, the MODEL's dtype and the cache path (docs/performance.md §7).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger("MagicPose")

DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}   # the concrete `autocast` choices
HALF = ("bf16", "fp16")        # candidates, in order of preference on a tie (bf16 keeps fp32's range)
MIN_SPEEDUP = 1.4              # a half type must make the block at least this much faster than fp32 ...
MAX_DEVIATION = 0.02           # ... and stay within this max |y - y_fp32| / max |y_fp32| of the block output
SCREEN_SLOWDOWN = 8.0          # slower than this at the screen size: emulated, not timed at the full size
PROBE_VERSION = 1              # part of the cache key: a changed probe measures again
CPU_FLAGS = ("amx_bf16", "amx_fp16", "amx_tile", "avx512_bf16", "avx512_fp16", "avx512f", "avx512_vnni",
             "avx2", "f16c", "fma")   # the /proc/cpuinfo flags that decide half-precision speed (x86)
# (B, C, h, w) of the block's input: SD1.5's level-0 width (320 channels, 8 heads of 40) at a latent of h x w
PROBE_SHAPE = {"cpu": (1, 320, 32, 32),    # 256x256 image, 1024 tokens: the CPU bench size, ~30 ms in fp32
               "cuda": (4, 320, 64, 64)}   # 512x512 image, 4096 tokens, 4 frames: not launch-bound on a GPU
SCREEN_SHAPE = (1, 320, 8, 8)              # 64 tokens: tells emulated kernels apart in milliseconds


@dataclass(frozen=True)
class CpuFeatures:
    """What decides half-precision speed on this CPU."""
    model: str                       # /proc/cpuinfo "model name" (or platform.processor())
    flags: tuple[str, ...]           # the CPU_FLAGS this CPU has
    capability: str                  # torch.backends.cpu.get_cpu_capability(): the kernels torch dispatches to

    @property
    def bf16_units(self) -> bool:
        return "amx_bf16" in self.flags or "avx512_bf16" in self.flags

    def summary(self) -> str:
        flags = " ".join(self.flags) or "none of " + "/".join(CPU_FLAGS)
        return f"{self.model}; torch kernels {self.capability}; flags {flags}"


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuFeatures:
    """The CPU's model, its precision-relevant flags and torch's CPU capability (flags empty where unreadable)."""
    model, flags = "", set()
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if k == "model name" and not model:
                model = v.strip()
            elif k in ("flags", "Features") and not flags:
                flags = set(v.split())
    except OSError:
        pass
    try:
        cap = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        cap = "unknown"
    return CpuFeatures(model or platform.processor() or platform.machine() or "unknown CPU",
                       tuple(f for f in CPU_FLAGS if f in flags), cap)


# ---------------------------------------------------------------------------------------------------------------
# the probe


def unet_like_block(shape: tuple[int, int, int, int], device: str | torch.device = "cpu") -> Callable[[], torch.Tensor]:
    """A callable running one SD1.5-like block on fixed random inputs: conv 3x3 -> group norm (32) + SiLU ->
    self-attention (8 heads) -> linear; weights scaled so activations stay O(1). Returns (B, h*w, C)."""
    b, c, h, w = shape
    g = torch.Generator().manual_seed(0)

    def rand(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(device)

    x = rand(b, c, h, w)                                             # (B, C, h, w)
    wc = rand(c, c, 3, 3, scale=(c * 9) ** -0.5)
    wq, wk, wv, wo = (rand(c, c, scale=c ** -0.5) for _ in range(4))
    gamma, beta = torch.ones(c, device=device), torch.zeros(c, device=device)
    heads = 8

    def block() -> torch.Tensor:
        y = F.conv2d(x, wc, padding=1)                               # (B, C, h, w)
        y = F.silu(F.group_norm(y, 32, gamma, beta))
        t = y.flatten(2).transpose(1, 2)                             # (B, N, C), N = h*w
        n = t.shape[1]
        q, k, v = (F.linear(t, m).view(b, n, heads, c // heads).transpose(1, 2) for m in (wq, wk, wv))  # (B,8,N,C/8)
        a = F.scaled_dot_product_attention(q, k, v)                  # (B, 8, N, C/8)
        return F.linear(a.transpose(1, 2).reshape(b, n, c), wo)      # (B, N, C)

    return block


@dataclass
class ProbeResult:
    """One probe: best seconds of one block call and deviation from fp32 per choice ("off" = fp32)."""
    device: str
    shape: tuple[int, ...]
    seconds: dict[str, float] = field(default_factory=dict)        # timed at `shape`
    deviation: dict[str, float] = field(default_factory=dict)      # max |y - y_fp32| / max |y_fp32|
    screen_slowdown: dict[str, float] = field(default_factory=dict)   # time / fp32 time at SCREEN_SHAPE
    notes: dict[str, str] = field(default_factory=dict)            # why a choice was not timed at `shape`
    wall_seconds: float = 0.0
    load: float = -1.0             # 1-minute load average when the probe started (other work skews the times)

    def speedup(self, name: str) -> float:
        """fp32 time / `name` time (from the screen when `name` was not timed at full size; 0 if unavailable)."""
        if name in self.seconds and "off" in self.seconds:
            return self.seconds["off"] / max(self.seconds[name], 1e-12)
        if name in self.screen_slowdown:
            return 1.0 / self.screen_slowdown[name]
        return 0.0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ProbeResult:
        r = cls(device=str(d["device"]), shape=tuple(int(s) for s in d["shape"]))
        for name in ("seconds", "deviation", "screen_slowdown"):
            getattr(r, name).update({str(k): float(v) for k, v in dict(d.get(name) or {}).items()})
        r.notes.update({str(k): str(v) for k, v in dict(d.get("notes") or {}).items()})
        r.wall_seconds = float(d.get("wall_seconds", 0.0))
        r.load = float(d.get("load", -1.0))
        return r

    def summary(self) -> str:
        parts = [f"fp32 {self.seconds.get('off', float('nan')) * 1e3:.1f} ms"]
        for name in HALF:
            if name in self.notes and name not in self.deviation:
                parts.append(f"{name} {self.notes[name]}")
                continue
            dev = self.deviation.get(name, float("nan"))
            parts.append(f"{name} {self.speedup(name):.2f}x fp32's speed, deviation {dev:.1e}"
                         + (f" ({self.notes[name]})" if name in self.notes else ""))
        load = f"; load average {self.load:.1f} on {os.cpu_count()} cores" if self.load >= 0 else ""
        return f"block {tuple(self.shape)} on {self.device}: " + ", ".join(parts) + load


def _timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    y = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, y


def _under(name: str, block, device: torch.device):
    dtype = DTYPES[name]

    def run():
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            return block()
    return run


def _best(shape, names, device, budget_s: float, max_rounds: int = 20, ref_calls: int = 1) -> tuple[dict, dict, dict]:
    """Best seconds per name over interleaved rounds after one warm-up round (at least 2 timed rounds, then until
    `budget_s` or `max_rounds`; fp32 `ref_calls` times a round, so a loaded machine cannot hide its best time),
    each name's output as fp32, and the names dropped as far slower than fp32 (with their ratio), so an emulated
    kernel costs one or two calls: after its warm-up when 4 x SCREEN_SLOWDOWN slower than fp32's fastest call,
    after one timed round when that slow at best, after two when SCREEN_SLOWDOWN slower at best."""
    block = unet_like_block(shape, device)
    runs = {n: _under(n, block, device) for n in names}
    best = {n: float("inf") for n in names}
    fastest_off = float("inf")                      # fp32, warm-up included
    out, dropped = {}, {}
    t_end = time.perf_counter() + budget_s
    for r in range(max_rounds + 1):
        for n in [n for n in names if n not in dropped]:   # interleaved: drifting load hits every name alike
            for _ in range(ref_calls if n == "off" else 1):
                s, y = _timed(runs[n], device)
                out[n] = y.float()
                if n == "off":
                    fastest_off = min(fastest_off, s)
                if r:
                    best[n] = min(best[n], s)
            if n != "off":
                ratio = (best[n] if r else s) / min(best["off"], fastest_off)
                limit = SCREEN_SLOWDOWN if r >= 2 else 4 * SCREEN_SLOWDOWN
                if ratio > limit:
                    dropped[n] = ratio
        if r >= 2 and time.perf_counter() > t_end:
            break
    return {n: v for n, v in best.items() if n not in dropped}, out, dropped


def _deviation(y: torch.Tensor, ref: torch.Tensor) -> float:
    d = float((y - ref).abs().max()) / max(float(ref.abs().max()), 1e-12)
    return d if torch.isfinite(y).all() else float("inf")


def probe(device: str | torch.device = "cpu", candidates: tuple[str, ...] = HALF, *,
          shape: tuple[int, int, int, int] | None = None, screen: tuple[int, int, int, int] = SCREEN_SHAPE,
          budget_s: float = 1.0) -> ProbeResult:
    """Time the UNet-like block in fp32 and under each candidate autocast dtype on `device`; about `budget_s`.

    On the CPU it runs on one thread (restored after): the ratio decides, not the time, and one thread keeps that
    ratio on a busy machine, where every op of a multi-threaded block waits for all its threads to be scheduled
    (measured here under a load average of 5 on 2 cores: 100 ms for a 3 ms block, every dtype alike).
    Candidates first run at `screen` (SCREEN_SHAPE); one more than SCREEN_SLOWDOWN x slower than fp32 there (an emulated
    kernel: ~100x on CPUs without bf16/fp16 units) is not timed at full size, its deviation taken at the screen
    size. Unsupported dtypes are noted, never raised."""
    t0 = time.perf_counter()
    device = torch.device(device)
    shape = tuple(shape or PROBE_SHAPE.get(device.type, PROBE_SHAPE["cpu"]))
    res = ProbeResult(device=str(device), shape=shape, load=os.getloadavg()[0] if hasattr(os, "getloadavg") else -1)
    names = []
    for name in candidates:
        if device.type == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
            res.notes[name] = "not supported by this GPU"
            continue
        try:
            with torch.autocast(device.type, dtype=DTYPES[name]):
                pass
        except (RuntimeError, ValueError) as e:   # no autocast of this dtype on this device
            res.notes[name] = f"unavailable: {str(e).splitlines()[0][:120]}"
            continue
        names.append(name)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        _probe(res, names, device, shape, screen, budget_s)
    finally:
        torch.set_num_threads(threads)
    res.wall_seconds = time.perf_counter() - t0
    return res


def _probe(res: ProbeResult, names: list[str], device: torch.device, shape, screen, budget_s: float) -> None:
    with torch.inference_mode():
        best, out, dropped = _best(screen, ("off", *names), device, budget_s=0.3 * budget_s, ref_calls=5)
        usable = []
        for name in names:
            slow = dropped.get(name, best.get(name, 0.0) / max(best["off"], 1e-12))
            res.screen_slowdown[name] = slow
            if name in dropped or slow > SCREEN_SLOWDOWN:
                res.notes[name] = f"{slow:.0f}x slower than fp32 at {tuple(screen)}: not timed further"
                res.deviation[name] = _deviation(out[name], out["off"])
            else:
                usable.append(name)
        best, out, dropped = _best(shape, ("off", *usable), device, budget_s=0.7 * budget_s)
    res.seconds.update(best)
    for name in usable:
        res.deviation[name] = _deviation(out[name], out["off"])
        if name in dropped:
            res.notes[name] = f"{dropped[name]:.0f}x slower than fp32 at {shape}"
    res.deviation["off"] = 0.0


# ---------------------------------------------------------------------------------------------------------------
# the rule


def decide(result: ProbeResult, *, min_speedup: float = MIN_SPEEDUP,
           max_deviation: float = MAX_DEVIATION) -> tuple[str, str]:
    """(choice, reason): the fastest half type that is at least `min_speedup` x faster than fp32 on the block and
    deviates at most `max_deviation` from it (ties within 5% go to the earlier of HALF); else "off"."""
    ok, why_not = [], []
    for name in HALF:
        sp, dev = result.speedup(name), result.deviation.get(name)
        if name not in result.seconds:
            why_not.append(f"{name} {result.notes.get(name, 'not measured')}")
        elif dev is None or not dev <= max_deviation:
            why_not.append(f"{name} deviates {float('nan') if dev is None else dev:.1e} > {max_deviation:g}")
        elif sp < min_speedup:
            why_not.append(f"{name} only {sp:.2f}x fp32's speed (< {min_speedup:g}x)")
        else:
            ok.append((sp, name))
    if not ok:
        return "off", "fp32: no half type clearly faster (" + "; ".join(why_not) + ")"
    top = max(sp for sp, _ in ok)
    name = next(n for sp, n in ok if sp >= top / 1.05)
    return name, f"{name}: {result.speedup(name):.2f}x fp32's speed, deviation {result.deviation[name]:.1e}"


# ---------------------------------------------------------------------------------------------------------------
# the per-machine cache and the entry point


def machine_key(device: str | torch.device = "cpu") -> str:
    """What a measurement holds for: the device (GPU name and compute capability, or the CPU model, its
    precision-relevant flags and torch's kernel level), the torch build and the probe's version."""
    device = torch.device(device)
    base = f"probe {PROBE_VERSION} | torch {torch.__version__}"
    if device.type == "cuda":
        i = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(i)
        return f"cuda | {torch.cuda.get_device_name(i)} | sm {major}.{minor} | cuda {torch.version.cuda} | {base}"
    if device.type == "cpu":
        f = cpu_features()
        return f"cpu | {f.model} | {f.capability} | {' '.join(f.flags)} | {base}"
    return f"{device.type} | {platform.processor() or platform.machine()} | {base}"


@dataclass(frozen=True)
class AutocastDecision:
    """What `auto` resolved to, and why."""
    choice: str                      # "off", "bf16" or "fp16"
    reason: str
    key: str = ""
    probe: ProbeResult | None = None
    cached: bool = False             # the measurement came from the cache file

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.choice]


def _read_cache(path: Path) -> dict:
    """The cache's entries; a missing file is empty, an unreadable or corrupt one is reported and replaced."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        entries = data["entries"]
        if not isinstance(entries, dict):
            raise TypeError("entries is not an object")
        return entries
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("MagicPose autocast auto: the probe cache %s is unreadable (%s); measuring again and "
                    "replacing it", path, e)
        return {}


def _write_cache(path: Path, entries: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "entries": entries}, f, indent=1)
        os.replace(tmp, path)                # atomic: a concurrent reader sees the old or the new file
    except OSError as e:
        log.warning("MagicPose autocast auto: could not write the probe cache %s (%s); the probe will run again "
                    "next time", path, e)


def choose_autocast(device: str | torch.device = "cpu", *, model_dtype: torch.dtype = torch.float32,
                    cache_path: str | Path | None = None,
                    probe_fn: Callable[[torch.device], ProbeResult] = probe) -> AutocastDecision:
    """Resolve `autocast="auto"` for a MODEL computing in `model_dtype` on `device`, and log the choice, the
    CPU features and the measured speed-up and deviation.

    A MODEL already in half precision stays as it is ("off"). Otherwise the probe's measurement for this
    machine is read from `cache_path` (JSON, keyed by `machine_key`) or measured now and stored there;
    `decide` turns it into the choice. `cache_path=None` measures every time."""
    device = torch.device(device)
    if model_dtype in (torch.float16, torch.bfloat16):
        d = AutocastDecision("off", f"the MODEL already computes in {model_dtype}: autocast would not help")
        log.info("MagicPose autocast auto -> off on %s: %s", device, d.reason)
        return d
    if device.type not in ("cpu", "cuda") and not torch.amp.is_autocast_available(device.type):
        d = AutocastDecision("off", f"torch has no autocast on {device.type}")
        log.info("MagicPose autocast auto -> off on %s: %s", device, d.reason)
        return d
    key = machine_key(device)
    path = Path(cache_path) if cache_path is not None else None
    entries = _read_cache(path) if path is not None else {}
    result, cached = None, False
    if key in entries:
        try:
            result, cached = ProbeResult.from_json(entries[key]["probe"]), True
        except (KeyError, ValueError, TypeError) as e:
            log.warning("MagicPose autocast auto: ignoring a corrupt cache entry in %s (%s)", path, e)
    if result is None:
        result = probe_fn(device)
        if path is not None:
            entries[key] = {"probe": result.to_json(), "measured": datetime.now().isoformat(timespec="seconds"),
                            **({"cpu": asdict(cpu_features())} if device.type == "cpu" else {})}
            _write_cache(path, entries)
    choice, reason = decide(result)
    d = AutocastDecision(choice, reason, key=key, probe=result, cached=cached)
    hw = cpu_features().summary() if device.type == "cpu" else key
    log.info("MagicPose autocast auto -> %s on %s: %s. Probe (%s): %s. Device: %s", choice, device, reason,
             f"cached in {path}" if cached else f"measured in {result.wall_seconds:.2f} s", result.summary(), hw)
    return d
