"""What the Controller reports: ``/status.reply`` (scsynth's layout), the summary figures and ``/status.json``'s detail, read from its parts and the engine.

Control thread (the status handlers); the reporter thread never calls these.
"""

from __future__ import annotations

from stemdeck.control import spec
from stemdeck.control.osc_wire import Double
from stemdeck.control.tempo import engine_clock
from stemdeck.engine.commands import DECK_NAMES, DECKS


def summary(ctl) -> dict:
    """The summary figures by name (spec.STATUS_FIELDS; the server's ``status`` hook adds its own)."""
    st = ctl.engine.stats()
    bar, beat, _ = ctl.clock()
    info = {name: 0 for name, _, _ in spec.STATUS_FIELDS}
    info.update(
        sample_rate=ctl.sample_rate,
        buffers_loaded=sum(1 for b in ctl.buffers.values() if b.state == "ready"),
        voices_playing=int(st.get("voices", 0)),
        bpm=float(st.get("bpm", ctl.bpm)),
        beat=beat, bar=bar,
        late_commands=int(st.get("late_commands", 0)),
    )
    extra = ctl.hooks.get("status")
    if extra is not None:
        info.update(extra())
    return info


def args(ctl) -> tuple:
    """``/status.reply``'s arguments as scsynth lays them out (spec.SCSYNTH_STATUS_FIELDS)."""
    info = summary(ctl)
    out = []
    for _name, tag, _sc, _ours, source in spec.SCSYNTH_STATUS_FIELDS:
        value = info[source] if isinstance(source, str) else source
        out.append(int(value) if tag == "i" else Double(value) if tag == "d" else float(value))
    return tuple(out)


def detail(ctl) -> dict:
    """``/status.json``: the summary plus tempo, stretch, movement, cache and every deck."""
    from stemdeck.engine.dsp.eq import gain_to_knob

    info = summary(ctl)
    info["meter"] = ctl.meter
    info["loading"] = ctl.loading
    timeline, sr = ctl.timeline, ctl.sample_rate
    grid = timeline.grid
    snap = engine_clock(ctl.engine)
    bar, beat, phase = grid.position(snap.beats)
    info["frame"] = snap.frame            # the engine's clock: frames rendered since start
    info["tempo"] = {
        "bpm": round(snap.bpm, 4), "target_bpm": round(timeline.tempo.target(), 4),
        "ramp_s": round(snap.left / sr, 3), "base_bpm": ctl.base_bpm,
        "bar": bar, "beat": beat, "phase": round(phase, 4), "meter": grid.meter,
        "beats": round(max(snap.beats - grid.beat_zero, 0.0), 4), "quantize": timeline.quantize,
    }
    latency = int(ctl.engine.keylock_latency)
    info["stretch"] = {
        "default": ctl.stretch,
        "keylock_available": bool(ctl.engine.keylock_available),
        "keylock_engine": ctl.engine.keylock_engine,
        "keylock_latency_frames": latency,
        "keylock_latency_ms": round(1000.0 * latency / sr, 2),
    }
    info["movement"] = {"enabled": ctl.movement_bpm, "value": ctl.movement,
                        "target_bpm": ctl.movement_target, **ctl.movement_config.describe()}
    cache = ctl.book.media("cache_status")
    if cache is not None:
        info["cache"] = cache
    info["decks"] = []
    for d in range(DECKS):
        bufs = [b for b in ctl.buffers.values() if b.deck == d]
        info["decks"].append({
            "deck": DECK_NAMES[d],
            "level": ctl.levels[d],
            "eq_percent": [round(gain_to_knob(g), 2) for g in ctl.eq[d]],
            "keylock": ctl.keylock[d],
            "cued": ctl.armed[d][0] if d in ctl.armed else None,
            "buffers": [{"id": b.id, "name": b.name, "path": b.path, "state": b.state,
                         "seconds": round(b.frames / sr, 3), "bpm": b.bpm,
                         "playing": timeline.playing(b.id)} for b in sorted(bufs, key=lambda b: b.id)],
        })
    return info


def show(v) -> str:
    """A status value in the ``/get_status`` log line."""
    return f"{v:.2f}" if isinstance(v, float) else str(v)
