"""Stopping our prompts: the CLI's signal handlers (a first Ctrl-C / SIGTERM / SIGHUP raises, later ones are ignored
while the stop runs) and `StopGate`, the stop shared by the threads of a split render.

The client owns its prompt: on Ctrl-C, SIGTERM, SIGHUP, a --timeout or any unexpected error it interrupts the prompt if
it is running or deletes it if it is queued (`Client.cancel`), never touching other clients' prompts.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

from .errors import Terminated

log = logging.getLogger("MagicPose")


def install_signal_handlers() -> Callable[[], None]:
    """Make Ctrl-C (SIGINT) raise KeyboardInterrupt and SIGTERM / SIGHUP raise `Terminated` in the main thread, the
    first time; every later signal is logged and ignored while the prompts are being stopped, so a second Ctrl-C
    cannot cut the stop short and leave a prompt of ours running on a server (the stop itself is bounded).
    Returns a function that restores the previous handlers."""
    fired: list[int] = []

    def handler(signum, _frame):
        if fired:
            log.warning("%s again: still stopping our prompts on the server(s), for a bounded time (Ctrl-\\ quits "
                        "at once and may leave them running)",
                        "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)
            return
        fired.append(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    names = [n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {n: signal.signal(getattr(signal, n), handler) for n in names}

    def restore() -> None:
        for n, h in previous.items():
            signal.signal(getattr(signal, n), h)

    return restore


class StopGate:
    """A stop signal shared by threads that queue prompts (split_render), which no new prompt can slip past.

    `Client.submit(stop=gate)` registers its prompt id before POST /prompt (`open_post`, refused once the gate is
    set) and reports when the POST has returned (`close_post`). `set()` refuses every later registration and waits
    for the POSTs in flight, so the prompts it returns are every prompt of ours that can be on a server; the owner
    stops them (`Client.cancel`), and `submit` leaves a stopped prompt to it. Quacks like `threading.Event` for
    `is_set()`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._set = False
        self._posting = 0
        self._prompts: dict[str, set[str]] = {}          # server -> our prompt ids that may be queued or running

    def is_set(self) -> bool:
        return self._set

    def open_post(self, server: str, prompt_id: str) -> bool:
        """Register a prompt about to be posted; False (do not post) once the gate is set."""
        with self._cond:
            if self._set:
                return False
            self._posting += 1
            self._prompts.setdefault(server, set()).add(prompt_id)
            return True

    def close_post(self, server: str, prompt_id: str, queued: bool) -> None:
        with self._cond:
            self._posting -= 1
            if not queued:
                self._prompts.get(server, set()).discard(prompt_id)
            self._cond.notify_all()

    def forget(self, server: str, prompt_id: str) -> None:
        """The prompt has ended (or was confirmed stopped): nothing left to stop."""
        with self._cond:
            self._prompts.get(server, set()).discard(prompt_id)

    def set(self, wait: float = 30.0) -> dict[str, set[str]]:
        """Stop: no prompt is posted from now on. Waits (at most `wait` s) for the POSTs in flight and returns
        server -> our prompt ids that may still be queued or running there."""
        with self._cond:
            self._set = True
            self._cond.wait_for(lambda: self._posting == 0, timeout=wait)
            return {server: set(ids) for server, ids in self._prompts.items() if ids}
