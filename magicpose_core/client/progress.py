"""The CLI's display of one run on a text stream (stderr): a line per node, a tqdm progress bar per node's `progress`
events (value / max: the sampler's steps, a loader's frames, ...).

On a terminal the bar redraws one line (a tqdm bar). Otherwise (a log file, CI) the same bar text is printed as a line
at the first tick, every 10 % and the last tick, so a log gets about 11 lines per bar, not one per tick.
"""
from __future__ import annotations

import sys
import time
from typing import IO

from tqdm import tqdm

from .follow import END_EVENTS, RunEvent

BAR_FORMAT = "  {desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"
LOG_BAR = " #"                   # the bar's characters in log lines (tqdm's `ascii`): no block glyphs in logs


class _Bar(tqdm):
    monitor_interval = 0         # no tqdm monitor thread: every tick is drawn (mininterval 0)


class ProgressPrinter:
    """Shows the run on `stream` (default stderr); call it with each `RunEvent` (`Client.run(on_event=...)`)."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: tqdm | None = None                        # the terminal's open bar
        self._start: dict[str, float] = {}                   # log mode: when each node's bar started
        self._last: dict[str, int] = {}                      # log mode: the decile each node's bar last printed

    def __call__(self, ev: RunEvent) -> None:
        d = ev.data
        if ev.type == "execution_start":
            self._line(f"started prompt {d.get('prompt_id', '')}")
        elif ev.type == "execution_cached" and d.get("nodes"):
            self._line(f"cached: {len(d['nodes'])} node(s)")
        elif ev.type == "executing" and d.get("node") is not None:
            self._line(f"running {ev.label}")
        elif ev.type == "progress":
            value, total = int(d.get("value", 0)), max(int(d.get("max", 1)), 1)
            (self._draw if self.tty else self._log)(ev.label, value, total)
        elif ev.type in END_EVENTS:
            self.close()

    def close(self) -> None:
        """End the open bar's line (the run ended, or another line follows)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, text: str) -> None:
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _draw(self, label: str, value: int, total: int) -> None:
        bar = self._bar
        if bar is None or bar.desc != label or bar.total != total or value < bar.n:
            self.close()
            self._bar = _Bar(total=total, initial=value, desc=label, file=self.stream, bar_format=BAR_FORMAT,
                             mininterval=0, miniters=1, leave=True)
        else:
            bar.update(value - bar.n)
        if value >= total:
            self.close()

    def _log(self, label: str, value: int, total: int) -> None:
        now = time.monotonic()
        if value <= 1 or label not in self._start:
            self._start[label] = now
            self._last.pop(label, None)
        decile = 10 * value // total
        if value in (1, total) or decile != self._last.get(label):
            self._last[label] = decile
            self._line(tqdm.format_meter(value, total, now - self._start[label], prefix=label, bar_format=BAR_FORMAT,
                                         ascii=LOG_BAR))
