"""The render path as a whole: block-size independence, determinism, the
command ring under pressure, late commands, the clock and tempo, bad input."""

import numpy as np
import pytest

from stemdeck.engine import Engine
from stemdeck.engine import commands as C
from stemdeck.errors import CommandError
from stemdeck.tools.workload import build_reference_workload
from enginetools import loaded, render
from signals import SR, dc, sine


def scripted_mix(block: int, frames: int = SR) -> np.ndarray:
    """Every kind of command, scheduled at odd frames, rendered at ``block``."""
    e = loaded({100: sine(220, 0.7, 0.5), 101: sine(330, 0.9, 0.5), 1100: sine(550, 0.45, 0.5),
                2100: sine(97, 1.3, 0.5)}, eq=True)
    e.play(100, loop=True, rate=1.07)
    e.play(1100, at=1001, loop=True, section=(0.1, 0.2))
    e.play(2100, at=3333, rate=0.77)
    e.set_deck_eq(0, 0, 0.2, at=4097)
    e.set_crossfader_gains(0.3, 0.9, ramp=0.1, at=7000)
    e.set_source_bpm(100, 120.0)
    e.set_tempo(131.0, ramp=0.2, at=9001)
    e.play(101, at=12345, volume=2.5)
    e.set_volume(101, 0.1, ramp=0.05, at=20000)
    e.stop(100, at=30001)
    e.set_master(0.5, at=40000)
    return render(e, frames, block)


def test_any_block_size_renders_what_one_long_block_renders():
    reference = scripted_mix(SR)
    for block in (1, 63, 64, 65, 100, 1024, 4097):
        out = scripted_mix(block)
        assert np.max(np.abs(out - reference)) <= 1e-6, block


def test_same_commands_same_bytes():
    assert scripted_mix(512).tobytes() == scripted_mix(512).tobytes()


def test_reference_workload_renders_and_stays_bounded():
    e = Engine()
    ids = build_reference_workload(e, stems=16, seconds=2)
    out = render(e, SR, 128)
    assert len(ids) == 16 and e.stats()["voices"] == 16
    assert 0.01 < np.sqrt(np.mean(out ** 2)) and np.max(np.abs(out)) <= 1.0


def test_a_full_command_ring_drops_and_counts_instead_of_blocking():
    e = Engine(ring_size=64)
    results = [e.set_master(0.5) for _ in range(100)]
    assert results.count(True) == 64 and results.count(False) == 36
    assert e.stats()["dropped_commands"] == 36
    render(e, 128)                         # the engine drains it; room again
    assert e.set_master(0.7)
    assert e.stats()["commands"] == 64


def test_a_late_command_runs_at_once_and_is_counted():
    e = loaded({100: dc(0.5, 1.0)})
    render(e, 1000)
    e.play(100, at=200)                    # 800 frames in the past
    out = render(e, 256)
    assert out[0, 0] > 0
    assert e.stats()["late_commands"] == 1
    assert (C.EV_LATE, float(C.OP_PLAY), 800.0, 100.0) in e.events()


def test_commands_at_the_same_frame_apply_in_the_order_sent():
    e = loaded({100: dc(0.5, 1.0)})
    e.play(100, loop=True)
    e.set_volume(100, 0.1, at=500)
    e.set_volume(100, 0.3, at=500)
    out = render(e, 2000)
    assert out[-1, 0] == pytest.approx(0.15)


def test_beat_clock_counts_beats_from_frames():
    e = Engine()
    render(e, SR * 3)
    assert e.stats()["beats"] == pytest.approx(6.0, abs=1e-9)      # 120 BPM
    e.set_tempo(126.0)
    render(e, SR * 10)
    assert e.stats()["beats"] == pytest.approx(6.0 + 21.0, abs=1e-9)


def test_tempo_ramp_glides_the_rate_without_a_step():
    # a stem with a source tempo follows the master tempo; a ramp 120 -> 132
    # over one second moves its pitch smoothly by 10 %
    e = loaded({100: sine(1000, 4.0, 0.5)})
    e.set_source_bpm(100, 120.0)
    e.play(100, loop=True)
    e.set_tempo(132.0, ramp=1.0, at=SR // 2)
    out = render(e, SR * 2 + SR // 2, 512)[:, 0].astype(np.float64)
    # instantaneous frequency from zero crossings
    k = np.flatnonzero((out[:-1] < 0) & (out[1:] >= 0))
    crossings = k + out[k] / (out[k] - out[k + 1])        # to a fraction of a sample
    freq = SR / np.diff(crossings)
    assert freq[:20].mean() == pytest.approx(1000, abs=2)
    assert freq[-20:].mean() == pytest.approx(1100, abs=2)
    assert np.max(np.abs(np.diff(freq))) < 1.0       # no jump between cycles
    assert e.stats()["bpm"] == 132.0
    beats = 2 * 0.5 + (120 + 132) / 2 / 60 * 1.0 + 132 / 60 * 1.0
    # the ramp moves in per-frame steps, half a step behind the continuous glide
    # on average: 12 BPM * 0.5 / 60 / 44100 = 2.3e-6 beats
    assert e.stats()["beats"] == pytest.approx(beats, abs=3e-6)


@pytest.mark.parametrize("call,message", [
    (lambda e: e.play(100, rate=float("nan")), "rate nan"),
    (lambda e: e.play(100, rate=5.0), "rate 5.0 out of range 0.25..4"),
    (lambda e: e.play(100, volume=float("inf")), "volume inf"),
    (lambda e: e.play(100, start=1.5), "start position 1.5"),
    (lambda e: e.play(-1), "buffer ID -1"),
    (lambda e: e.play("100"), "buffer ID '100'"),
    (lambda e: e.set_deck_level(4, 1.0), "deck 4: use 0..3"),
    (lambda e: e.set_deck_eq(0, 3, 1.0), "EQ band 3"),
    (lambda e: e.set_deck_eq(0, 0, 2.5), "EQ gain 2.5"),
    (lambda e: e.set_tempo(0), "bpm 0"),
    (lambda e: e.set_master(-0.1), "master volume -0.1"),
])
def test_bad_arguments_are_refused_with_a_reason_and_change_nothing(call, message):
    e = Engine()
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(".", r"\.")):
        call(e)
    assert e.stats()["commands"] == 0
    render(e, 64)
    assert e.stats()["commands"] == 0


def test_render_refuses_a_wrong_output_array():
    e = Engine()
    for bad in (np.zeros((64, 2), np.float64), np.zeros((64, 1), np.float32),
                np.zeros((2, 64), np.float32).T, np.zeros((0, 2), np.float32)):
        with pytest.raises(ValueError):
            e.render(bad)


def test_48k_engine_and_unsupported_rates():
    e = Engine(48000)
    assert e.sample_rate == 48000
    render(e, 4800)
    assert e.stats()["beats"] == pytest.approx(0.2)
    with pytest.raises(CommandError, match="44100 or 48000"):
        Engine(22050)


def test_clock_snapshot_is_the_clock_at_the_last_block_boundary():
    e = Engine()
    snap = e.clock_snapshot()
    assert snap["frame"] == 0 and snap["bpm"] == 120.0 and snap["beats"] == 0.0
    e.set_tempo(132.0, ramp=1.0)
    render(e, 1000, 256)
    snap = e.clock_snapshot()
    assert snap["frame"] == 1000
    assert snap["beats"] == e.stats()["beats"]
    assert snap["bpm"] == pytest.approx(120.0 + 12.0 * 1000 / SR)
    assert snap["bpm_target"] == 132.0 and snap["ramp_frames"] == SR - 1000


def test_clock_snapshot_is_consistent_while_the_audio_thread_runs():
    # a reader on another thread never sees the frame of one block with the
    # beats of another: at 120 BPM, beats == frame / 22050 exactly
    import threading

    e = Engine()
    stop = threading.Event()
    out = np.zeros((64, 2), np.float32)

    def audio():
        while not stop.is_set():
            e.run_callback(out)

    t = threading.Thread(target=audio)
    t.start()
    try:
        for _ in range(20000):
            snap = e.clock_snapshot()
            assert snap["beats"] == pytest.approx(snap["frame"] / 22050.0, abs=1e-9)
    finally:
        stop.set()
        t.join()


def test_an_untimed_commands_grouping_frame_is_not_a_deadline():
    # a live message with no time is posted a block ahead (Soon) so that its
    # commands land together; if the audio thread gets there first they run
    # at once and are not counted late. A real deadline that passes is.
    from stemdeck.engine.commands import Soon

    e = loaded({100: dc(0.5, 1.0)})
    render(e, 1000)
    e.play(100, loop=True, at=Soon(500))
    out = render(e, 256)
    assert out[0, 0] > 0 and e.stats()["late_commands"] == 0
    e.set_volume(100, 0.2, at=600)
    render(e, 256)
    assert e.stats()["late_commands"] == 1
