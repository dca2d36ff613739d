"""One driving video on several ComfyUI servers: contiguous frame ranges, queued on whichever server is idle, merged
into one video equal to a single-server render (python -m magicpose_core.client run ... --server A --server B).
The plan (which workflows split exactly, why, the ranges, the range workflows) is `split_plan`; the parts folder, its
manifest and the merge are `split_parts`.

Faults. A server that does not answer at the start is skipped with a warning. A server that dies during a range
(connection lost) is dropped and the range goes back to the queue for another server; a range that fails on a
server (execution error) is retried on a server that has not tried it. Ctrl-C / SIGTERM / SIGHUP stop every range
on every server: each prompt is registered with a `StopGate` before it is posted, so once the stop has begun no
worker queues a prompt and every prompt of ours that may be queued or running is known; each is then cancelled
(targeted interrupt or queue delete, repeated) until its server no longer lists it, within ``interrupt_wait``
seconds, before the exception goes on. Finished parts stay in the parts folder with a manifest (workflow, inputs and
range plan digests); ``--resume`` renders only the missing ranges.

Standard library only, except PyAV (and numpy) for probing the driving video and merging, imported on use.
"""
from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import ClientError, ServerUnreachable, UsageError
from .follow import RunEvent
from .server import Client
from .split_parts import Parts, default_out, digest, file_sha256
from .split_plan import FrameRange, analyse, plan_ranges, range_workflow
from .stop import StopGate
from .workflow import DRIVING_VIDEO_TITLE, fill_workflow, load_workflow

log = logging.getLogger("MagicPose")


class SplitFailed(ClientError):
    """Some ranges failed; the finished parts are kept for --resume."""


@dataclass
class RangeStat:
    """Timings of one finished range (seconds): the whole submit (queue, run, download), the sampler node alone."""

    range: FrameRange
    server: str
    seconds: float
    sample_seconds: float
    download_seconds: float


@dataclass
class SplitResult:
    path: Path | None
    frames: int
    ranges: list[FrameRange]
    servers: list[str]                       # the servers that took part
    skipped: list[str]                       # unreachable at the start
    stats: list[RangeStat] = field(default_factory=list)
    upload_seconds: dict[str, float] = field(default_factory=dict)
    merge_seconds: float = 0.0
    resumed: int = 0                         # ranges found finished on disk
    failed: dict[str, str] = field(default_factory=dict)   # range label -> reason
    seconds: float = 0.0


class _Progress:
    """Aggregated progress over all ranges: each range counts by its sampler's progress (value / max)."""

    def __init__(self, total: int, emit: Callable[[str], None] | None):
        self.total, self.emit = max(total, 1), emit
        self.done: dict[FrameRange, float] = {}
        self.lock = threading.Lock()
        self.last = -1

    def update(self, rng: FrameRange, fraction: float, server: str, force: bool = False, note: str = "") -> None:
        with self.lock:
            self.done[rng] = max(0.0, min(1.0, fraction)) * len(rng)
            pct = int(100 * sum(self.done.values()) / self.total)
            if self.emit is not None and (force or pct >= self.last + 5):
                self.last = pct
                self.emit(f"[{server}] {rng.label}: {note or f'{int(100 * fraction)}%'} | total {pct}% of "
                          f"{self.total} frames")


class SplitRender:
    """One split render (see the module docstring); `run()` returns a SplitResult or raises SplitFailed /
    ServerUnreachable / UsageError / KeyboardInterrupt (after stopping every running range)."""

    def __init__(self, servers: Sequence[str], workflow: str | os.PathLike | Mapping,
                 inputs: Mapping[str, str | os.PathLike], sets: Sequence[str] | Mapping[str, Any] | None = None,
                 out: str | os.PathLike = "out.mp4", parts_dir: str | os.PathLike | None = None,
                 range_frames: int | None = None, resume: bool = False, keep_parts: bool = False,
                 on_text: Callable[[str], None] | None = None, on_event: Callable[[str, RunEvent], None] | None = None,
                 interrupt_wait: float = 30.0, range_timeout: float | None = None):
        if not servers:
            raise UsageError("give at least one --server")
        self.urls = list(dict.fromkeys(servers))
        self.workflow = load_workflow(workflow)
        self.inputs = {t: Path(p) for t, p in (inputs or {}).items()}
        self.sets = sets
        self.range_frames = range_frames
        self.resume, self.keep_parts = resume, keep_parts
        self.on_text, self.on_event = on_text, on_event
        self.interrupt_wait, self.range_timeout = interrupt_wait, range_timeout
        self.stop = StopGate()
        for title, path in self.inputs.items():
            if not path.is_file():
                raise UsageError(f"input file for '{title}' not found: {path}")
        if DRIVING_VIDEO_TITLE not in self.inputs:
            raise UsageError(f"splitting over servers needs the driving video as a local file: --driving FILE (the "
                             f"node titled '{DRIVING_VIDEO_TITLE}')")
        local = fill_workflow(copy.deepcopy(self.workflow), {t: p.name for t, p in self.inputs.items()}, sets)
        self.plan = analyse(local)
        self.out = default_out(out, self.plan)
        self.key = digest({"workflow": local, "inputs": {t: file_sha256(p) for t, p in self.inputs.items()}})
        self.parts = Parts(Path(parts_dir) if parts_dir else self.out.with_name(self.out.name + ".parts"), self.key)

    # --- pieces ---------------------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.on_text is not None:
            self.on_text(text)

    def _connect(self) -> tuple[dict[str, Client], list[str]]:
        clients, skipped = {}, []
        for url in self.urls:
            c = Client(url)
            try:
                c.check_server()
                clients[c.server] = c
            except ClientError as e:
                log.warning("server %s skipped: %s", url, str(e).split(". ")[0])
                skipped.append(url)
        if not clients:
            raise ServerUnreachable(f"none of the servers answered ({', '.join(self.urls)}); start them or check "
                                    "--server")
        return clients, skipped

    def _upload(self, clients: dict[str, Client], result: SplitResult) -> dict[str, dict]:
        """Upload the inputs to every server (in parallel); a server whose upload fails is dropped."""
        def one(url: str) -> dict:
            t0 = time.monotonic()
            c = clients[url]
            names = {t: c.upload(p) for t, p in self.inputs.items()}
            wf = fill_workflow(copy.deepcopy(self.workflow), names, self.sets, c.schema_inputs)
            result.upload_seconds[url] = time.monotonic() - t0
            return wf

        filled = {}
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            futures = {url: pool.submit(one, url) for url in clients}
            for url, fut in futures.items():
                try:
                    filled[url] = fut.result()
                except UsageError:
                    raise
                except ClientError as e:
                    log.warning("server %s skipped: uploading the inputs failed: %s", url, e)
        if not filled:
            raise ServerUnreachable("no server took the input files; see the warnings above")
        return filled

    def _count_frames(self) -> tuple[int, Fraction]:
        from ..media.video import probe_video

        try:
            info = probe_video(str(self.inputs[DRIVING_VIDEO_TITLE]))
        except ValueError as e:
            raise UsageError(f"--driving {self.inputs[DRIVING_VIDEO_TITLE]}: {e}") from None
        return self.plan.selection.kept_count(info.frames, info.fps), info.fps

    def run(self) -> SplitResult:
        t_start = time.monotonic()
        total, src_fps = self._count_frames()
        if total == 0:
            raise UsageError("the frame selection keeps no frame of the driving video; check the Frames node")
        clients, skipped = self._connect()
        result = SplitResult(None, total, [], list(clients), skipped)
        filled = self._upload(clients, result)
        result.servers = list(filled)
        found = self.parts.resume(total) if self.resume else None
        if found is not None:
            ranges, done = found
            result.resumed = len(done)
        else:
            ranges, done = plan_ranges(total, len(filled), self.plan.align, self.range_frames), set()
            self.parts.start(total, ranges)
        result.ranges = ranges
        self._say(f"{total} frames in {len(ranges)} ranges on {len(filled)} server(s)"
                  + (f"; {len(done)} range(s) already done" if done else ""))
        self._render([r for r in ranges if r not in done], filled, clients, result)
        if result.failed:
            lines = "\n".join(f"  {label}: {why}" for label, why in result.failed.items())
            raise SplitFailed(f"{len(result.failed)} of {len(ranges)} ranges failed:\n{lines}\nThe finished parts are "
                              f"kept in {self.parts.folder}; run the same command with --resume to render only the "
                              "missing ranges")
        self._merge(ranges, total, src_fps, result)
        result.seconds = time.monotonic() - t_start
        return result

    def _render(self, todo: list[FrameRange], filled: dict[str, dict], clients: dict[str, Client],
                result: SplitResult) -> None:
        queue: deque[FrameRange] = deque(todo)
        tried: dict[FrameRange, set[str]] = {r: set() for r in todo}
        errors: dict[FrameRange, str] = {}
        alive = set(filled)
        cond = threading.Condition()
        state = {"in_flight": 0}
        progress = _Progress(sum(len(r) for r in todo), self.on_text)
        prefix = self.key[:10]

        def take(url: str) -> FrameRange | None:
            with cond:
                while True:
                    if self.stop.is_set() or url not in alive:
                        return None
                    for rng in list(queue):
                        if alive <= tried[rng]:            # every server still up has failed it
                            queue.remove(rng)
                            result.failed[rng.label] = errors.get(rng, "no server left")
                    for rng in queue:
                        if url not in tried[rng]:
                            queue.remove(rng)
                            state["in_flight"] += 1
                            return rng
                    if not queue and state["in_flight"] == 0:
                        return None
                    cond.wait(0.5)

        def finish(rng: FrameRange, url: str, error: str | None, dead: bool = False) -> None:
            with cond:
                state["in_flight"] -= 1
                if dead:
                    alive.discard(url)
                if error is not None:
                    tried[rng].add(url)
                    errors[rng] = f"{error} (on {url})"
                    if not alive:
                        result.failed[rng.label] = errors[rng] + "; no server left"
                    else:
                        queue.appendleft(rng)
                cond.notify_all()

        def worker(url: str) -> None:
            client = clients[url]
            while True:
                rng = take(url)
                if rng is None:
                    return
                try:
                    stat = self._render_range(client, filled[url], rng, prefix, progress)
                except ServerUnreachable as e:
                    log.warning("server %s is gone (%s); %s goes back to the queue", url, str(e).split(". ")[0],
                                rng.label)
                    finish(rng, url, f"server lost: {str(e).split('. ')[0]}", dead=True)
                    return
                except ClientError as e:
                    why = "; ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
                    log.warning("%s failed on %s: %s", rng.label, url, why)
                    finish(rng, url, why)
                    continue
                except BaseException as e:                     # a bug: the range is not lost, the thread ends
                    finish(rng, url, f"{type(e).__name__}: {e}", dead=True)
                    raise
                if stat is None:                               # stopped
                    finish(rng, url, None)
                    return
                result.stats.append(stat)
                finish(rng, url, None)

        threads = [threading.Thread(target=worker, args=(url,), name=f"magicpose-{url}", daemon=True)
                   for url in filled]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.2)                               # short joins: signals reach the main thread
        except BaseException:
            deadline = time.monotonic() + self.interrupt_wait
            prompts = self.stop.set(self.interrupt_wait)       # no worker queues a prompt from here on
            with cond:
                cond.notify_all()
            self._stop_prompts(clients, prompts, deadline)
            for t in threads:                                  # they return as soon as they see the stop
                t.join(max(0.1, min(5.0, deadline + 5 - time.monotonic())))
            self.parts.remove_partials()
            raise
        for rng in queue:                                      # left over: every server that was up failed it
            result.failed.setdefault(rng.label, errors.get(rng, "no server left"))

    def _stop_prompts(self, clients: dict[str, Client], prompts: dict[str, set[str]], deadline: float) -> None:
        """Cancel each of our prompts on its server (in parallel) until the server no longer lists it or `deadline`
        passes; say which could not be confirmed."""
        if not prompts:
            return
        self._say(f"stopping {sum(map(len, prompts.values()))} range(s) on {len(prompts)} server(s)")

        def one(url: str, prompt_id: str) -> str | None:
            try:
                return clients[url].cancel(prompt_id, max(0.0, deadline - time.monotonic()))
            except ServerUnreachable:
                return "ended"                                 # the server is gone, and our prompt with it
            except ClientError as e:
                log.warning("could not confirm that prompt %s stopped on %s: %s", prompt_id, url, e)
                return None

        jobs = [(url, pid) for url, ids in prompts.items() for pid in sorted(ids)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            ends = list(pool.map(lambda job: one(*job), jobs))
        for (url, pid), end in zip(jobs, ends):
            if end is None:
                log.warning("prompt %s may still run on %s: it did not stop within %g s", pid, url,
                            self.interrupt_wait)
            elif end != "ended":
                log.info("prompt %s %s on %s", pid, "interrupted" if end == "running" else "removed from the queue",
                         url)

    def _render_range(self, client: Client, wf: dict, rng: FrameRange, prefix: str,
                      progress: _Progress) -> RangeStat | None:
        from ..media.video import probe_video

        rwf = range_workflow(wf, self.plan, rng, prefix)
        samplers = set(self.plan.sampler_ids)
        marks: dict[str, float] = {}
        url = client.server

        def on_event(ev: RunEvent) -> None:
            node = str(ev.data.get("node") or ev.data.get("node_id") or "")
            if ev.type == "execution_success":
                marks["success"] = time.monotonic()
            if ev.type == "executing":
                if node in samplers:
                    marks.setdefault("sample", time.monotonic())
                elif "sample" in marks:
                    marks.setdefault("sampled", time.monotonic())
            elif ev.type == "progress" and node in samplers:
                progress.update(rng, int(ev.data.get("value", 0)) / max(int(ev.data.get("max", 1)), 1), url)
            if self.on_event is not None:
                self.on_event(url, ev)

        self.parts.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.parts.partial(rng)
        progress.update(rng, 0.0, url, force=True, note="started")
        t0 = time.monotonic()
        res = client.submit(rwf, self.plan.output_id, out=str(tmp), on_event=on_event, timeout=self.range_timeout,
                            interrupt_wait=self.interrupt_wait, stop=self.stop)
        if res.status == "interrupted" and self.stop.is_set():
            tmp.unlink(missing_ok=True)
            return None
        if not res.ok:
            tmp.unlink(missing_ok=True)
            raise ClientError(res.error or res.status)
        t_dl = time.monotonic()                                     # downloaded
        frames = probe_video(str(tmp)).frames
        if frames != len(rng):
            tmp.unlink(missing_ok=True)
            raise ClientError(f"the part has {frames} frames, {len(rng)} expected: does the Output depend on "
                              "per-frame inputs other than the sampler's?")
        os.replace(tmp, self.parts.part(rng))
        progress.update(rng, 1.0, url, force=True, note="done")
        end = time.monotonic()
        sampled = marks.get("sampled", t_dl) - marks.get("sample", t_dl)
        return RangeStat(rng, url, end - t0, sampled, t_dl - marks.get("success", t_dl))

    def _merge(self, ranges: list[FrameRange], total: int, src_fps: Fraction, result: SplitResult) -> None:
        t0 = time.monotonic()
        fps, sound = self.parts.merge(ranges, total, src_fps, self.plan, str(self.inputs[DRIVING_VIDEO_TITLE]),
                                      self.out, self.workflow)
        result.path, result.merge_seconds = self.out, time.monotonic() - t0
        if not self.keep_parts:
            self.parts.remove()
        self._say(f"merged {len(ranges)} parts into {self.out} ({total} frames at {float(fps):g} fps"
                  + (", with sound" if sound else "") + ")")
