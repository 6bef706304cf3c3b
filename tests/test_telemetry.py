"""The reporter: underrun counting, warnings with advice, percentiles, status fields.

The engine's callback body is driven by hand (``Engine.run_callback``), so
the numbers are known; the reporter is sampled directly rather than on its
thread, except where the thread itself is under test.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from stemdeck.audio import telemetry as tm
from stemdeck.audio.telemetry import Telemetry, underrun_advice
from stemdeck.control import spec
from stemdeck.engine.engine import Engine

SR = 44100
UNDERFLOW = 0x4


@pytest.fixture
def engine():
    return Engine(SR)


def callbacks(engine, n, block=256, flags=0):
    out = np.zeros((block, 2), np.float32)
    for _ in range(n):
        engine.run_callback(out, flags)


def test_advice_reads_like_the_issue_asks():
    assert underrun_advice(12, 30.0, 256, None) == \
        "12 underruns in 30 s at 256 frames; try --buffer-size 512 or stemdeck tune"
    assert underrun_advice(1, 4.2, 100, None).startswith("1 underrun in 4 s at 100 frames; try --buffer-size 128")
    assert "already at its largest" in underrun_advice(3, 30, 8192, None)


def test_advice_tells_where_the_time_went():
    heavy = underrun_advice(5, 30, 128, 93.0)
    assert "the mix takes 93 % of each period" in heavy
    light = underrun_advice(5, 30, 128, 12.0)
    assert "only 12 % of the period" in light and "try --realtime" in light
    assert "--realtime" not in underrun_advice(5, 30, 128, 12.0, realtime=True)


def test_flags_and_late_callbacks_from_one_glitch_count_once(engine):
    t = Telemetry(engine, block_size=256, sample_rate=SR)
    callbacks(engine, 50)
    engine.make_late(10_000)                 # 10 ms > 5.8 ms period: an overrun...
    callbacks(engine, 1)
    callbacks(engine, 1, flags=UNDERFLOW)    # ...that the host then flags
    callbacks(engine, 50)
    snap = t.sample()
    # one overrun, and more only if a busy machine preempted this ordinary
    # thread past a period elsewhere; the host's flag right after it adds none
    late = snap["overruns"]
    assert late >= 1 and snap["underflows"] == 1
    assert snap["underruns"] == late and snap["new_underruns"] == late
    callbacks(engine, 3, flags=UNDERFLOW)    # flagged only: the host was late, not us
    assert t.sample()["underruns"] == late + 3


def test_a_late_callback_says_why(engine, caplog):
    """A callback that computes past its period is counted with its CPU time,
    not blamed on the host; it never slept (tests/lateness.py relies on it)."""
    t = Telemetry(engine, block_size=256, sample_rate=SR)
    callbacks(engine, 20)
    engine.make_late(10_000)                 # a 10 ms busy loop in a 5.8 ms period
    callbacks(engine, 1)
    st = t.stats()
    assert st["overruns"] >= 1 and st["callbacks_slept"] == 0 and st["late_slept"] == 0
    # its CPU time is measured: most of the 10 ms unless this ordinary thread lost its CPU meanwhile
    assert st["callback_max_cpu_ns"] > 2e6 or st["late_preempted"] + st["late_stolen"] >= 1
    assert st["late_stolen"] == 0 or st["callback_max_cpu_ns"] < 5e6
    assert "steal time" in tm._extras({"late_stolen": 2}) and "slept inside 3" in tm._extras({"callbacks_slept": 3})


def test_percentiles_and_load_come_from_the_callback_durations(engine):
    t = Telemetry(engine, block_size=256, sample_rate=SR)
    callbacks(engine, 200)
    engine.make_late(3000)                   # one 3 ms callback of a 5.8 ms period
    callbacks(engine, 1)
    st = t.sample()
    period_ms = 256 / SR * 1000
    assert st["callbacks_measured"] == 201
    assert st["period_ms"] == pytest.approx(period_ms)
    # the slowest callback measured, in ms: at least the 3 ms one (more when a busy
    # machine preempted this ordinary thread mid-callback: 10.9 ms was seen with two hogs)
    assert st["callback_max_ms"] == pytest.approx(engine.callback_durations().max() / 1e6)
    assert st["callback_max_ms"] >= 3.0
    assert st["dsp_load_max"] == pytest.approx(100 * st["callback_max_ms"] / period_ms)
    assert st["callback_p50_ms"] < 0.5 and st["callback_p50_ms"] <= st["callback_p99_ms"]
    # the rule: a callback longer than its period is an underrun. 3 ms fits in
    # the period, unless the machine preempted this (ordinary) thread mid-callback
    assert st["underruns"] == (1 if st["callback_max_ms"] > period_ms else 0)


def test_status_fields_are_the_ones_the_status_reply_needs(engine):
    t = Telemetry(engine, block_size=512, sample_rate=SR, latency=lambda: 0.0232)
    fields = t.status_fields()
    names = {name for name, _, _ in spec.STATUS_FIELDS}
    assert set(fields) <= names
    assert fields["buffer_size"] == 512
    assert fields["latency_ms"] == pytest.approx(23.2)
    assert fields["underruns"] == 0 and fields["uptime_s"] >= 0


def test_warns_at_most_every_few_seconds_with_a_suggestion(engine, caplog):
    t = Telemetry(engine, block_size=256, sample_rate=SR, warn_interval=0.5)
    with caplog.at_level(logging.WARNING, logger="stemdeck.telemetry"):
        callbacks(engine, 10, flags=UNDERFLOW)
        t._tick()
        callbacks(engine, 2, flags=UNDERFLOW)
        t._tick()                                  # within the interval: held back
        assert len(caplog.records) == 1
        assert "10 underruns in" in caplog.records[0].getMessage()
        assert "at 256 frames; try --buffer-size 512 or stemdeck tune" in caplog.records[0].getMessage()
        time.sleep(0.6)
        t._tick()                                  # the held-back ones are reported now
        assert len(caplog.records) == 2
        assert "12 underruns in" in caplog.records[1].getMessage()
        time.sleep(0.6)
        callbacks(engine, 5)
        t._tick()                                  # nothing new: silence
        assert len(caplog.records) == 2


def test_summary_line_every_stats_interval_from_the_reporter_thread(engine, caplog, monkeypatch):
    monkeypatch.setattr(tm, "TICK_SECONDS", 0.05)
    t = Telemetry(engine, block_size=256, sample_rate=SR, stats_interval=0.2)
    with caplog.at_level(logging.INFO, logger="stemdeck.telemetry"):
        t.start()
        for _ in range(10):
            callbacks(engine, 20)
            time.sleep(0.05)
        t.stop()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stats ")]
    assert len(lines) >= 2
    assert "0 underruns" in lines[0] and "p99" in lines[0] and "CPU" in lines[0]
    assert "0 underruns (0 flagged by the device, 0 late callbacks)" in t.summary_line()


def test_cpu_percent_is_measured(engine):
    """The process's CPU over the wall time since the last sample: 0.3 s of
    CPU burnt here, in however much wall time a busy machine gives it."""
    cpu0, wall0 = time.process_time(), time.monotonic()
    t = Telemetry(engine, block_size=256, sample_rate=SR)
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    cpu_percent = t.sample()["cpu_percent"]
    expected = 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0)
    assert cpu_percent == pytest.approx(expected, rel=0.25)


def test_sampling_for_hours_does_not_grow_memory(engine):
    """The soak found the reporter keeping every sample's durations for a
    periodic summary nobody asked for (+6 MB an hour, about 800 bytes a
    sample). 3,000 samples must not hold on to theirs (they would be over
    500 kB here)."""
    import tracemalloc

    # a tiny window: the samples below come faster than real time, and the
    # window (bounded by time, not count) would otherwise hold them all
    t = Telemetry(engine, block_size=256, sample_rate=SR, window=1e-3)
    callbacks(engine, 8)
    t.sample()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(3000):
            callbacks(engine, 8)
            t.sample()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown / 1e3:.0f} kB kept after 3,000 samples"
    # a periodic summary still sees every callback since the last one
    t.interval()
    callbacks(engine, 50)
    t.sample()
    assert t.interval()["callback_p50_ms"] > 0
