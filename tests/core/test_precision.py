"""The `auto` autocast choice (magicpose_core/model/precision.py): the decision rule on given measurements, the
per-machine cache, and the real probe on this CPU. Nothing here depends on which CPU runs it: the rule is tested on
stated measurements, and the real probe only has to return finite figures and an allowed choice."""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from magicpose_core.model import precision as P

SMALL = (1, 64, 8, 8), (1, 64, 4, 4)   # (B, C, h, w) of block and screen: milliseconds even where emulated; the
#                                       cache tests need a real probe to count, the real shapes are tested below


def measured(off=0.100, bf16=None, fp16=None, dev_bf16=5e-3, dev_fp16=7e-4, notes=None) -> P.ProbeResult:
    """A probe result with the given best seconds per choice (None: not timed at full size)."""
    r = P.ProbeResult(device="cpu", shape=(1, 320, 32, 32), seconds={"off": off}, deviation={"off": 0.0})
    for name, s, d in (("bf16", bf16, dev_bf16), ("fp16", fp16, dev_fp16)):
        if s is not None:
            r.seconds[name], r.deviation[name] = s, d
    r.notes.update(notes or {})
    return r


@pytest.fixture
def counted_probe():
    """The real probe (small shape, short budget), counting its runs."""
    runs = []

    def probe_fn(device):
        runs.append(device)
        return P.probe(device, shape=SMALL[0], screen=SMALL[1], budget_s=0.1)

    probe_fn.runs = runs
    return probe_fn


# --- the rule ---------------------------------------------------------------------------------------------------


def test_decide_takes_a_half_type_only_when_clearly_faster_and_close_to_fp32():
    assert P.decide(measured(bf16=0.050))[0] == "bf16"                       # 2x faster, deviation 5e-3
    assert P.decide(measured(bf16=0.090))[0] == "off"                        # 1.11x: not clearly faster
    choice, reason = P.decide(measured(bf16=0.400, fp16=7.0))                # slower, far slower
    assert choice == "off" and "bf16 only 0.25x" in reason and "fp16 only 0.01x" in reason


def test_decide_boundary_is_the_stated_speedup_and_deviation():
    at = 0.100 / P.MIN_SPEEDUP
    assert P.decide(measured(bf16=at))[0] == "bf16"                           # exactly MIN_SPEEDUP: taken
    assert P.decide(measured(bf16=at * 1.001))[0] == "off"                    # just below: fp32
    assert P.decide(measured(bf16=0.05, dev_bf16=P.MAX_DEVIATION))[0] == "bf16"
    choice, reason = P.decide(measured(bf16=0.05, dev_bf16=P.MAX_DEVIATION * 1.001))
    assert choice == "off" and "deviates" in reason
    assert P.decide(measured(bf16=0.05, dev_bf16=math.inf))[0] == "off"      # overflow / NaN in the block
    assert P.decide(measured(bf16=0.05), min_speedup=2.5)[0] == "off"         # the thresholds are parameters


def test_decide_prefers_the_faster_half_type_and_bf16_on_a_tie():
    assert P.decide(measured(bf16=0.060, fp16=0.040))[0] == "fp16"          # fp16 1.5x faster than bf16
    assert P.decide(measured(bf16=0.050, fp16=0.049))[0] == "bf16"          # within 5%: bf16 (fp32's range)
    assert P.decide(measured(bf16=0.050, fp16=0.040, dev_fp16=0.5))[0] == "bf16"   # fp16 too far off


def test_decide_reports_what_was_not_timed():
    r = measured(notes={"bf16": "40x slower than fp32 at (1, 320, 8, 8): emulated",
                        "fp16": "unavailable: no fp16 autocast"})
    choice, reason = P.decide(r)
    assert choice == "off" and "emulated" in reason and "unavailable" in reason


# --- features and the real probe -----------------------------------------------------------------------------------


def test_cpu_features_from_a_cpuinfo_file(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 "
                 "amx_bf16 amx_tile\n\nprocessor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu\n")
    feat = P.cpu_features(f)
    assert feat.model == "Test CPU 9000"
    assert feat.flags == ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2") and feat.bf16_units
    assert feat.capability == str(torch.backends.cpu.get_cpu_capability())
    none = P.cpu_features(tmp_path / "missing")             # unreadable: no flags, no crash
    assert none.flags == () and not none.bf16_units and none.model


def test_real_probe_on_this_cpu_gives_finite_figures_and_an_allowed_choice_and_logs_it(caplog):
    with caplog.at_level(logging.INFO, logger="MagicPose"):
        d = P.choose_autocast("cpu")                          # no cache: measured now, at the real shape
    r = d.probe
    assert r.shape == P.PROBE_SHAPE["cpu"] and r.wall_seconds > 0
    assert r.seconds["off"] > 0 and all(math.isfinite(s) and s > 0 for s in r.seconds.values())
    for name in P.HALF:   # each half type was timed, or screened out as emulated with its figure, or unavailable
        assert name in r.seconds or name in r.notes
        if name in r.deviation:
            assert math.isfinite(r.deviation[name]) and 0 <= r.deviation[name] < 0.5, r.deviation
        if name in r.seconds or name in r.screen_slowdown:
            assert 0 < r.speedup(name) and math.isfinite(r.speedup(name))
    assert d.choice in ("off", "bf16", "fp16") and d.dtype == P.DTYPES[d.choice] and not d.cached
    assert d.choice == P.decide(r)[0]
    text = caplog.text
    feat = P.cpu_features()
    assert f"MagicPose autocast auto -> {d.choice}" in text and feat.model in text and feat.capability in text
    assert "speed" in text and "deviation" in text


def test_a_half_precision_model_stays_as_it_is_without_a_probe(counted_probe):
    for dtype in (torch.float16, torch.bfloat16):
        d = P.choose_autocast("cpu", model_dtype=dtype, probe_fn=counted_probe)
        assert d.choice == "off" and d.dtype is None and "already" in d.reason
    assert counted_probe.runs == []


# --- the per-machine cache -------------------------------------------------------------------------------------------


def test_cache_second_call_does_not_probe_again(tmp_path, counted_probe):
    path = tmp_path / "user" / "magicpose" / "autocast_probe.json"   # folders made on demand
    first = P.choose_autocast("cpu", cache_path=path, probe_fn=counted_probe)
    assert len(counted_probe.runs) == 1 and not first.cached and path.is_file()
    entries = json.loads(path.read_text())["entries"]
    assert list(entries) == [P.machine_key("cpu")] and "cpu" in entries[first.key]
    second = P.choose_autocast("cpu", cache_path=path, probe_fn=counted_probe)
    assert len(counted_probe.runs) == 1 and second.cached
    assert second.choice == first.choice and second.probe == first.probe


def test_cache_entry_of_another_machine_is_not_used(tmp_path, counted_probe):
    path = tmp_path / "autocast_probe.json"
    P.choose_autocast("cpu", cache_path=path, probe_fn=counted_probe)
    data = json.loads(path.read_text())
    other = "cpu | another CPU | AVX2 | avx2 fma | probe 1 | torch 0.0"
    data["entries"] = {other: data["entries"][P.machine_key("cpu")]}   # only another machine's measurement
    path.write_text(json.dumps(data))
    d = P.choose_autocast("cpu", cache_path=path, probe_fn=counted_probe)
    assert len(counted_probe.runs) == 2 and not d.cached
    assert set(json.loads(path.read_text())["entries"]) == {other, P.machine_key("cpu")}   # the other one kept


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "entries": []}', "[]",
                                     '{"entries": {"KEY": {"probe": {"device": "cpu"}}}}'])
def test_corrupt_cache_is_replaced_with_a_warning_never_a_crash(tmp_path, counted_probe, caplog, content):
    path = tmp_path / "autocast_probe.json"
    path.write_text(content.replace("KEY", P.machine_key("cpu")))
    with caplog.at_level(logging.WARNING, logger="MagicPose"):
        d = P.choose_autocast("cpu", cache_path=path, probe_fn=counted_probe)
    assert len(counted_probe.runs) == 1 and not d.cached and d.choice in P.DTYPES
    assert "corrupt" in caplog.text or "unreadable" in caplog.text
    assert P.machine_key("cpu") in json.loads(path.read_text())["entries"]     # replaced by a valid file
    again = P.choose_autocast("cpu", cache_path=path, probe_fn=counted_probe)
    assert again.cached and len(counted_probe.runs) == 1


def test_unwritable_cache_warns_and_still_decides(tmp_path, counted_probe, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="MagicPose"):
        d = P.choose_autocast("cpu", cache_path=blocker / "sub" / "autocast_probe.json", probe_fn=counted_probe)
    assert d.choice in P.DTYPES and "could not write" in caplog.text
