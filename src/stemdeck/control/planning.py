"""Planning without audio: :class:`RecordingEngine`, the engine face that records every command and renders nothing.

``stemdeck render`` runs a score through the Controller on it first (with
:class:`~stemdeck.media.simple_loaders.ProbeLoader`), so every bad line is
found, and the music's length known, before any audio is rendered; tests use
it to check what a message posts. It implements
:class:`~stemdeck.engine.face.EngineFace` with ``renders = False``: its
clock moves with the messages it is given.
"""

from __future__ import annotations

from typing import Any

from stemdeck.engine.commands import DEFAULT_KEYLOCK_ENGINE


class RecordingEngine:
    """The Engine's control API without audio: records every command.

    For planning a render (how long the score's music lasts, which files are
    missing) and for tests that check what a message posts."""

    renders = False          # its clock moves with the messages (engine.face.EngineFace)
    keylock_engine = DEFAULT_KEYLOCK_ENGINE

    def __init__(self, sample_rate: int = 44100, base_bpm: float = 120.0):
        self.sample_rate = int(sample_rate)
        self.base_bpm = float(base_bpm)
        self.frame = 0
        self.calls: list[tuple[str, tuple, dict]] = []
        self._next_slot = 0
        self._samples: dict[int, Any] = {}

    def add_sample(self, data) -> int:
        slot = self._next_slot
        self._next_slot += 1
        self._samples[slot] = data
        self.calls.append(("add_sample", (slot, data.shape), {}))
        return slot

    def discard_slot(self, slot: int) -> None:
        self._samples.pop(slot, None)

    def sample_of(self, slot):
        return self._samples.get(slot)

    def events(self):
        return []

    def ring_free(self) -> int:
        return 1 << 30       # it records; nothing fills

    def commands_dropped(self) -> int:
        return 0

    def stats(self) -> dict:
        return {"frame": self.frame, "voices": 0, "late_commands": 0, "bpm": self.base_bpm,
                "beats": 0.0, "samples": len(self._samples)}

    @property
    def keylock_available(self) -> bool:
        """As the real engine would say: whether Rubber Band's library loads."""
        from stemdeck.engine.rubberband import RubberBand

        return RubberBand.load() is not None

    @property
    def keylock_latency(self) -> int:
        from stemdeck.engine.rubberband import lookahead_frames

        return lookahead_frames(self.sample_rate, self.keylock_engine)

    def __getattr__(self, name):
        if name in _ENGINE_COMMANDS:
            def record(*args, **kwargs):
                self.calls.append((name, args, kwargs))
                return True
            return record
        raise AttributeError(name)


_ENGINE_COMMANDS = frozenset({
    "bind", "unbind", "play", "stop", "stop_all", "stop_deck", "set_volume", "set_rate",
    "set_source_bpm", "set_deck_level", "set_deck_eq", "set_crossfader_gains", "set_master",
    "set_tempo", "set_limiter", "set_keylock",
})
