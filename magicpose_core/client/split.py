"""One driving video on several ComfyUI servers: contiguous frame ranges, queued on whichever server is idle, merged
into one video equal to a single-server render (python -m magicpose_core.client run ... --server A --server B).

Why a range split is exact. MagicPose renders each frame from the reference, its own pose map and the start noise;
with ``shared_noise`` (the official setting) every frame starts from the same noise, so frame i does not depend on
which other frames are rendered with it. The range is cut on the sampler's ``poses`` input, not at the video
loader: every server loads the same frame selection and extracts the poses of all of it (pose smoothing and
tracking look at neighbouring frames, so poses of a cut video would differ at the cut), and ComfyUI's cache keeps
those upstream results for that server's next range. The cut is a MagicPose Select Frames node on the pose maps
(``skip_first_frames`` = range start, ``frame_load_cap`` = range length). Range starts are multiples of the
sampler's ``frame_batch`` so that every sampler batch holds the same frames as in the single render. Parts come
back as lossless mkv (FFV1) and the final encoder (same format, crf, fps, sound as the workflow's Output) sees the
same frames as a single render's encoder, so the merged file has the same frames.

Temporal sources (``temporal_mode``). ``first``: every frame also reads frame 0's states, so a range gets the
video's first ``frame_batch`` pose maps as the sampler's ``anchor_pose`` (a second Select Frames node on the same pose
maps), rendered as hidden leading frames and dropped: its "first" anchor is the video's frame 0 and every chunk of
frames the networks see holds the same frames as in the single render, so the frames are bit-identical (one anchor
map alone would be equal only within the fp32 batch-size floor). The first range needs none. Each later range renders
``frame_batch`` extra frames. ``previous`` and ``both`` are refused: each frame's anchor is the previous rendered
frame, a chain through the whole video that a range cannot start in the middle of.

Refused with a clear message: ``shared_noise`` off (one noise generator runs over the whole batch), an Output that
is not MagicPose Frames to Video, a workflow without MagicPose Sampler, ``temporal_mode`` previous/both, and sampler
inputs named ``temporal*`` without a ``temporal_mode`` switch that are switched on (``TEMPORAL_PREFIX``).

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
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..media.frame_selection import FrameSelection
from .core import (
    DRIVING_VIDEO_TITLE,
    OUTPUT_TITLE,
    Client,
    ClientError,
    RunEvent,
    ServerUnreachable,
    StopGate,
    UsageError,
    fill_workflow,
    load_workflow,
    node_label,
    resolve_node,
)

log = logging.getLogger("MagicPose")

SAMPLER_CLASS = "MagicPoseSample"
FRAMES_CLASS = "MagicPoseSelectFrames"
OUTPUT_CLASS = "MagicPoseFramesToVideo"
COMPONENTS_CLASS = "GetVideoComponents"
TEMPORAL_PREFIX = "temporal"          # sampler inputs of temporal options (issue 13): refused while switched on
EXACT_TEMPORAL_MODES = ("off", "first")   # temporal_mode values a split renders exactly (first: with anchor_pose)
CUT_ID_BASE = 990000                  # ids of the inserted range-cut nodes
PART_FORMAT = "mkv"                   # lossless parts (FFV1)
MANIFEST = "manifest.json"
RANGES_PER_SERVER = 4                 # at most this many ranges per server (balance vs per-range overhead)
MIN_RANGE_FRAMES = 16                 # ... and ranges of at least this many frames


class SplitFailed(ClientError):
    """Some ranges failed; the finished parts are kept for --resume."""


# --- the plan (pure) -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameRange:
    """Kept frames [start, stop) of the selection."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        return f"{self.start:06d}-{self.stop - 1:06d}"

    @property
    def label(self) -> str:
        return f"frames {self.start}-{self.stop - 1}"


def plan_ranges(total: int, servers: int, align: int = 1, range_frames: int | None = None) -> list[FrameRange]:
    """Contiguous ranges covering `total` frames: about RANGES_PER_SERVER per server but at least MIN_RANGE_FRAMES
    frames each (or `range_frames` each), starts on multiples of `align` (the sampler's frame_batch)."""
    if total <= 0:
        return []
    if range_frames is not None and range_frames < 1:
        raise UsageError(f"--range-frames must be at least 1, got {range_frames}")
    if range_frames:
        size = range_frames
    else:
        count = min(max(1, servers) * RANGES_PER_SERVER, max(servers, math.ceil(total / MIN_RANGE_FRAMES)))
        size = math.ceil(total / max(1, count))
    size = max(align, math.ceil(size / align) * align)
    return [FrameRange(a, min(a + size, total)) for a in range(0, total, size)]


@dataclass(frozen=True)
class SplitPlan:
    """What the client needs to know of a workflow to split it (from `analyse`)."""

    output_id: str
    sampler_ids: tuple[str, ...]
    driving_id: str
    frames_id: str | None                 # the MagicPose Select Frames node reading the driving video
    selection: FrameSelection
    align: int                            # frame_batch (lcm over samplers)
    fps: str | float                      # "selection", "source" or a number
    audio: str | None                     # "selection", "source" or None
    format: str
    crf: int
    filename_prefix: str
    anchors: tuple[tuple[str, int], ...] = ()   # (sampler id, frame_batch) of samplers with temporal_mode first


def _link(value: Any) -> tuple[str, int] | None:
    return (str(value[0]), int(value[1])) if isinstance(value, list) and len(value) == 2 else None


def _off(value: Any) -> bool:
    return value in (False, 0, 0.0, None, "", "off", "none", "disabled")


def check_temporal(wf: Mapping, sampler_id: str) -> bool:
    """Whether the sampler's temporal sources need an anchor per range (temporal_mode first, switched on); UsageError
    for the modes a frame-range split cannot render exactly (previous, both: a chain of frames)."""
    inputs = wf[sampler_id]["inputs"]
    if "temporal_mode" not in inputs:                      # unknown temporal* options: refused while switched on
        for name, value in inputs.items():
            if name.startswith(TEMPORAL_PREFIX) and not _off(value):
                raise UsageError(f"{node_label(wf, sampler_id)}: '{name}' = {value!r} is a temporal option (frames "
                                 "depend on other frames), so a frame-range split would not equal a single render; "
                                 "switch it off or render on one server (one --server)")
        return False
    mode, strength = inputs["temporal_mode"], inputs.get("temporal_strength", 1.0)
    if _off(mode):
        return False
    if mode not in EXACT_TEMPORAL_MODES:
        why = ("each frame's anchor is the previous rendered frame" if isinstance(mode, str) else
               "it is not a value the split can read")
        raise UsageError(f"{node_label(wf, sampler_id)}: temporal_mode {mode!r} cannot be split over servers: {why}, "
                         "a chain through the whole video that a frame range cannot start in the middle of. Render "
                         "on one server (one --server), or use temporal_mode first (exact over servers)")
    if _link(inputs.get("anchor_pose")) is not None:
        raise UsageError(f"{node_label(wf, sampler_id)}: 'anchor_pose' is connected; the split render gives each "
                         "range the video's first pose maps there itself. Disconnect it to split over servers")
    return not (isinstance(strength, (int, float)) and strength == 0)


def analyse(wf: Mapping) -> SplitPlan:
    """Check that a filled workflow can be split exactly and read what the merge needs (UsageError otherwise)."""
    output_id = resolve_node(wf, OUTPUT_TITLE, "splitting over servers")
    out = wf[output_id]
    if out.get("class_type") != OUTPUT_CLASS:
        raise UsageError(f"splitting over servers needs the node titled '{OUTPUT_TITLE}' to be MagicPose Frames to "
                         f"Video ({OUTPUT_CLASS}); {node_label(wf, output_id)} is not. Use one --server for this "
                         "workflow")
    samplers = tuple(n for n, node in wf.items() if node.get("class_type") == SAMPLER_CLASS)
    if not samplers:
        raise UsageError(f"splitting over servers needs MagicPose Sampler ({SAMPLER_CLASS}) in the workflow: its "
                         "frames are independent given the shared noise. Use one --server for this workflow")
    align, anchors = 1, []
    for sid in samplers:
        inputs = wf[sid]["inputs"]
        if _link(inputs.get("poses")) is None:
            raise UsageError(f"{node_label(wf, sid)}: 'poses' must be connected to split the frames over servers")
        if inputs.get("shared_noise", True) is not True:
            raise UsageError(f"{node_label(wf, sid)}: shared_noise is off, so each frame's noise depends on its place "
                             "in the whole batch and a frame-range split would not equal a single render; set "
                             "shared_noise true (official) or render on one server")
        anchored = check_temporal(wf, sid)
        batch = inputs.get("frame_batch", 4)
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise UsageError(f"{node_label(wf, sid)}: frame_batch must be a number (not a link) to split over servers")
        align = math.lcm(align, batch)
        if anchored:
            anchors.append((sid, batch))
    driving_id = resolve_node(wf, DRIVING_VIDEO_TITLE, "splitting over servers")
    frames_id = next((n for n, node in wf.items() if node.get("class_type") == FRAMES_CLASS
                      and _link(node["inputs"].get("video")) == (driving_id, 0)), None)
    selection = FrameSelection()
    if frames_id is not None:
        i = wf[frames_id]["inputs"]
        try:
            selection = FrameSelection(i.get("frame_load_cap", 0), i.get("skip_first_frames", 0),
                                       i.get("select_every_nth", 1), float(i.get("force_rate", 0.0))).check()
        except (TypeError, ValueError) as e:
            raise UsageError(f"{node_label(wf, frames_id)}: {e} (its controls must be numbers to split)") from None
    sources = {(frames_id, 2): "selection", (frames_id, 1): "selection"}
    for n, node in wf.items():
        if node.get("class_type") == COMPONENTS_CLASS and _link(node["inputs"].get("video")) == (driving_id, 0):
            sources[(n, 2)] = sources[(n, 1)] = "source"
    fps_in = out["inputs"].get("fps", 24.0)
    if _link(fps_in) is not None:
        fps = sources.get(_link(fps_in))
        if fps is None:
            raise UsageError(f"{node_label(wf, output_id)}: its fps comes from {node_label(wf, _link(fps_in)[0])}; "
                             "to split over servers connect it to MagicPose Select Frames' fps or type a number")
    else:
        fps = float(fps_in)
    audio_in = out["inputs"].get("audio")
    audio = sources.get(_link(audio_in)) if _link(audio_in) is not None else None
    if _link(audio_in) is not None and audio is None:
        log.warning("%s: its audio comes from %s, which a split render cannot carry over; the merged video has no "
                    "sound", node_label(wf, output_id), node_label(wf, _link(audio_in)[0]))
    return SplitPlan(output_id, samplers, driving_id, frames_id, selection, align, fps, audio,
                     str(out["inputs"].get("format", "mp4")), int(out["inputs"].get("crf", 19)),
                     str(out["inputs"].get("filename_prefix", "MagicPose/video")), tuple(anchors))


def range_workflow(wf: Mapping, plan: SplitPlan, rng: FrameRange, prefix: str) -> dict:
    """The workflow rendering only `rng`: a Select Frames cut before each sampler's poses (and, for temporal_mode
    first after the first range, the video's first frame_batch pose maps as anchor_pose), the Output writing a
    lossless mkv part to the temp folder without sound."""
    w = copy.deepcopy(dict(wf))
    anchors = dict(plan.anchors)
    ids = (str(i) for i in itertools.count(CUT_ID_BASE) if str(i) not in wf)

    def select(title: str, images: Any, start: int, count: int) -> list:
        nid = next(ids)
        w[nid] = {"class_type": FRAMES_CLASS, "_meta": {"title": title},
                  "inputs": {"frame_load_cap": count, "skip_first_frames": start, "select_every_nth": 1,
                             "force_rate": 0.0, "images": images}}
        return [nid, 0]

    for sid in plan.sampler_ids:
        poses = w[sid]["inputs"]["poses"]
        w[sid]["inputs"]["poses"] = select(f"Range {rng.label}", poses, rng.start, len(rng))
        if sid in anchors and rng.start > 0:
            w[sid]["inputs"]["anchor_pose"] = select("Anchor frames (the video's first)", poses, 0, anchors[sid])
    out = w[plan.output_id]["inputs"]
    out.update(format=PART_FORMAT, save_output=False, filename_prefix=f"MagicPose/parts/{prefix}_{rng.name}")
    out.pop("audio", None)
    return w


# --- the run -----------------------------------------------------------------------------------------------

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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _default_out(out: str | os.PathLike, plan: SplitPlan) -> Path:
    p = Path(out)
    if str(out).endswith(("/", os.sep)) or p.is_dir():
        return p / f"{Path(plan.filename_prefix).name or 'video'}.{plan.format}"
    return p


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
        self.out = _default_out(out, self.plan)
        self.parts = Path(parts_dir) if parts_dir else self.out.with_name(self.out.name + ".parts")
        self.key = _digest({"workflow": local, "inputs": {t: _sha256(p) for t, p in self.inputs.items()}})

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

    def _part(self, rng: FrameRange) -> Path:
        return self.parts / f"range_{rng.name}.{PART_FORMAT}"

    def _load_manifest(self, total: int) -> tuple[list[FrameRange], set[FrameRange]] | None:
        path = self.parts / MANIFEST
        if not self.resume:
            return None
        if not path.is_file():
            log.warning("--resume: no earlier parts in %s; rendering everything", self.parts)
            return None
        try:
            data = json.loads(path.read_text())
            ranges = [FrameRange(int(a), int(b)) for a, b in data["ranges"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--resume: cannot read {path} ({e}); remove {self.parts} or drop --resume") from None
        if data.get("key") != self.key or data.get("frames") != total:
            raise UsageError(f"--resume: the parts in {self.parts} belong to another run (the workflow, its settings "
                             "or the input files differ); remove that folder or drop --resume")
        from ..media.video import probe_video

        done = set()
        for rng in ranges:
            part = self._part(rng)
            try:
                if part.is_file() and probe_video(str(part)).frames == len(rng):
                    done.add(rng)
            except ValueError:
                log.warning("--resume: %s is damaged; rendering %s again", part.name, rng.label)
        return ranges, done

    def _write_manifest(self, total: int, ranges: list[FrameRange]) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)
        tmp = self.parts / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"key": self.key, "frames": total, "ranges": [[r.start, r.stop] for r in ranges]}))
        os.replace(tmp, self.parts / MANIFEST)

    # --- the queue ------------------------------------------------------------------------------------------
    def run(self) -> SplitResult:
        t_start = time.monotonic()
        total, src_fps = self._count_frames()
        if total == 0:
            raise UsageError("the frame selection keeps no frame of the driving video; check the Frames node")
        clients, skipped = self._connect()
        result = SplitResult(None, total, [], list(clients), skipped)
        filled = self._upload(clients, result)
        result.servers = list(filled)
        found = self._load_manifest(total)
        if found is not None:
            ranges, done = found
            result.resumed = len(done)
        else:
            ranges, done = plan_ranges(total, len(filled), self.plan.align, self.range_frames), set()
            if self.parts.is_dir():
                for old in self.parts.glob(f"range_*.{PART_FORMAT}"):
                    old.unlink()
            self._write_manifest(total, ranges)
        result.ranges = ranges
        self._say(f"{total} frames in {len(ranges)} ranges on {len(filled)} server(s)"
                  + (f"; {len(done)} range(s) already done" if done else ""))
        self._render([r for r in ranges if r not in done], filled, clients, result)
        if result.failed:
            lines = "\n".join(f"  {label}: {why}" for label, why in result.failed.items())
            raise SplitFailed(f"{len(result.failed)} of {len(ranges)} ranges failed:\n{lines}\nThe finished parts are "
                              f"kept in {self.parts}; run the same command with --resume to render only the missing "
                              "ranges")
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
            for partial in self.parts.glob(f".range_*.{PART_FORMAT}.partial"):
                partial.unlink(missing_ok=True)
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

        self.parts.mkdir(parents=True, exist_ok=True)
        tmp = self.parts / f".range_{rng.name}.{PART_FORMAT}.partial"
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
        os.replace(tmp, self._part(rng))
        progress.update(rng, 1.0, url, force=True, note="done")
        end = time.monotonic()
        sampled = marks.get("sampled", t_dl) - marks.get("sample", t_dl)
        return RangeStat(rng, url, end - t0, sampled, t_dl - marks.get("success", t_dl))

    def _labels(self, first: FrameRange) -> dict[str, str]:
        """The file labels the server wrote into the first part (e.g. the provenance label), without the part's own
        workflow (a range cut) and with the whole workflow instead."""
        from ..media.video import read_metadata

        meta = {k: v for k, v in read_metadata(str(self._part(first))).items()
                if k.lower() not in ("prompt", "workflow", "encoder")}
        meta["prompt"] = json.dumps(self.workflow)
        return meta

    def _merge(self, ranges: list[FrameRange], total: int, src_fps: Fraction, result: SplitResult) -> None:
        from ..media.video import merge_videos, read_audio

        t0 = time.monotonic()
        sel, plan = self.plan.selection, self.plan
        fps = sel.output_fps(src_fps) if plan.fps == "selection" else src_fps if plan.fps == "source" else plan.fps
        audio = None
        driving = str(self.inputs[DRIVING_VIDEO_TITLE])
        if plan.audio == "selection":
            audio = read_audio(driving, *sel.audio_span(total, src_fps))
        elif plan.audio == "source":
            audio = read_audio(driving)
        if audio is not None and audio[0].shape[1] == 0:
            audio = None
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.partial")
        info = merge_videos([str(self._part(r)) for r in ranges], str(tmp), fps, plan.format, plan.crf, audio,
                            metadata=self._labels(ranges[0]) if plan.format in ("mp4", "webm", "mkv") else None)
        os.replace(tmp, self.out)
        if info.frames != total:
            raise ClientError(f"the merged video has {info.frames} frames, {total} expected")
        result.path, result.merge_seconds = self.out, time.monotonic() - t0
        if not self.keep_parts:
            shutil.rmtree(self.parts, ignore_errors=True)
        self._say(f"merged {len(ranges)} parts into {self.out} ({total} frames at {float(fps):g} fps"
                  + (", with sound" if audio is not None else "") + ")")
