"""Measured figures from tests (parity differences, call counts, memory), shown at the end of the run."""
from __future__ import annotations

import json
import time
from pathlib import Path

FILE = Path(__file__).resolve().parents[2] / ".cache" / "test-logs" / "figures.jsonl"
_session: list[tuple[str, object]] = []


def record(name: str, value) -> None:
    """Keep a figure for the terminal summary and append it to .cache/test-logs/figures.jsonl."""
    _session.append((name, value))
    FILE.parent.mkdir(parents=True, exist_ok=True)
    with FILE.open("a") as f:
        f.write(json.dumps({"time": time.time(), "name": name, "value": value}) + "\n")


def recorded() -> list[tuple[str, object]]:
    return list(_session)
