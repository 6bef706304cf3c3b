"""Decks and master: the isolator EQ, the DJ knob, crossfader curves, the limiter, ramps."""

import numpy as np
import pytest

from stemdeck.engine.dsp.crossfade import crossfader_gains
from stemdeck.engine.dsp.eq import knob_to_gain, gain_to_knob
from enginetools import loaded, render
from signals import SR, db, dc, rms, sine

BAND_CENTRES = {0: 80.0, 1: 790.0, 2: 8000.0}   # low, mid (geometric centre), high


def level_through_deck(freq, gains=(1.0, 1.0, 1.0), deck_id=100, amp=0.25):
    """RMS gain (dB) of a sine through one deck's EQ, after the filters settle."""
    e = loaded({deck_id: sine(freq, 1.5, amp)}, eq=True, limiter=False)
    deck = (deck_id - 100) // 1000
    for band, g in enumerate(gains):
        e.set_deck_eq(deck, band, g)
    e.play(deck_id, loop=True)
    out = render(e, SR)[SR // 2:, 0]
    return db(rms(out) / (amp / np.sqrt(2)))


@pytest.mark.parametrize("freq", [30, 100, 250, 500, 1000, 2500, 5000, 12000, 18000])
def test_eq_at_unity_is_flat_within_half_a_db(freq):
    assert abs(level_through_deck(freq)) <= 0.5


@pytest.mark.parametrize("band", [0, 1, 2])
def test_killing_a_band_takes_its_centre_down_30db(band):
    gains = [1.0, 1.0, 1.0]
    gains[band] = 0.0
    assert level_through_deck(BAND_CENTRES[band], tuple(gains)) <= -30.0


@pytest.mark.parametrize("band", [0, 1, 2])
def test_full_boost_adds_6db_at_the_band_centre(band):
    gains = [1.0, 1.0, 1.0]
    gains[band] = knob_to_gain(100)
    assert level_through_deck(BAND_CENTRES[band], tuple(gains)) == pytest.approx(6.0, abs=0.5)


def test_the_eq_works_on_every_deck():
    for deck_id in (100, 1100, 2100, 3100):
        assert level_through_deck(80.0, (0.0, 1.0, 1.0), deck_id) <= -30.0


FOUR_DECKS = {100: (80.0, (0.0, 1.0, 1.0)), 1100: (790.0, (1.0, 2.0, 1.0)),
              2100: (8000.0, (1.0, 1.0, 0.3)), 3100: (250.0, (0.5, 0.7, 1.6))}


def four_deck_mix(only=None):
    """Each deck plays its own tone through its own EQ setting (``only``:
    just that deck). Several live decks go through the EQ's all-decks SIMD
    loop, a single one through the per-deck loop."""
    ids = [only] if only is not None else list(FOUR_DECKS)
    e = loaded({bid: sine(FOUR_DECKS[bid][0], 1.5, 0.2) for bid in ids}, eq=True, limiter=False)
    for bid in ids:
        for band, g in enumerate(FOUR_DECKS[bid][1]):
            e.set_deck_eq((bid - 100) // 1000, band, g)
        e.play(bid, loop=True)
    return render(e, SR)


def test_four_decks_mix_as_the_sum_of_each_alone():
    """The decks' EQs run side by side when no knob moves; each deck must
    still sound exactly as it does alone (the filters are linear)."""
    together = four_deck_mix()
    alone = sum(four_deck_mix(bid) for bid in FOUR_DECKS)
    assert rms(together) > 0.1
    assert np.max(np.abs(together - alone)) < 1e-5


def test_killed_low_band_on_all_four_decks():
    e = loaded({bid: sine(80.0, 1.5, 0.25) for bid in FOUR_DECKS}, eq=True, limiter=False)
    for deck in range(4):
        e.set_deck_eq(deck, 0, 0.0)
    for bid in FOUR_DECKS:
        e.play(bid, loop=True)
    out = render(e, SR)[SR // 2:, 0]
    assert db(rms(out) / (4 * 0.25 / np.sqrt(2))) <= -30.0


def test_dj_knob_mapping():
    assert knob_to_gain(0) == 0.0
    assert knob_to_gain(50) == pytest.approx(1.0)
    assert db(knob_to_gain(100)) == pytest.approx(6.0, abs=0.05)
    assert db(knob_to_gain(25)) == pytest.approx(-12.04, abs=0.05)
    knobs = np.linspace(0, 100, 101)
    gains = [knob_to_gain(k) for k in knobs]
    assert np.all(np.diff(gains) > 0)
    for k in (0, 10, 50, 75, 100):
        assert gain_to_knob(knob_to_gain(k)) == pytest.approx(k)
    for bad in (-1, 100.5, float("nan")):
        with pytest.raises(ValueError):
            knob_to_gain(bad)


@pytest.mark.parametrize("curve,pos,expected", [
    ("linear", 0.0, (1.0, 0.0)), ("linear", 0.5, (0.5, 0.5)), ("linear", 1.0, (0.0, 1.0)),
    ("constant-power", 0.0, (1.0, 0.0)), ("constant-power", 0.5, (np.sqrt(0.5), np.sqrt(0.5))),
    ("constant-power", 1.0, (0.0, 1.0)),
    ("cut", 0.0, (1.0, 0.0)), ("cut", 0.5, (1.0, 1.0)), ("cut", 1.0, (0.0, 1.0)),
])
def test_crossfader_curves(curve, pos, expected):
    assert crossfader_gains(pos, curve) == pytest.approx(expected, abs=1e-12)


def test_crossfader_bad_values():
    for args in ((1.5, "linear"), (float("nan"), "linear"), (0.5, "smooth")):
        with pytest.raises(ValueError):
            crossfader_gains(*args)


def test_crossfader_gains_act_on_decks_a_and_b_only():
    e = loaded({100: sine(300, 1.0, 0.2), 1100: sine(500, 1.0, 0.2), 2100: sine(700, 1.0, 0.2)})
    for bid in (100, 1100, 2100):
        e.play(bid, loop=True)
    e.set_crossfader_gains(*crossfader_gains(0.0, "linear"))
    out = render(e, SR // 2)[SR // 4:, 0].astype(np.float64)
    spec = np.abs(np.fft.rfft(out))
    f = np.fft.rfftfreq(len(out), 1 / SR)
    level = {hz: spec[np.argmin(np.abs(f - hz))] for hz in (300, 500, 700)}
    assert level[500] < level[300] * 1e-3      # deck B silent at position 0
    assert level[700] == pytest.approx(level[300], rel=0.02)   # deck C untouched


def test_limiter_keeps_every_sample_inside_full_scale():
    loud = {100 + i: sine(100 * (i + 1), 1.0, 0.9) for i in range(4)}
    e = loaded(loud, eq=True)
    for bid in loud:
        e.play(bid, volume=4.0, loop=True)
    e.set_master(4.0)
    out = render(e, SR)
    assert np.max(np.abs(out)) <= 1.0
    assert e.stats()["limiter_active_blocks"] > 0


def test_limiter_is_transparent_below_its_threshold():
    quiet = sine(440, 1.0, 0.6)
    results = []
    for on in (True, False):
        e = loaded({100: quiet}, eq=True, limiter=on)
        e.play(100, loop=True)
        results.append(render(e, SR))
    assert np.array_equal(results[0], results[1])


def test_limiter_recovers_after_a_peak():
    e = loaded({100: sine(440, 2.0, 0.6)}, eq=False)
    e.play(100, loop=True)
    e.set_volume(100, 3.0, at=SR // 4)
    e.set_volume(100, 1.0, at=SR // 2)
    out = render(e, SR * 2)[:, 0]
    assert np.max(np.abs(out)) <= 1.0
    # a second later the gain is back at unity: the level matches the input's
    assert np.max(np.abs(out[-SR // 2:])) == pytest.approx(0.6, rel=0.01)


def test_nan_in_a_sample_never_reaches_the_output():
    bad = sine(440, 0.5, 0.5)
    bad[1000:1010] = np.nan
    e = loaded({100: bad}, eq=True)
    e.play(100)
    out = render(e, 4000)
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0


@pytest.mark.parametrize("setter", ["deck_level", "eq", "crossfader", "master"])
def test_every_gain_change_is_ramped(setter):
    e = loaded({100: dc(0.5, 1.0)})
    e.play(100, loop=True)
    at = 5000
    if setter == "deck_level":
        e.set_deck_level(0, 0.1, at=at)
    elif setter == "eq":
        e.set_eq_enabled(False)
        e.set_deck_level(0, 1.0)
        e.set_crossfader_gains(0.1, 1.0, at=at)
    elif setter == "crossfader":
        e.set_crossfader_gains(0.1, 1.0, at=at)
    else:
        e.set_master(0.1, at=at)
    out = render(e, 8000, 128)[:, 0]
    assert out[at - 1] == pytest.approx(0.5)
    assert out[at] < 0.5
    assert out[-1] == pytest.approx(0.05, abs=1e-6)
    assert np.max(np.abs(np.diff(out[1000:]))) <= 0.45 / round(0.005 * SR) * 1.01


def test_eq_gain_change_is_ramped_on_the_filtered_path():
    e = loaded({100: sine(80, 2.0, 0.5)}, eq=True)
    e.play(100, loop=True)
    e.set_deck_eq(0, 0, 0.0, at=SR // 2)
    out = render(e, SR)[:, 0]
    steady = np.max(np.abs(np.diff(out[SR // 4:SR // 2])))
    # killing the bass mid-note: the wave fades over 5 ms, no step
    assert np.max(np.abs(np.diff(out[SR // 2 - 100:]))) <= steady * 1.05
