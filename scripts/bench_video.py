"""Peak memory and speed of the streaming video encoder (magicpose_core.media.video.encode_video).

Builds an IMAGE batch (default 240 frames of 512x512, float32: 755 MB = 720 MiB), then encodes it and reports
the extra memory the encoding needed, three ways:
- RSS sampled every 2 ms from a thread (/proc/self/statm): counts torch, numpy and the codecs;
- ru_maxrss (kernel high-water mark) minus the RSS before encoding: an upper bound, also counts everything;
- tracemalloc peak: Python and numpy allocations only (torch and FFmpeg allocate outside it).
The ratio is (batch + extra) / batch; the acceptance bound is 1.3.

Run it in a fresh process (RSS is per process):
    .venv/bin/python scripts/bench_video.py [--frames 240] [--size 512] [--format mp4] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended, never prepended (our nodes/ must not shadow ComfyUI's)

import av  # noqa: E402, F401  (ComfyUI imports PyAV at start-up; its libraries are not part of the encoding cost)
import torch  # noqa: E402

from magicpose_core.media.video import encode_video  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class RssSampler(threading.Thread):
    """Samples the process RSS until stopped; keeps the maximum."""

    def __init__(self, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, rss_bytes(), threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, rss_bytes())
        return self.peak


def measure(frames: int, size: int, fmt: str, crf: int, chunk: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    # smooth frames (a moving gradient plus a little noise) encode like real video, unlike pure noise
    ramp = torch.linspace(0, 1, size)
    images = torch.empty((frames, size, size, 3), dtype=torch.float32)  # (B, H, W, C): the IMAGE batch
    for i in range(frames):
        phase = i / max(1, frames)
        images[i, ..., 0] = (ramp[None, :] + phase) % 1.0
        images[i, ..., 1] = ramp[:, None]
        images[i, ..., 2] = phase
        images[i].add_(torch.rand((size, size, 3), generator=gen).mul_(0.02)).clamp_(0, 1)
    batch = images.numel() * images.element_size()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"bench.{fmt}")
        base = rss_bytes()
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tracemalloc.start()
        sampler = RssSampler()
        sampler.start()
        t0 = time.perf_counter()
        info = encode_video(images, path, fps=24, format=fmt, crf=crf, chunk=chunk)
        seconds = time.perf_counter() - t0
        peak = sampler.stop()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        file_size = os.path.getsize(path)

    extra_sampled = max(0, peak - base)
    # ru_maxrss is a lifetime high-water mark: it bounds the encoding peak only if it rose during encoding
    extra_maxrss = max(0, maxrss_after - base) if maxrss_after > maxrss_before else None
    return {
        "frames": frames, "size": size, "format": fmt, "crf": crf, "chunk": chunk,
        "batch_mib": batch / MIB,
        "extra_rss_sampled_mib": extra_sampled / MIB,
        "extra_rss_maxrss_mib": None if extra_maxrss is None else extra_maxrss / MIB,
        "tracemalloc_peak_mib": traced_peak / MIB,
        "ratio_sampled": (batch + extra_sampled) / batch,
        "ratio_maxrss": None if extra_maxrss is None else (batch + extra_maxrss) / batch,
        "seconds": seconds, "fps_encoded": info.frames / seconds, "file_mib": file_size / MIB,
        "frames_written": info.frames,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--format", default="mp4", choices=("mp4", "webm", "gif", "webp"))
    ap.add_argument("--crf", type=int, default=19)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    r = measure(args.frames, args.size, args.format, args.crf, args.chunk)
    maxrss = "n/a" if r["extra_rss_maxrss_mib"] is None else f"{r['extra_rss_maxrss_mib']:.1f} MiB"
    print(f"encode {r['frames']} frames {r['size']}x{r['size']} {r['format']} crf {r['crf']} (chunk {r['chunk']})")
    print(f"  IMAGE batch          {r['batch_mib']:8.1f} MiB")
    print(f"  extra RSS (sampled)  {r['extra_rss_sampled_mib']:8.1f} MiB  ratio {r['ratio_sampled']:.3f}")
    print(f"  extra RSS (maxrss)   {maxrss:>11}")
    print(f"  tracemalloc peak     {r['tracemalloc_peak_mib']:8.1f} MiB  (numpy/Python only)")
    print(f"  time                 {r['seconds']:8.2f} s    ({r['fps_encoded']:.1f} frames/s), "
          f"file {r['file_mib']:.2f} MiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
