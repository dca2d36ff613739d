"""Bytes held by frame-sized tensors, tracked allocation by allocation (for scripts/bench_long_video.py).

Peak RSS cannot say what a clip's length costs on the CPU: ComfyUI sizes attention chunks and VAE batches by
the free RAM, so a process fills what it is given. This tracker counts allocations instead, which that sizing
cannot hide:

- **torch**: a `TorchDispatchMode` sees the result of every ATen op run in the thread that entered it (ComfyUI's
  executor runs nodes in its calling thread). Each result whose storage is at least `min_bytes` and is not one
  of the op's inputs' storages (views and in-place results allocate nothing; a view of a weight loaded earlier
  must not count) is recorded once per storage (by data pointer), with `weakref.finalize` on the storage
  subtracting it when the storage is freed (torch keeps one Python object per live storage, so the finalizer
  fires when the memory goes, not when a view goes). Live bytes and their peak are kept, and the peak number of
  pixel frames held: a storage first seen as an image batch (`[N, H, W, 3]` or `[N, 3, H, W]` with H, W at least
  `min_side`) counts its bytes divided by one such frame's bytes.
- **numpy and Python**: `tracemalloc` (numpy registers its data buffers with it), peak above the start. Decoded
  frames and pose canvases pass through numpy; a numpy buffer wrapped by `torch.from_numpy` is counted here only
  (wrapping is not an ATen op), and a tensor viewed as numpy only by torch.

Only storages allocated after `start()` count, so models loaded by an earlier (warm-up) run and outputs cached
from an earlier prompt do not.
"""
from __future__ import annotations

import threading
import tracemalloc
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


@dataclass
class TrackedPeak:
    """What one tracked run held at most."""

    torch_peak_bytes: int          # frame-sized torch storages alive at once, at most
    torch_peak_frames: float       # pixel frames (image-batch storages / one frame's bytes) alive at once, at most
    numpy_peak_bytes: int          # tracemalloc peak above the start (numpy buffers + Python objects)
    storages: int                  # frame-sized storages allocated during the run
    allocated_bytes: int           # their total size (what a no-free run would have held)
    at_peak: dict                  # with `describe`: live bytes near the peak by "op dtype [*, shape]"

    @property
    def peak_bytes(self) -> int:
        return self.torch_peak_bytes + self.numpy_peak_bytes


class FrameMemoryTracker(TorchDispatchMode):
    """Use as `with tracker:` around a run in one thread; `result()` afterwards."""

    def __init__(self, min_bytes: int, min_side: int = 16, describe: bool = False) -> None:
        """`describe`: also keep, at the peak, the live bytes by (op, dtype, shape without the first dimension)."""
        super().__init__()
        self.describe, self.at_peak, self._snap_bytes = describe, {}, 0
        self.min_bytes, self.min_side = int(min_bytes), int(min_side)
        self._lock = threading.Lock()
        self._live: dict[int, tuple] = {}                 # data_ptr -> (bytes, pixel frames[, description])
        self.live_bytes = self.peak_bytes = 0
        self.live_frames = self.peak_frames = 0.0
        self.storages = self.allocated = 0
        self._generation = 0
        with self:          # the first use imports torch._dynamo & co. (tens of MiB): not part of any run
            torch.zeros(1).add_(1)

    # --- bookkeeping ---------------------------------------------------------------------------------------
    def _frames_of(self, t: torch.Tensor, nbytes: int) -> float:
        """Pixel frames in a storage first seen as an image batch; 0 for anything else."""
        if t.dim() != 4:
            return 0.0
        n, a, b, c = t.shape
        if c in (3, 4) and min(a, b) >= self.min_side:          # IMAGE layout [N, H, W, C]
            h, w, ch = a, b, c
        elif a in (3, 4) and min(b, c) >= self.min_side:        # tensor layout [N, C, H, W]
            h, w, ch = b, c, a
        else:
            return 0.0
        return nbytes / float(h * w * ch * t.element_size())

    def _free(self, generation: int, ptr: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            nbytes, frames, *_ = self._live.pop(ptr, (0, 0.0))
            self.live_bytes -= nbytes
            self.live_frames -= frames

    def _snapshot(self) -> None:
        """Live bytes by description, kept when the peak has grown 2 % since the last snapshot (lock held)."""
        if self.peak_bytes < 1.02 * self._snap_bytes:
            return
        self._snap_bytes = self.peak_bytes
        agg: dict[str, int] = {}
        for nbytes, _, desc in self._live.values():
            agg[desc] = agg.get(desc, 0) + nbytes
        self.at_peak = dict(sorted(agg.items(), key=lambda kv: -kv[1])[:12])

    def _record(self, t: torch.Tensor, func=None) -> None:
        if t.device.type != "cpu" or t.is_sparse or getattr(t, "is_nested", False):
            return
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        nbytes, ptr = s.nbytes(), s.data_ptr()
        if nbytes < self.min_bytes or ptr == 0:
            return
        with self._lock:
            if ptr in self._live:
                return
            frames = self._frames_of(t, nbytes)
            if self.describe:
                desc = f"{getattr(func, '__name__', func)} {str(t.dtype)[6:]} [*,{','.join(map(str, t.shape[1:]))}]"
                self._live[ptr] = (nbytes, frames, desc)
            else:
                self._live[ptr] = (nbytes, frames)
            self.live_bytes += nbytes
            self.live_frames += frames
            self.storages += 1
            self.allocated += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            self.peak_frames = max(self.peak_frames, self.live_frames)
            if self.describe and self.live_bytes == self.peak_bytes:
                self._snapshot()
        weakref.finalize(s, self._free, self._generation, ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = None
        for t in ((out,) if isinstance(out, torch.Tensor) else tree_flatten(out)[0]):
            # smaller results: a new storage that small is below the threshold, and a small view of a big one was
            # counted when the big one was made (or the big one predates the run)
            if isinstance(t, torch.Tensor) and t.nelement() * t.element_size() >= self.min_bytes:
                if inputs is None:      # a view or an in-place result shares an input's storage: not an allocation
                    inputs = {x.untyped_storage().data_ptr() for x in tree_flatten((args, kwargs))[0]
                              if isinstance(x, torch.Tensor) and x.device.type == "cpu"}
                if t.untyped_storage().data_ptr() not in inputs:
                    self._record(t, func)
        return out

    # --- one run -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Forget everything seen so far (earlier storages no longer count, even when freed later)."""
        with self._lock:
            self._generation += 1
            self._live.clear()
            self.live_bytes = self.peak_bytes = 0
            self.live_frames = self.peak_frames = 0.0
            self.storages = self.allocated = 0
            self.at_peak, self._snap_bytes = {}, 0
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        tracemalloc.start()
        self._numpy_start = tracemalloc.get_traced_memory()[0]

    def result(self) -> TrackedPeak:
        _, numpy_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        with self._lock:
            return TrackedPeak(self.peak_bytes, self.peak_frames, max(0, numpy_peak - self._numpy_start),
                               self.storages, self.allocated, dict(self.at_peak))
