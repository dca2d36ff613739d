"""The long-video memory bench's instruments (scripts/bench_long_video.py, docs/performance.md §10), checked on
inputs whose answer is known by construction:

- the frame-memory tracker counts exactly the frame-sized storages allocated under it: views and in-place ops add
  nothing (also on storages made before the run, such as loaded weights), freeing subtracts, storages made before
  `start()` never count, small ones are ignored, image batches count their frames, numpy buffers show in the
  numpy peak;
- the per-frame slope, growth and RAM-per-minute formula of the report;
- the memory cgroup really caps a process (root with a memory cgroup only): a child that allocates past the cap
  is killed and the kill is counted, one under the cap passes.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from support.workflows import load_script

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def tracker_mod():
    return load_script("frame_memory_tracker")


def test_tracker_counts_frame_sized_storages_exactly(tracker_mod):
    size = 64
    frame = size * size * 3 * 4                      # one fp32 RGB frame
    before = torch.zeros(100, size, size, 3)         # made before start(): never counts, even when freed
    tr = tracker_mod.FrameMemoryTracker(min_bytes=size * size * 3)
    tr.start()
    with torch.inference_mode(), tr:
        a = torch.zeros(8, size, size, 3)            # 8 frames, IMAGE layout
        v = a[2:5]                                   # a view: same storage
        a.mul_(2.0)                                  # in place: same storage
        w = before.detach()[:50]                     # a view of a storage made before start(): nothing new
        w.add_(1.0)
        del w
        small = torch.zeros(10)                      # below the threshold
        b = torch.ones(4, 3, size, size)             # 4 frames, tensor layout
        assert tr.live_bytes == 12 * frame
        del a                                        # the view keeps the storage alive
        assert tr.live_bytes == 12 * frame
        del v
        assert tr.live_bytes == 4 * frame
        del before
        c = torch.zeros(2, 100, 400)                 # not an image: bytes, no frames
        del b, c
        buf = np.zeros((16, size, size, 3), dtype=np.uint8)   # numpy: traced by tracemalloc
        del buf, small
    r = tr.result()
    assert tr.live_bytes == 0
    assert r.torch_peak_bytes == 12 * frame          # a + b at once; later c alone is smaller
    assert r.torch_peak_frames == pytest.approx(12.0)
    assert r.storages == 3 and r.allocated_bytes == 12 * frame + 2 * 100 * 400 * 4
    assert 16 * size * size * 3 <= r.numpy_peak_bytes < 16 * size * size * 3 + MIB


def test_report_formula():
    bench = load_script("bench_long_video")
    rows = [{"path": "step", "frames": 32, "b": 100 * MIB + 32 * MIB, "peak_frames": 96.0},
            {"path": "step", "frames": 512, "b": 100 * MIB + 512 * MIB, "peak_frames": 1536.0},
            {"path": "stream", "frames": 32, "b": 50 * MIB, "peak_frames": 32.0},
            {"path": "stream", "frames": 512, "b": 52 * MIB, "peak_frames": 32.0}]
    d = bench.derive(rows, "b", size=64)
    assert d["step"]["bytes_per_frame"] == pytest.approx(MIB)
    assert d["step"]["growth"] == pytest.approx(612 / 132 - 1)
    # 1 MiB per frame at 64^2 -> 64 MiB at 512^2, 144 MiB at 768^2; 1800 frames per minute at 30 fps
    assert d["step"]["ram_per_minute_bytes"]["512"] == pytest.approx(64 * MIB * 1800)
    assert d["step"]["ram_per_minute_bytes"]["768"] == pytest.approx(144 * MIB * 1800)
    assert d["stream"]["growth"] == pytest.approx(0.04)
    # 3 fp32 frames held per clip frame: 3 x 512 x 512 x 12 bytes = 9 MiB per frame, x 1800
    assert d["step"]["held_frames_per_frame"] == pytest.approx(3.0)
    assert d["step"]["held_ram_per_minute_bytes"]["512"] == pytest.approx(9 * MIB * 1800)
    assert d["stream"]["held_ram_per_minute_bytes"]["768"] == 0


def _cgroup_usable() -> bool:
    return os.geteuid() == 0 and (os.access("/sys/fs/cgroup/cgroup.controllers", os.W_OK)
                                  or os.access("/sys/fs/cgroup/memory/memory.limit_in_bytes", os.R_OK))


@pytest.mark.skipif(not _cgroup_usable(), reason="needs root and a memory cgroup")
def test_memory_group_caps_a_process(tmp_path):
    cap = load_script("memory_cap")
    group = cap.MemoryGroup(f"magicpose-test-{os.getpid()}")
    try:
        group.set_limit(200 * MIB)
        python = group.wrapper(sys.executable, tmp_path)
        code = "import numpy as np; a = np.ones({n} * 2**20, np.uint8); print(int(a.sum() > 0))"
        kills = group.oom_kills()
        over = subprocess.run([python, "-c", code.format(n=400)], capture_output=True, timeout=120)
        assert over.returncode == -9 or over.returncode == 137, over
        assert group.oom_kills() == kills + 1
        group.reset_peak()
        under = subprocess.run([python, "-c", code.format(n=50)], capture_output=True, text=True, timeout=120)
        assert under.returncode == 0 and under.stdout.strip() == "1", under
        assert 50 * MIB <= group.peak() < 200 * MIB
    finally:
        group.remove()
