"""Tempo on the control side, measured on rendered samples: smooth ramps,
beat and bar positions to the frame, beatmatched stems from two source
tempos over a five-minute render, quantised starts on beat frames, one-shot
ends on the tempo map, /stem_bpm, and /keylock through the Controller.

Every test drives a real Engine through the Controller with real files
(written to a temporary folder and loaded with /load_buffer) and measures
what Engine.render produced.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from stemdeck.control.controller import Controller
from stemdeck.control.tempo import ClockReporter, ClockState, TempoMap, engine_clock
from stemdeck.engine import commands as C
from stemdeck.engine.engine import Engine
from signals import SR, dc, onset, peak_hz, sine

pytestmark = pytest.mark.filterwarnings("ignore")


# -- rig ------------------------------------------------------------------------------------------

class Rig:
    """An Engine (EQ bypassed: exact sample values; limiter off) and a
    Controller loading real files from ``folder``."""

    def __init__(self, folder, *, block: int = 1024, **kw):
        self.folder = folder
        self.engine = Engine(SR, max_block=8192)
        self.engine.set_eq_enabled(False)
        self.engine.set_limiter(False)
        self.c = Controller(self.engine, **kw)
        self.block = block

    def file(self, name: str, data: np.ndarray) -> str:
        path = str(self.folder / name)
        sf.write(path, data, SR, subtype="FLOAT")
        return path

    def load(self, buffer_id: int, name: str, data: np.ndarray, *extra):
        replies = self.send("/load_buffer", buffer_id, self.file(name, data), name, *extra, at=0)
        assert replies == [("/done", ("/load_buffer", buffer_id))], replies

    def send(self, address, *args, at=None):
        replies = self.c.handle(address, list(args), at=at)
        assert not [r for r in replies if r[0] == "/fail"], replies
        return replies

    def render(self, frames: int) -> np.ndarray:
        out = np.zeros((frames, 2), np.float32)
        for i in range(0, frames, self.block):
            self.engine.render(out[i:i + self.block])
        return out

    def render_to(self, frame: int) -> np.ndarray:
        return self.render(frame - self.engine.frame)


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path)


# -- the map itself --------------------------------------------------------------------------------

def test_tempo_map_agrees_with_the_engine_frame_by_frame():
    e = Engine(SR)
    m = TempoMap.from_engine(e)
    for frame, bpm, ramp in ((30000, 126.0, 2.0), (200000, 100.0, 0.0), (250000, 130.0, 0.28),
                             (260000, 90.0, 1.0)):   # the last cuts into the previous ramp
        e.set_tempo(bpm, ramp=ramp, at=frame)
        m.set_tempo(frame, bpm, round(ramp * SR))
    out = np.zeros((333, 2), np.float32)
    worst = 0.0
    for _ in range(1500):
        e.render(out)
        snap = engine_clock(e)
        mine = m.state_at(snap.frame)
        worst = max(worst, abs(mine.beats - snap.beats), abs(mine.bpm - snap.bpm))
    assert worst < 1e-9
    for b in range(1, 60):                      # frame_at is the first frame reaching the beat
        f = m.frame_at(float(b))
        assert m.beats_at(f) >= b - 1e-7 > m.beats_at(f - 1)


def test_clock_state_runs_like_the_kernel_through_a_ramp():
    s = ClockState(0, 0.0, 120.0, 120.0, 0.0, 0).apply(126.0, 100)
    s = s.run(250, SR)
    assert s.bpm == 126.0 and s.left == 0 and s.step == 0.0
    bpm = 120.0 + 0.06 * np.arange(100)
    expect = (bpm.sum() + 150 * 126.0) / 60 / SR
    assert s.beats == pytest.approx(expect, rel=1e-13)


# -- ramps are smooth ------------------------------------------------------------------------------

def playback_rate(out: np.ndarray, scale: float, window: int = 441) -> np.ndarray:
    """The source frames played per output frame, from a ramp source (value =
    scale x source position, which the cubic interpolator reproduces exactly)."""
    x = out[:, 0].astype(np.float64)
    return (x[window::window] - x[:-window:window]) / (window * scale)


@pytest.mark.parametrize("ramp", [2.0, 0.0])
def test_tempo_ramp_changes_the_rate_without_a_step(rig, ramp):
    n = 8 * SR
    scale = 0.9 / n
    rig.load(100, "ramp.wav", np.repeat((scale * np.arange(n)).astype(np.float32)[:, None], 2, axis=1))
    rig.send("/play_stem", 100, 1.0, 1.0, 0, at=0)
    change = SR
    rig.send("/set_tempo", 126, ramp, at=change)
    out = rig.render(5 * SR)
    rate = playback_rate(out, scale)
    t = (np.arange(len(rate)) + 0.5) * 441            # window centres
    expect = np.interp(t, [change, change + ramp * SR + 1e-9], [1.0, 1.05])
    ok = slice(2, len(rate) - 1)                     # skip the start's 5 ms declick
    jumps = np.abs(np.diff(rate[ok]))
    if ramp:
        assert np.max(np.abs(rate[ok] - expect[ok])) < 5e-4
        assert np.max(jumps) < 1e-3                  # 0.05 spread over 200 windows: no step
    else:
        assert np.max(jumps) > 0.02                  # the measurement sees a step when there is one


# -- beats and bars to the frame ---------------------------------------------------------------------

@pytest.mark.parametrize("bpm,per_beat", [(120, 22050), (126, 21000)])
def test_beat_and_bar_positions_to_the_frame(rig, bpm, per_beat):
    rig.block = 64
    rig.send("/set_tempo", bpm, at=0)
    rig.send("/set_meter", 3, at=0)
    reporter = ClockReporter(rig.c, report_current=True)
    events = []
    for k in range(1, 8):
        f = k * per_beat
        assert rig.c.tempo.frame_at(k) == f
        rig.render_to(f - 1)
        events += reporter.poll()
        bar, beat, beats = rig.c.clock()
        assert (bar, beat) == ((k - 1) // 3 + 1, (k - 1) % 3 + 1)   # still in beat k (1-based)
        assert beats < k
        rig.render_to(f)
        events += reporter.poll()
        bar, beat, beats = rig.c.clock()
        assert (bar, beat) == (k // 3 + 1, k % 3 + 1)               # beat k + 1 starts here
        assert beats == pytest.approx(k, abs=1e-9)
    assert [(e.bar, e.beat) for e in events] == [((k // 3) + 1, k % 3 + 1) for k in range(8)]
    assert [e.frame for e in events] == [k * per_beat for k in range(8)]
    assert events[4].line() == f"bar 2 beat 2 phase 0.00 bpm {bpm:.1f}"


def test_reset_makes_bar_one_and_the_reporter_says_so(rig):
    rig.block = 64
    reporter = ClockReporter(rig.c)                  # the beat current now is not reported
    assert reporter.poll() == []
    rig.render_to(30000)
    assert [(e.bar, e.beat, e.frame) for e in reporter.poll()] == [(1, 2, 22050)]
    rig.send("/reset", at=31234)
    assert rig.c.grid.beat_zero == pytest.approx(31234 * 2 / SR) and rig.c.grid.meter == 4
    rig.render_to(31233)
    assert reporter.poll() == []                     # bar 1 is still ahead
    rig.render_to(31234)
    assert [(e.bar, e.beat, e.frame) for e in reporter.poll()] == [(1, 1, 31234)]
    rig.render_to(31234 + 4 * 22050 + 1)
    (ev,) = reporter.poll()                          # fell behind: only the latest beat
    assert (ev.bar, ev.beat, ev.frame) == (2, 1, 31234 + 4 * 22050)
    assert rig.c.tempo.next_boundary(31234 + 1, 4, rig.c.grid.beat_zero) == 31234 + 4 * 22050
    assert rig.c.clock()[:2] == (2, 1)


# -- quantised starts -----------------------------------------------------------------------------------

CASES = [
    # (setup messages, /play_stem quantize argument, at, expected first frame)
    ([("/quantize", 1)], (), 10000, 22050),
    ([("/quantize", 4)], (), 30000, 88200),
    ([("/quantize", "bar"), ("/set_meter", 3)], (), 30000, 66150),
    ([("/quantize", 4)], (0,), 30000, 30000),                       # the message turns it off
    ([], (2,), 30000, 44100),                                       # the message asks for it
    ([("/quantize", 1)], (), 44100, 44100),                         # on a boundary: at once
    ([("/set_tempo", 126), ("/quantize", 1)], (), 30000, 42000),
    ([("/reset",), ("/quantize", 1)], (), 40000, 12345 + 2 * 22050),  # /reset at 12345
    ([("/quantize", 8)], (), 1, 8 * 22050),
]


@pytest.mark.parametrize("setup,own,at,expect", CASES)
def test_quantised_play_stem_lands_on_the_beat_frame(rig, setup, own, at, expect):
    rig.load(100, "dc.wav", dc(0.5, 1.0))
    for address, *args in setup:
        rig.send(address, *args, at=12345 if address == "/reset" else 0)
    rig.send("/play_stem", 100, 1.0, 1.0, 0, 0.0, *own, at=at)
    out = rig.render(5 * SR)
    assert onset(out[:, 0]) == expect


def test_quantised_start_during_a_ramp_is_where_the_engine_counts_the_beat(rig):
    rig.load(100, "dc.wav", dc(0.5, 1.0))
    rig.send("/set_tempo", 150, 3.0, at=5000)        # a 3 s ramp 120 -> 150
    rig.send("/quantize", 1)
    rig.send("/play_stem", 100, 1.0, 1.0, 0, at=50000)
    start = rig.c.voices[100].start
    k = math.ceil(rig.c.tempo.beats_at(50000))
    assert start > 50000
    # the engine's own beat counter: short of beat k one frame before, there at the start
    before = rig.render_to(start - 1)
    assert rig.engine.stats()["beats"] < k - 1e-7
    before = np.concatenate([before, rig.render(1)])
    assert rig.engine.stats()["beats"] >= k - 1e-7
    assert not before.any()
    out = rig.render(SR)
    assert out[0, 0] != 0.0                          # sounding from exactly that frame


def test_quantised_start_before_the_engine_clock_uses_a_lookahead(tmp_path):
    rig = Rig(tmp_path, lookahead=256)
    rig.load(100, "dc.wav", dc(0.5, 1.0))
    rig.send("/quantize", 1)
    rig.render_to(22000)                             # 22050 is too close for a command posted now
    rig.send("/play_stem", 100, 1.0, 1.0, 0)
    out = rig.render(2 * SR)
    assert 22000 + onset(out[:, 0]) == 44100


def test_cue_and_start_group_start_together_on_the_coarsest_grid(rig):
    a, b = rig.file("a.wav", dc(0.25, 2.0)), rig.file("b.wav", dc(0.5, 2.0))
    rig.send("/quantize", 1)
    rig.send("/cue", "A", a, 0.0, 2, at=0)           # deck A asks for 2 beats, B for a bar
    rig.send("/cue", "B", b, 0.0, "bar", at=0)
    rig.send("/start_group", 0.5, "A", "B", at=0)    # 0.5 s = 22050: on a beat, not on a bar
    out = rig.render(4 * SR)
    assert onset(out[:, 0]) == 88200
    assert out[88200 + 300, 0] == pytest.approx(0.75 * 0.8, abs=1e-4)   # both decks, volume 0.8


def test_play_at_a_time_starts_on_the_next_bar(rig):
    path = rig.file("song.wav", dc(0.5, 4.0))
    rig.send("/play", "C", path, 0.3, 4, at=0)       # 0.3 s = 13230, quantize 4 beats
    out = rig.render(3 * SR)
    assert onset(out[:, 0]) == 88200


# -- beatmatching ----------------------------------------------------------------------------------------

def click_loop(bpm: float, beats: int, channel: int) -> np.ndarray:
    """A loop of ``beats`` beats with a 2 kHz Gaussian burst a quarter beat
    after every beat (clear of the loop seam), on one channel only; the burst
    centres are at exact fractional source positions."""
    per_beat = 60.0 * SR / bpm
    n = int(round(beats * per_beat))
    x = np.zeros((n, 2), np.float32)
    idx = np.arange(n, dtype=np.float64)
    for k in range(beats):
        c = (k + 0.25) * per_beat
        lo, hi = int(c) - 200, int(c) + 200
        t = idx[lo:hi] - c
        x[lo:hi, channel] = 0.5 * np.exp(-0.5 * (t / 20.0) ** 2) * np.sin(2 * np.pi * 2000 * t / SR)
    return x


def centroids(x: np.ndarray, guesses, half: int = 1500) -> np.ndarray:
    e = x.astype(np.float64) ** 2
    out = []
    for g in guesses:
        lo, hi = int(g) - half, int(g) + half
        w = e[lo:hi]
        assert w.sum() > 1.0, f"no click near frame {g}"
        out.append(lo + float(np.dot(np.arange(len(w)), w) / w.sum()))
    return np.array(out)


def test_stems_from_120_and_126_bpm_stay_beat_locked_for_five_minutes(rig):
    rig.block = 4096
    rig.load(100, "at120.wav", click_loop(120.0, 16, 0))           # --bpm is 120: the default
    rig.load(1100, "at126.wav", click_loop(126.0, 16, 1), 126)     # /load_buffer ... bpm
    rig.send("/set_tempo", 123, at=0)
    start = 10000
    for bid in (100, 1100):
        rig.send("/play_stem", bid, 1.0, 1.0, 1, at=start)
    # the master tempo wanders: ramps up and down, and one jump
    rig.send("/set_tempo", 126, 20.0, at=60 * SR)
    rig.send("/set_tempo", 118, 30.0, at=150 * SR)
    rig.send("/set_tempo", 124, at=240 * SR)
    out = rig.render(300 * SR)
    m = rig.c.tempo
    b0 = m.beats_at(start)
    last = int(m.beats_at(300 * SR - 2000) - b0 - 0.25)
    expected = []
    for k in range(last):                 # the clicks sit a quarter beat after each master beat
        target = b0 + k + 0.25
        f = m.frame_at(target)
        lo, hi = m.beats_at(f - 1), m.beats_at(f)
        expected.append(f - 1 + (target - lo) / (hi - lo))
    expected = np.array(expected)
    left = centroids(out[:, 0], expected)
    right = centroids(out[:, 1], expected)
    assert len(expected) > 600
    assert np.max(np.abs(left - right)) < 0.5        # the two songs, beat for beat
    assert np.max(np.abs(left - expected)) < 1.0     # and on the master clock
    assert np.max(np.abs(right - expected)) < 1.0


def test_stem_bpm_changes_a_playing_stem_at_once(rig):
    rig.load(100, "tone.wav", sine(441, 3.0, 0.5))
    rig.send("/play_stem", 100, 1.0, 1.0, 1, at=0)
    before = rig.render(SR // 2)[:, 0].astype(np.float64)
    rig.send("/stem_bpm", 100, 60)                   # made at 60 BPM: at 120 it plays twice as fast
    after = rig.render(SR // 2)[:, 0].astype(np.float64)
    assert peak_hz(before[4096:]) == pytest.approx(441, abs=1)
    assert peak_hz(after[4096:]) == pytest.approx(882, abs=2)
    rig.send("/stem_bpm", 100, 0)                    # 0: ignores the master tempo
    rig.send("/set_tempo", 150)
    steady = rig.render(SR // 2)[:, 0].astype(np.float64)
    assert peak_hz(steady[4096:]) == pytest.approx(441, abs=1)
    detail = json.loads(rig.c.handle("/status.json")[0][1][0])
    assert detail["decks"][0]["buffers"][0]["bpm"] == 0


def test_stem_bpm_validation_and_a_buffer_still_loading(rig):
    (fail,) = rig.c.handle("/stem_bpm", [100, 10])
    assert fail == ("/fail", ("/stem_bpm", "bpm 10 out of range: use 20..400 BPM, or 0 for a stem "
                                           "that ignores the tempo"))
    (fail,) = rig.c.handle("/stem_bpm", [100, 126])
    assert "buffer 100 is not loaded" in fail[1][1]


def test_one_shot_ends_where_the_tempo_map_says(rig):
    rig.load(100, "one.wav", dc(0.5, 2.0), 100)           # made at 100 BPM
    rig.send("/play_stem", 100, 1.0, 1.0, 0, at=1000)
    rig.send("/set_tempo", 140, 1.5, at=20000)
    rig.send("/set_tempo", 90, at=50000)
    predicted = rig.c.voices[100].end
    assert rig.c.plan()["end_frame"] == predicted
    rig.render(3 * SR)
    ended = {int(a): b for kind, a, b, _ in rig.engine.events() if kind == C.EV_ENDED}
    assert ended[100] == pytest.approx(predicted, abs=2)


# -- key lock through the Controller ---------------------------------------------------------------------

def needs_keylock(engine):
    if not engine.keylock_available:
        pytest.skip("librubberband2 is not installed")


def cents(hz, ref):
    return 1200 * np.log2(hz / ref)


def test_keylock_message_keeps_a_decks_pitch_at_a_new_tempo(rig):
    needs_keylock(rig.engine)
    for bid in (100, 1100):
        rig.load(bid, f"t{bid}.wav", sine(440, 4.0, 0.5))
    rig.send("/keylock", "A", 1, at=0)
    for bid in (100, 1100):
        rig.send("/play_stem", bid, 1.0, 1.0, 1, at=0)
    rig.send("/set_tempo", 132, at=0)                # ratio 1.1
    rig.send("/crossfade_levels", 1.0, 0.0, at=0)
    a = rig.render(3 * SR)[SR:SR + 65536, 0].astype(np.float64)
    assert abs(cents(peak_hz(a), 440.0)) <= 2.0      # deck A keeps its key
    rig.send("/crossfade_levels", 0.0, 1.0)
    b = rig.render(2 * SR)[SR // 2:SR // 2 + 32768, 0].astype(np.float64)
    assert peak_hz(b) == pytest.approx(484, abs=1)    # deck B: playback rate, pitch follows
    detail = json.loads(rig.c.handle("/status.json")[0][1][0])
    assert [d["keylock"] for d in detail["decks"]] == [True, False, False, False]
    st = detail["stretch"]
    assert st["default"] == "playback_rate" and st["keylock_available"] is True
    assert st["keylock_latency_frames"] == rig.engine.keylock_latency
    assert st["keylock_latency_ms"] == pytest.approx(1000 * rig.engine.keylock_latency / SR, abs=0.01)
    assert rig.engine.stats()["keylock_decks"] == [0]
    rig.send("/keylock", "A", 0)
    assert not rig.c.keylock[0]


def test_stretch_keylock_is_the_default_for_every_deck(tmp_path):
    rig = Rig(tmp_path, stretch="keylock")
    needs_keylock(rig.engine)
    rig.render(1024)
    assert rig.engine.stats()["keylock_decks"] == [0, 1, 2, 3]
    assert json.loads(rig.c.handle("/status.json")[0][1][0])["stretch"]["default"] == "keylock"


def test_keylock_without_rubber_band_fails_clearly(rig, caplog):
    rig.engine.close()                               # the stretchers are gone, as without the library
    (fail,) = rig.c.handle("/keylock", ["B", 1])
    assert fail[0] == "/fail" and fail[1][0] == "/keylock"
    assert "deck B: key lock needs Rubber Band's library (librubberband2)" in fail[1][1]
    assert "apt-get install librubberband2" in fail[1][1]
    assert rig.c.handle("/keylock", ["B", 0]) == []   # turning it off is always fine
    with caplog.at_level("WARNING", logger="stemdeck.control"):
        e = Engine(SR)
        e.close()
        c = Controller(e, stretch="keylock")
    assert c.keylock == [False] * 4
    assert any("--stretch keylock" in r.getMessage() and "librubberband2" in r.getMessage()
               for r in caplog.records)


def test_keylocked_and_plain_decks_stay_in_phase_across_an_instant_tempo_change(rig):
    needs_keylock(rig.engine)
    rig.load(100, "l.wav", click_loop(120.0, 8, 0))
    rig.load(1100, "r.wav", click_loop(120.0, 8, 1))
    rig.send("/keylock", "A", 1, at=0)
    for bid in (100, 1100):
        rig.send("/play_stem", bid, 1.0, 1.0, 1, at=20000)
    rig.send("/set_tempo", 132, at=3 * SR)
    out = rig.render(8 * SR)
    m = rig.c.tempo
    b0 = m.beats_at(20000)
    guesses = [m.frame_at(b0 + k + 0.25) for k in range(int(m.beats_at(7 * SR) - b0))]
    left, right = centroids(out[:, 0], guesses), centroids(out[:, 1], guesses)
    assert np.max(np.abs(left - right)) < SR / 1000   # within 1 ms


def test_a_quantised_group_that_waited_for_its_load_keeps_to_the_grid(rig):
    from concurrent.futures import Future

    class SlowLoader:                                # a load that finishes when the test says so
        def submit(self, path, sample_rate):
            f = Future()
            f.data = sf.read(path, dtype="float32", always_2d=True)[0]
            return f

        def close(self):
            pass

    path = rig.file("a.wav", dc(0.5, 2.0))
    rig.c.book.loader = SlowLoader()
    rig.send("/quantize", 1)
    rig.send("/cue", "A", path, at=0)
    rig.send("/start_group", 0.1, "A", at=0)        # 4410: waits for deck A's load
    rig.render_to(30000)                             # the load takes its time: 22050 is gone
    (job,) = rig.c.book.jobs.values()
    job.future.set_result(job.future.data)
    rig.c.book.finished.put(job.key)
    rig.c.poll()
    out = rig.render(2 * SR)
    assert 30000 + onset(out[:, 0]) == 44100          # the next beat, not a late start at 30000
