"""Key lock: Rubber Band in the render path keeps pitch while the rate moves,
stays aligned with decks that are not keylocked, and switches without clicks."""

import numpy as np
import pytest

from stemdeck.engine import commands as C
from enginetools import loaded, render
from signals import SR, onset, onsets, peak_hz, sine

pytestmark = pytest.mark.filterwarnings("ignore")


def keylock_engine(samples, **kw):
    e = loaded(samples, **kw)
    if not e.keylock_available:
        pytest.skip("librubberband2 is not installed (apt-get install librubberband2)")
    return e


def cents(hz, ref):
    return 1200 * np.log2(hz / ref)


@pytest.mark.parametrize("rate", [0.9, 1.1])
@pytest.mark.parametrize("block", [128, 1024])
def test_keylock_holds_pitch_at_any_rate(rate, block):
    e = keylock_engine({100: sine(440, 4.0, 0.5)})
    e.set_keylock(0, True)
    e.play(100, rate=rate, loop=True)
    out = render(e, SR * 3, block)[SR:SR + 65536, 0].astype(np.float64)
    assert abs(cents(peak_hz(out), 440.0)) <= 2.0
    assert e.stats()["keylock_starved_frames"] == 0


@pytest.mark.parametrize("rate", [0.9, 1.1])
def test_without_keylock_pitch_follows_the_rate(rate):
    e = loaded({100: sine(440, 4.0, 0.5)})
    e.play(100, rate=rate, loop=True)
    out = render(e, SR * 2)[SR // 2:SR // 2 + 65536, 0].astype(np.float64)
    assert peak_hz(out) == pytest.approx(440 * rate, abs=0.5)


def clicks(seconds: float, every: float, channel: int) -> np.ndarray:
    """Short 3 kHz bursts on one channel only."""
    x = np.zeros((int(seconds * SR), 2), np.float32)
    burst = (0.8 * np.sin(2 * np.pi * 3000 * np.arange(132) / SR) * np.hanning(132)).astype(np.float32)
    for start in range(0, len(x) - 200, int(every * SR)):
        x[start:start + 132, channel] = burst
    return x


def click_onsets(x: np.ndarray) -> np.ndarray:
    """Where each burst of :func:`clicks` rises through 0.2 (a burst's own cycles are one click)."""
    return onsets(x, 0.2, gap=SR // 20)


def test_a_keylocked_deck_stays_in_phase_with_a_plain_deck():
    # deck A (keylocked) clicks on the left, deck B (plain) on the right; both
    # scheduled on the same frame at rate 1.05: the clicks must coincide
    e = keylock_engine({100: clicks(4.0, 0.5, 0), 1100: clicks(4.0, 0.5, 1)})
    e.set_keylock(0, True)
    start = 20000
    for bid in (100, 1100):
        e.play(bid, rate=1.05, loop=True, at=start)
    out = render(e, SR * 4, 256)
    left, right = click_onsets(out[:, 0]), click_onsets(out[:, 1])
    assert right[0] == pytest.approx(start, abs=60)           # the click's rise
    # every click of the keylocked deck sits on its plain twin (the stretcher
    # softens the very first transient out of silence, so match click by click)
    pairs = [(r, left[np.argmin(np.abs(left - r))]) for r in right[1:]]
    assert len(pairs) >= 6
    assert max(abs(l - r) for r, l in pairs) <= SR // 1000     # within 1 ms
    # and the envelopes as a whole line up
    a, b = np.abs(out[40000:, 0]).astype(float), np.abs(out[40000:, 1]).astype(float)
    n = len(a)
    cc = np.fft.irfft(np.fft.rfft(a, 2 * n) * np.conj(np.fft.rfft(b, 2 * n)))
    lag = int(np.argmax(np.concatenate([cc[-500:], cc[:500]]))) - 500
    assert abs(lag) <= SR // 1000
    assert e.stats()["late_commands"] == 0


def test_a_keylocked_one_shot_ends_when_a_plain_one_does():
    e = keylock_engine({100: sine(440, 1.0, 0.5), 1100: sine(440, 1.0, 0.5)})
    e.set_keylock(0, True)
    for bid in (100, 1100):
        e.play(bid, rate=1.1, at=10000)
    render(e, SR * 2, 512)
    ended = {int(a): b for kind, a, b, _ in e.events() if kind == C.EV_ENDED}
    assert ended[1100] == pytest.approx(10000 + SR / 1.1, abs=2)
    assert ended[100] == pytest.approx(ended[1100], abs=2)


@pytest.mark.parametrize("rate", [1.0, 1.06])
def test_switching_keylock_while_playing_is_click_free(rate):
    e = keylock_engine({100: sine(220, 6.0, 0.5)})
    e.play(100, rate=rate, loop=True)
    e.set_keylock(0, True, at=SR)
    e.set_keylock(0, False, at=3 * SR)
    e.set_keylock(0, True, at=4 * SR)
    out = render(e, 5 * SR, 256)[:, 0]
    steady = np.max(np.abs(np.diff(out[SR // 2:SR - 100])))
    # a click is a step of the order of the amplitude; a clean switch moves no
    # faster than the waveform (plus what the stretcher adds to its peaks)
    assert np.max(np.abs(np.diff(out[SR // 2:]))) <= steady * 1.5
    assert np.min(np.abs(out[SR + 300:SR + 3000]).max()) > 0.4      # no gap
    assert e.stats()["keylock_starved_frames"] == 0


def test_keylock_follows_a_tempo_ramp_without_changing_pitch():
    e = keylock_engine({100: sine(440, 8.0, 0.5)})
    e.set_source_bpm(100, 120.0)
    e.set_keylock(0, True)
    e.play(100, loop=True)
    e.set_tempo(132.0, ramp=2.0, at=SR)
    out = render(e, 5 * SR, 256)[:, 0].astype(np.float64)
    assert abs(cents(peak_hz(out[int(3.5 * SR):int(3.5 * SR) + 32768]), 440.0)) <= 2.0
    assert e.stats()["keylock_starved_frames"] == 0


def test_keylock_off_returns_the_deck_to_the_timeline_once_silent():
    e = keylock_engine({100: sine(440, 0.5, 0.5, phase=1.0)})
    e.set_keylock(0, True)
    e.play(100)
    render(e, SR, 512)
    e.set_keylock(0, False)
    render(e, SR, 512)
    assert e.state.kl_i[0, 0] == 0                       # KI_MODE back to plain
    e.events()
    e.play(100, at=e.frame + 1000)
    out = render(e, 4000, 512)
    assert onset(out[:, 0]) == 1000          # no lookahead shift any more


def test_keylock_without_rubber_band_is_reported_and_harmless():
    e = loaded({100: sine(440, 1.0, 0.5)})
    e.close()                                           # the stretchers are gone
    e.play(100, rate=1.1, loop=True)
    e.set_keylock(0, True)
    out = render(e, SR // 2)[:, 0].astype(np.float64)
    assert (C.EV_KEYLOCK_UNAVAILABLE, 0.0, 0.0, 0.0) in e.events()
    assert peak_hz(out[4096:4096 + 16384]) == pytest.approx(484, abs=3)   # plays on, unlocked


@pytest.mark.parametrize("ramp", [0.0, 0.05])
def test_a_live_tempo_change_brings_the_keylocked_deck_back_in_phase(ramp):
    # sent with no notice (as from a sensor): the keylocked deck had already
    # rendered a lookahead at the old tempo; it slides back into phase with
    # its plain twin within five lookaheads and stays there
    e = keylock_engine({100: clicks(8.0, 0.25, 0), 1100: clicks(8.0, 0.25, 1)})
    for bid in (100, 1100):
        e.set_source_bpm(bid, 120.0)
    e.set_keylock(0, True)
    for bid in (100, 1100):
        e.play(bid, loop=True, at=10000)
    first = render(e, 2 * SR, 256)
    e.set_tempo(132.0, ramp=ramp)                    # now, no lookahead of notice
    out = np.concatenate([first, render(e, 4 * SR, 256)])
    settled = 2 * SR + 5 * e.keylock_latency + 512
    left, right = click_onsets(out[settled:, 0]), click_onsets(out[settled:, 1])
    pairs = [(r, left[np.argmin(np.abs(left - r))]) for r in right]
    assert len(pairs) >= 8
    assert max(abs(l - r) for r, l in pairs) <= SR // 1000
    assert e.stats()["keylock_starved_frames"] == 0
