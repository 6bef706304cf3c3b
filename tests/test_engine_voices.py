"""Voices: resampling quality, exact timing, loops, sections, declick, events."""

import numpy as np
import pytest

from stemdeck.engine import Engine
from stemdeck.engine import commands as C
from enginetools import loaded, render
from signals import SR, dc, peak_hz, sine

DECLICK = round(0.005 * SR)


def test_rate_105_moves_1khz_to_1050hz_with_spurs_60db_down():
    e = loaded({100: sine(1000, 3.0, 0.5)}, eq=True, limiter=False)
    e.play(100, rate=1.05, loop=True)
    out = render(e, SR * 2)[SR // 2:SR // 2 + 65536, 0].astype(np.float64)
    assert abs(peak_hz(out) - 1050.0) < 1.0
    spec = np.abs(np.fft.rfft(out * np.blackman(len(out))))
    k = int(np.argmax(spec))
    main = spec[k]
    spec[max(0, k - 12):k + 13] = 0             # the main lobe of the Blackman window
    assert 20 * np.log10(spec.max() / main) < -60


def test_play_scheduled_at_frame_n_starts_exactly_there_in_any_block_size():
    for block in (64, 100, 1024):
        e = loaded({100: dc(0.5, 1.0)})
        e.play(100, at=5000)
        out = render(e, 8000, block)[:, 0]
        assert np.all(out[:5000] == 0.0), block
        assert out[5000] > 0.0, block
        # the declick: full level after 5 ms, reached by a ramp, not a step
        assert out[5000 + DECLICK] == pytest.approx(0.5, abs=1e-6)
        assert np.max(np.abs(np.diff(out[4990:5300]))) <= 0.5 / DECLICK * 1.01


def test_stop_at_frame_fades_out_over_5ms_from_that_frame():
    e = loaded({100: dc(0.5, 1.0)})
    e.play(100, loop=True)
    e.stop(100, at=10000)
    out = render(e, 12000, 128)[:, 0]
    assert out[9999] == pytest.approx(0.5)
    assert out[10000] < 0.5
    assert np.all(out[10000 + DECLICK:] == 0.0)
    assert np.max(np.abs(np.diff(out[9000:11000]))) <= 0.5 / DECLICK * 1.01
    assert e.stats()["voices"] == 0


def test_one_shot_plays_its_length_to_the_frame_and_reports_the_end():
    e = loaded({100: dc(0.25, frames=1000)})
    e.play(100, at=300)
    out = render(e, 2000, 64)[:, 0]
    nonzero = np.flatnonzero(out)
    assert nonzero[0] == 300 and nonzero[-1] == 1299
    ended = [ev for ev in e.events() if ev[0] == C.EV_ENDED]
    assert ended == [(C.EV_ENDED, 100.0, 1300.0, 0.0)]


def test_section_one_shot_length_to_the_frame():
    e = loaded({100: sine(440, 2.0, 0.5)})
    e.play(100, section=(0.5, 0.25))            # 22050 .. 33075
    out = render(e, SR, 512)[:, 0]
    nz = np.flatnonzero(np.abs(out) > 0)
    assert nz[-1] - nz[0] + 1 <= 11025
    assert nz[-1] - nz[0] + 1 >= 11025 - 2     # the sine's own zero crossings at the ends
    assert [ev[2] for ev in e.events() if ev[0] == C.EV_ENDED] == [11025.0]


def test_section_loop_repeats_with_its_exact_period():
    # 0.1 s section of a 440 Hz tone: 4410 frames, 44 periods of 100.2 frames (a seam
    # that does not line up with the waveform, which the loop crossfade must smooth)
    e = loaded({100: sine(440, 2.0, 0.5)})
    e.play(100, loop=True, section=(0.5, 0.1))
    out = render(e, 30000, 256)[:, 0]
    period = 4410
    a, b = out[10000:10000 + period], out[10000 + period:10000 + 2 * period]
    assert np.max(np.abs(a - b)) < 1e-6


def test_loop_seams_have_no_clicks():
    # full-buffer loop (no audio before the start: fades out and in) and a section
    # loop (crossfades into the audio before the section), both on a sine whose
    # length is not a whole number of periods
    for section in (None, (0.3, 0.1037)):
        e = loaded({100: sine(441.3, 0.5037, 0.5)})
        e.play(100, loop=True, section=section)
        out = render(e, SR * 2, 512)[:, 0]
        # a click would be a step the size of the waveform (0.5); a seam that is
        # smoothed moves no faster than the sine plus the 5 ms fade's own slope
        steady = np.max(np.abs(np.diff(sine(441.3, 0.1, 0.5)[:, 0])))
        assert np.max(np.abs(np.diff(out))) <= steady + 2 * 0.5 / DECLICK, section


def test_restart_of_a_playing_stem_declicks_the_old_voice():
    e = loaded({100: dc(0.5, 2.0)})
    e.play(100, loop=True)
    e.play(100, loop=True, start=0.5, at=8000)
    out = render(e, 12000, 256)[:, 0]
    assert np.max(np.abs(np.diff(out))) <= 0.5 / DECLICK * 1.01 + 1e-6


def test_start_position_is_a_fraction_of_the_buffer():
    ramp = np.repeat(np.linspace(0, 1, 10000, dtype=np.float32)[:, None], 2, axis=1)
    e = loaded({100: np.ascontiguousarray(ramp)})
    e.play(100, start=0.5)
    out = render(e, 400)[:, 0]
    # after the declick, the values are the ramp from its middle on
    assert out[300] == pytest.approx(ramp[5300, 0], abs=1e-5)


def test_int16_and_mono_samples_play_like_float_stereo():
    x = sine(300, 0.5, 0.5)
    i16 = np.round(x[:, :1] * 32767).astype(np.int16)
    e1 = loaded({100: x})
    e2 = loaded({100: np.ascontiguousarray(i16)})
    for e in (e1, e2):
        e.play(100, rate=1.3)
    a, b = render(e1, 8000), render(e2, 8000)
    assert np.max(np.abs(a - b)) < 1e-4
    assert np.array_equal(b[:, 0], b[:, 1])


def test_volume_change_ramps_instead_of_stepping():
    e = loaded({100: dc(0.5, 1.0)})
    e.play(100, loop=True)
    e.set_volume(100, 0.2, at=5000)
    out = render(e, 8000, 100)[:, 0]
    assert out[4999] == pytest.approx(0.5)
    assert out[5000] < 0.5 and out[5000] > 0.49
    assert out[5000 + DECLICK] == pytest.approx(0.1, abs=1e-6)
    assert np.max(np.abs(np.diff(out[4000:]))) < 0.4 / DECLICK * 1.01


def test_unbind_releases_the_sample_after_its_voice_fades():
    e = loaded({})
    slot = e.add_sample(dc(0.5, 1.0))
    e.bind(100, slot)
    e.play(100, loop=True)
    render(e, 1000)
    e.unbind(100)
    render(e, 1000)
    released = [ev for ev in e.events() if ev[0] == C.EV_SLOT_RELEASED]
    assert released == [(C.EV_SLOT_RELEASED, float(slot), 0.0, 0.0)]
    assert e.sample_of(slot) is None


def test_play_of_an_unbound_buffer_is_reported_not_played():
    e = Engine()
    e.play(1234)
    out = render(e, 512)
    assert not out.any()
    assert (C.EV_UNBOUND, float(C.OP_PLAY), 1234.0, 0.0) in e.events()


def test_rebinding_a_playing_buffer_crossfades_to_the_new_sample():
    e = loaded({})
    e.bind(100, e.add_sample(dc(0.5, 1.0)))
    e.play(100, loop=True)
    render(e, 4000)
    e.bind(100, e.add_sample(dc(-0.25, 1.0)))
    out = render(e, 4000, 64)[:, 0]
    assert out[-1] == pytest.approx(-0.25)
    assert np.max(np.abs(np.diff(out))) <= 0.75 / DECLICK * 1.05


def test_a_loop_cut_to_loop_plays_through_its_seam_untouched():
    # a whole number of sine periods: the seam is continuous, so no fade at all
    x = sine(441.0, 1.0, 0.5)                     # exactly 441 periods
    e = loaded({100: x})
    e.play(100, loop=True)
    out = render(e, 3 * SR, 512)[:, 0]
    steady = out[SR // 2:SR // 2 + SR]               # one full loop, seam included
    assert np.min(np.abs(out[SR - 300:SR + 300]).max()) > 0.49
    assert np.allclose(out[SR + 1000:2 * SR], x[1000:, 0], atol=1e-6)
    assert np.max(np.abs(np.diff(steady))) <= np.max(np.abs(np.diff(x[:, 0]))) * 1.01


def test_a_constant_level_loop_keeps_its_level_across_the_seam():
    e = loaded({100: dc(0.5, frames=20000)})
    e.play(100, loop=True)
    out = render(e, 100000, 256)[:, 0]
    assert np.min(out[DECLICK + 10:]) == pytest.approx(0.5)
