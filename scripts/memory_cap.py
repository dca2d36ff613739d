"""The smallest memory cap under which a workflow completes on a real ComfyUI server (for bench_long_video.py).

A memory cgroup is made for the server (root only): cgroup v2 (`memory.max`, `memory.swap.max` = 0, peak from
`memory.peak`) or v1 (`memory.limit_in_bytes` and, where present, `memory.memsw.limit_in_bytes` = the same, peak
from `memory.max_usage_in_bytes`). The server (tests/support/server.py) starts through a small wrapper that moves
itself into the group and then runs Python, so everything the server allocates is charged to the group; it is
fresh for every try (a run that fails leaves a dead or a fragmented process). A try passes when the prompt
succeeds within its time limit; it fails when the prompt errors, the server dies (the kernel's OOM killer), or
the run takes longer than the limit (reclaim thrashing near the cap).

Search: one uncapped run gives the group's peak (it completed under that much) and its time; tries then bisect
geometrically between a failing floor and the smallest passing cap until they are within `tol`. Page-cache pages
(model files, libraries) are charged to the group that first read them, so files already cached by other
processes cost the group nothing: the caps measure what the run allocates, plus its own file reads.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

MIB = 1024 * 1024
V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/memory")


class MemoryGroup:
    def __init__(self, name: str) -> None:
        if (V2_ROOT / "cgroup.controllers").is_file():
            self.v2, parent = True, V2_ROOT
            controllers = (V2_ROOT / "cgroup.subtree_control").read_text().split()
            if "memory" not in controllers:
                (V2_ROOT / "cgroup.subtree_control").write_text("+memory")
        elif (V1_ROOT / "memory.limit_in_bytes").is_file():
            self.v2, parent = False, V1_ROOT
        else:
            raise RuntimeError("no writable memory cgroup (need cgroup v2 at /sys/fs/cgroup or v1 at "
                               "/sys/fs/cgroup/memory, as root); run without --cap-frames")
        self.path = parent / name
        self.path.mkdir(exist_ok=True)

    def _write(self, name: str, value) -> None:
        (self.path / name).write_text(str(value))

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def set_limit(self, nbytes: int | None) -> None:
        if self.v2:
            self._write("memory.max", "max" if nbytes is None else int(nbytes))
            self._write("memory.swap.max", 0)
            return
        memsw = (self.path / "memory.memsw.limit_in_bytes").exists()
        if memsw:
            self._write("memory.memsw.limit_in_bytes", -1)     # memsw must stay >= the limit while changing
        self._write("memory.limit_in_bytes", -1 if nbytes is None else int(nbytes))
        if memsw and nbytes is not None:
            self._write("memory.memsw.limit_in_bytes", int(nbytes))

    def reset_peak(self) -> None:
        try:
            self._write("memory.peak" if self.v2 else "memory.max_usage_in_bytes", 0)
        except OSError:
            pass

    def peak(self) -> int:
        return int(self._read("memory.peak" if self.v2 else "memory.max_usage_in_bytes").split()[0])

    def oom_kills(self) -> int:
        text = self._read("memory.events" if self.v2 else "memory.oom_control")
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
        return 0

    def pids(self) -> list[int]:
        return [int(x) for x in self._read("cgroup.procs").split()]

    def wrapper(self, python: str, folder: Path) -> str:
        """A script that joins the group, then execs `python` with its arguments."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"python-in-{self.path.name}"
        path.write_text(f"#!/bin/sh\necho $$ > {self.path / 'cgroup.procs'}\nexec {python} \"$@\"\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    def remove(self) -> None:
        for _ in range(50):
            if not self.pids():
                break
            time.sleep(0.2)
        try:
            self.path.rmdir()
        except OSError:
            pass


class CapRunner:
    def __init__(self, comfy_path: Path, base_dir: Path, log_dir: Path) -> None:
        self.comfy_path, self.base_dir, self.log_dir = Path(comfy_path), Path(base_dir), Path(log_dir)
        self.group = MemoryGroup(f"magicpose-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        self.python = self.group.wrapper(sys.executable, self.log_dir)
        self.tries = 0

    def attempt(self, workflow: Callable, cap: int | None, timeout: float) -> dict:
        """One fresh server under `cap` bytes (None: uncapped): ok, reason, seconds, group peak."""
        from support.server import ComfyServer, PromptRejected

        self.tries += 1
        shutil.rmtree(self.base_dir / "output" / "magicpose_render_parts", ignore_errors=True)
        self.group.set_limit(cap)
        self.group.reset_peak()
        kills = self.group.oom_kills()
        srv = ComfyServer(self.comfy_path, self.base_dir, self.log_dir / f"try-{self.tries}.log", python=self.python,
                          env={"HF_HUB_OFFLINE": "1"})
        ok, reason, seconds = False, "", 0.0
        try:
            srv.start(timeout=300)
            wf = workflow(srv, self.tries)
            t0 = time.perf_counter()
            result = srv.run(wf, timeout=timeout)
            seconds = time.perf_counter() - t0
            ok = result.status == "success"
            reason = "" if ok else f"{result.status}: {result.error_message()[:200]}"
        except (RuntimeError, TimeoutError, OSError, PromptRejected) as e:
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        finally:
            dead = srv.proc is not None and srv.proc.poll() is not None
            srv.stop()
        if not ok and (dead or self.group.oom_kills() > kills):
            reason = f"killed (OOM) {reason}"[:240]
        peak = self.group.peak()
        for _ in range(100):                       # the next try starts with an empty group
            if not self.group.pids():
                break
            time.sleep(0.1)
        return {"cap_mib": None if cap is None else round(cap / MIB, 1), "ok": ok, "reason": reason,
                "s": round(seconds, 1), "peak_mib": round(peak / MIB, 1)}

    def smallest_cap(self, workflow: Callable, tol: float = 0.05, floor: float = 0.4, label: str = "") -> dict:
        """Bisect the cap between a failing floor and a passing cap to within `tol` (hi / lo <= 1 + tol)."""
        tries = []

        def log(t: dict) -> None:
            tries.append(t)
            print(f"[cap] {label}: cap {t['cap_mib']} MiB -> {'ok' if t['ok'] else 'FAIL'} {t['s']} s, "
                  f"peak {t['peak_mib']} MiB {t['reason']}", flush=True)

        first = self.attempt(workflow, None, timeout=3600)
        log(first)
        if not first["ok"]:
            raise RuntimeError(f"{label}: the uncapped run failed: {first['reason']} (see {self.log_dir})")
        limit = max(180.0, 3 * first["s"] + 60)
        hi = int(first["peak_mib"] * MIB)
        lo = int(hi * floor)
        while True:                                 # find a failing floor
            t = self.attempt(workflow, lo, limit)
            log(t)
            if not t["ok"]:
                break
            hi, lo = lo, int(lo * floor)
            if lo < 64 * MIB:
                break
        while hi / lo > 1 + tol:
            mid = int((hi * lo) ** 0.5)
            t = self.attempt(workflow, mid, limit)
            log(t)
            hi, lo = (mid, lo) if t["ok"] else (hi, mid)
        return {"cap_bytes": hi, "cap_mib": round(hi / MIB, 1), "fail_mib": round(lo / MIB, 1),
                "uncapped_peak_mib": first["peak_mib"], "uncapped_s": first["s"], "tries": tries}

    def close(self) -> None:
        self.group.remove()


if __name__ == "__main__":          # a quick check that the group works: `python scripts/memory_cap.py MIB`
    g = MemoryGroup(f"magicpose-cap-check-{os.getpid()}")
    g.set_limit(int(sys.argv[1]) * MIB if len(sys.argv) > 1 else 256 * MIB)
    print(json.dumps({"path": str(g.path), "v2": g.v2, "peak": g.peak(), "oom_kills": g.oom_kills()}))
    g.remove()
