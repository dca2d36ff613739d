"""Measure the memory and time of converting a full-size official-layout MagicPose checkpoint.

On demand, not part of the test run. Builds the full-size random-weight factory file (the exact layout of
`model_state-110000.th`: 2182 fp32 tensors, ~9.15 GB, generated tensor by tensor into a memory-mapped file),
runs `python -m magicpose_core.checkpoint convert` on it in a subprocess, polls the child's resident memory
(/proc/PID/status: VmRSS, and its anonymous / file-backed split) and reports the peaks relative to the
source size, plus `getrusage(RUSAGE_CHILDREN).ru_maxrss`. The generated files are deleted afterwards
unless --keep.

Usage: python scripts/measure_conversion.py [--dtype fp16] [--with-sd15] [--workdir DIR] [--keep]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / RssAnon / RssFile of a process in bytes (0 when it has exited)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--with-sd15", action="store_true")
    ap.add_argument("--workdir", default=str(ROOT / ".cache" / "measure"))
    ap.add_argument("--keep", action="store_true", help="keep the generated 9 GB file and the outputs")
    args = ap.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MAGICPOSE_FACTORY_DIR"] = str(work / "factories")
    for p in (ROOT, ROOT / "tests"):  # appended, never prepended (the repo's nodes/ must not shadow anything)
        if str(p) not in sys.path:
            sys.path.append(str(p))
    from support import factories

    from magicpose_core.weights import layout as L

    t0 = time.perf_counter()
    src = factories.magicpose_checkpoint("full")
    gen_s = time.perf_counter() - t0
    size = src.stat().st_size
    print(f"source: {src.name}  {size / 1e9:.3f} GB ({len(L.official_layout())} tensors expected), "
          f"generated in {gen_s:.1f} s")

    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "magicpose_core.checkpoint", "convert", str(src), str(out), "--dtype", args.dtype]
    if args.with_sd15:
        cmd.append("--with-sd15")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak: dict[str, int] = {}
    while child.poll() is None:
        for k, v in proc_status(child.pid).items():
            peak[k] = max(peak.get(k, 0), v)
        time.sleep(0.1)
    conv_s = time.perf_counter() - t0
    stdout = child.stdout.read() if child.stdout else ""
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if child.returncode != 0:
        print(f"conversion failed (rc {child.returncode}):\n{stdout}")
        return 1
    print(stdout.strip())
    outputs = sorted(out.glob("*.safetensors"))
    out_bytes = sum(p.stat().st_size for p in outputs)
    print(f"conversion: {conv_s:.1f} s, outputs {out_bytes / 1e9:.3f} GB in {len(outputs)} files")
    from safetensors import safe_open

    for p in outputs:
        with safe_open(str(p), "pt") as f:
            meta = f.metadata()
        print(f"  {meta['part']}: {meta['tensors']} tensors, {p.stat().st_size / 1e9:.3f} GB {meta['dtype']}")
    print(f"peak VmRSS  {peak.get('VmRSS', 0) / 1e9:.2f} GB = {peak.get('VmRSS', 0) / size:.2f} x source")
    print(f"peak RssAnon {peak.get('RssAnon', 0) / 1e9:.2f} GB = {peak.get('RssAnon', 0) / size:.2f} x source "
          f"(heap; the rest is the memory-mapped source, file-backed and reclaimable)")
    print(f"peak RssFile {peak.get('RssFile', 0) / 1e9:.2f} GB")
    print(f"ru_maxrss (children) {maxrss / 1e9:.2f} GB = {maxrss / size:.2f} x source")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
        src.unlink()
        for lock in src.parent.glob("*.lock"):
            lock.unlink()
        for d in (src.parent, work):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        print(f"deleted {src} and {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
