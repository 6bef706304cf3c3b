"""Movement -> tempo: ``/dance/total_movement`` steers the master tempo.

The mapping and its JSON file are crowdstream's (``audio-mixer/bpm_config.json``,
``docs/BPM_CONFIGURATION.md``), so an existing file works unchanged::

    {"movement_bpm": {
        "movement_max_value": 0.6,
        "thresholds":  {"very_very_low": 0.02, "very_low": 0.05, "low": 0.10, "medium": 0.10},
        "bpm_targets": {"very_very_low": 105.0, "very_low": 110.0, "low": 115.0,
                        "medium": 118.0, "high_max": 130.0},
        "smoothing":   {"transition_time_seconds": 30.0, "audio_loop_rate_hz": 100.0,
                        "smoothing_factor_up": 0.96, "smoothing_factor_down": 0.92}}}

Movement. A value up to 1 is taken as already normalised (0..1); a larger
one is a raw value, divided by ``movement_max_value``; then clamped to 0..1.

Target tempo, evaluated in this order (crowdstream's): below
``very_very_low`` -> its target; below ``very_low`` -> its target; below
``low`` -> its target; below ``medium`` -> the ``medium`` target; from
``medium`` up, linearly from the ``medium`` target to ``high_max``, reached at
a movement of 0.6 (crowdstream's "max expected movement"; the optional key
``max_expected_movement`` changes it) and held above.

Glide. The tempo does not jump: each message starts a linear ramp from the
tempo at that frame to the target, taking ``glide_down`` seconds when the
target is slower and ``glide_up`` when it is faster. A detector sends several
messages a second, so the tempo moves toward the target at (target - tempo)
/ glide BPM per second, re-aimed at every message: crowdstream's exponential
smoothing with that time constant; after the last message the tempo arrives
within one glide time. With crowdstream's numbers:

- ``glide_down`` = ``transition_time_seconds`` (30 s): crowdstream's stable
  factor, exp(-1 / (transition_time x loop rate)), is a time constant of
  exactly the transition time, and it is what crowdstream uses for decreases;
- ``glide_up`` = ``transition_time`` x ln(``smoothing_factor_up``) /
  ln(``smoothing_factor_down``) (30 x ln 0.96 / ln 0.92 = 14.7 s): the two
  factors' documented roles (``smoothing_factor_down``, the smaller, "when
  BPM is increasing - faster"; ``smoothing_factor_up`` "when BPM is
  decreasing - slower") set how much faster a rise is than a fall.

``audio_loop_rate_hz`` is accepted and checked but has no effect: stemdeck's
ramps are per sample, not per audio loop. (crowdstream applied the 0.92
factor per audio loop, which made a rise take a fraction of a second.)

A missing or bad file is reported in one clear message and the documented
defaults are used; keys left out of a good file take their defaults (as in
crowdstream). Thresholds out of order are allowed (crowdstream's own
defaults have ``low`` = ``medium``: that band is empty by design), but what
the order does (a target never used, a step in the rise) is described in
:attr:`MovementConfig.notes`.

Pure Python; any thread.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace

from stemdeck.engine.commands import MAX_BPM, MAX_RAMP_S, MIN_BPM
from stemdeck.errors import StemdeckError

BANDS = ("very_very_low", "very_low", "low", "medium")
TARGETS = ("very_very_low", "very_low", "low", "medium", "high_max")


class MovementConfigError(StemdeckError):
    """A movement tempo file that cannot be used (the text says why and where)."""


@dataclass(frozen=True)
class MovementConfig:
    """Thresholds, targets and glide times (crowdstream's documented defaults)."""
    movement_max_value: float = 0.6
    threshold_very_very_low: float = 0.02
    threshold_very_low: float = 0.05
    threshold_low: float = 0.10
    threshold_medium: float = 0.10
    bpm_very_very_low: float = 105.0
    bpm_very_low: float = 110.0
    bpm_low: float = 115.0
    bpm_medium: float = 118.0
    bpm_high_max: float = 130.0
    transition_time_seconds: float = 30.0
    audio_loop_rate_hz: float = 100.0
    smoothing_factor_up: float = 0.96
    smoothing_factor_down: float = 0.92
    max_expected_movement: float = 0.6
    source: str = "defaults"                      # where the values came from
    notes: tuple[str, ...] = field(default=(), compare=False)

    # -- the mapping --------------------------------------------------------------------------
    def normalise(self, value: float) -> float:
        """Movement 0..1: values up to 1 as they are, larger ones / movement_max_value."""
        v = float(value)
        if v > 1.0:
            v = v / self.movement_max_value
        return min(max(v, 0.0), 1.0)

    def target_bpm(self, value: float) -> float:
        """The tempo a movement value asks for (crowdstream's bands)."""
        m = self.normalise(value)
        if m < self.threshold_very_very_low:
            return self.bpm_very_very_low
        if m < self.threshold_very_low:
            return self.bpm_very_low
        if m < self.threshold_low:
            return self.bpm_low
        if m < self.threshold_medium:
            return self.bpm_medium
        span = self.max_expected_movement - self.threshold_medium
        factor = min((m - self.threshold_medium) / span, 1.0) if span > 0 else 0.0
        return self.bpm_medium + factor * (self.bpm_high_max - self.bpm_medium)

    @property
    def glide_down(self) -> float:
        """Seconds a glide to a slower tempo takes (the transition time)."""
        return self.transition_time_seconds

    @property
    def glide_up(self) -> float:
        """Seconds a glide to a faster tempo takes."""
        return self.transition_time_seconds * math.log(self.smoothing_factor_up) / \
            math.log(self.smoothing_factor_down)

    def glide(self, current_bpm: float, target_bpm: float) -> float:
        """Seconds of the ramp from ``current_bpm`` toward ``target_bpm`` (at most an hour)."""
        return min(self.glide_up if target_bpm > current_bpm else self.glide_down, MAX_RAMP_S)

    def describe(self) -> dict:
        """For status replies and the start-up log."""
        return {
            "source": self.source,
            "thresholds": [self.threshold_very_very_low, self.threshold_very_low, self.threshold_low,
                           self.threshold_medium],
            "bpm_targets": [self.bpm_very_very_low, self.bpm_very_low, self.bpm_low, self.bpm_medium,
                            self.bpm_high_max],
            "glide_up_s": round(self.glide_up, 3),
            "glide_down_s": round(self.glide_down, 3),
        }

    # -- reading the file -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data, source: str = "<dict>") -> "MovementConfig":
        """Validate a parsed file (the whole document, with its ``movement_bpm``
        object). Raises MovementConfigError listing every problem."""
        if not isinstance(data, dict):
            raise MovementConfigError(f"{source}: the file must hold a JSON object with a "
                                      "\"movement_bpm\" object inside")
        section = data.get("movement_bpm", {})
        if not isinstance(section, dict):
            raise MovementConfigError(f"{source}: \"movement_bpm\" must be an object")
        problems: list[str] = []
        values: dict = {}

        def number(path, raw, lo, hi, lo_open=False, hi_open=False):
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
                problems.append(f"{path} is {json.dumps(raw)}: need a number")
                return None
            v = float(raw)
            if (v < lo or (lo_open and v == lo)) or (v > hi or (hi_open and v == hi)):
                left = "(" if lo_open else "["
                right = ")" if hi_open else "]"
                problems.append(f"{path} is {raw}: need a number in {left}{lo:g}, {hi:g}{right}")
                return None
            return v

        def group(name):
            g = section.get(name, {})
            if not isinstance(g, dict):
                problems.append(f"movement_bpm.{name} must be an object")
                return {}
            return g

        for key, attr, lo, hi, lo_open in (("movement_max_value", "movement_max_value", 0.0, 1e9, True),
                                            ("max_expected_movement", "max_expected_movement", 0.0, 1.0, True)):
            if key in section:
                v = number(f"movement_bpm.{key}", section[key], lo, hi, lo_open)
                if v is not None:
                    values[attr] = v
        for name, keys, prefix, lo, hi in (("thresholds", BANDS, "threshold_", 0.0, 1.0),
                                           ("bpm_targets", TARGETS, "bpm_", MIN_BPM, MAX_BPM)):
            g = group(name)
            for key in g:
                if key not in keys:
                    problems.append(f"movement_bpm.{name}.{key} is not a known key "
                                    f"(known: {', '.join(keys)})")
            for key in keys:
                if key in g:
                    v = number(f"movement_bpm.{name}.{key}", g[key], lo, hi)
                    if v is not None:
                        values[prefix + key] = v
        smoothing = group("smoothing")
        for key, lo, hi, lo_open, hi_open in (("transition_time_seconds", 0.0, MAX_RAMP_S, True, False),
                                              ("audio_loop_rate_hz", 0.0, 1e6, True, False),
                                              ("smoothing_factor_up", 0.0, 1.0, True, True),
                                              ("smoothing_factor_down", 0.0, 1.0, True, True)):
            if key in smoothing:
                v = number(f"movement_bpm.smoothing.{key}", smoothing[key], lo, hi, lo_open, hi_open)
                if v is not None:
                    values[key] = v
        if problems:
            raise MovementConfigError(f"{source}: " + "; ".join(problems))
        config = cls(source=source, **values)
        return replace(config, notes=tuple(_unreachable(config)))

    @classmethod
    def from_file(cls, path: str) -> "MovementConfig":
        """Read a crowdstream ``bpm_config.json``; MovementConfigError if it is
        missing, not JSON, or holds a bad value."""
        shown = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise MovementConfigError(f"{shown}: no such file") from None
        except OSError as exc:
            raise MovementConfigError(f"{shown}: cannot read it: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MovementConfigError(f"{shown}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
        return cls.from_dict(data, shown)


def _unreachable(c: MovementConfig) -> list[str]:
    """What the if-chain makes of thresholds out of order."""
    cuts = [c.threshold_very_very_low, c.threshold_very_low, c.threshold_low]
    notes = []
    for i in (1, 2):
        if cuts[i] <= max(cuts[:i]):
            notes.append(f"thresholds.{BANDS[i]} {cuts[i]:g} is not above the thresholds before it: "
                         f"its target ({getattr(c, 'bpm_' + BANDS[i]):g} BPM) is never used")
    below = max(cuts)
    if c.threshold_medium < below:
        jump = c.target_bpm(below)
        notes.append(f"thresholds.medium {c.threshold_medium:g} is below {below:g}: movement between "
                     f"them keeps the lower bands' targets, and the rise toward high_max starts at "
                     f"{below:g} with a step to {jump:.1f} BPM")
    return notes


def load_movement_config(path: str | None, log=None) -> MovementConfig:
    """``--bpm-config``: the file's settings, or (no path, or a missing or bad
    file) the documented defaults, with one clear warning saying why. Notes
    about unreachable bands are logged as info."""
    if path is None:
        return MovementConfig()
    try:
        config = MovementConfig.from_file(path)
    except MovementConfigError as exc:
        if log is not None:
            log.warning("--bpm-config %s; using the default movement tempo settings "
                        "(thresholds 0.02/0.05/0.10/0.10, targets 105/110/115/118..130 BPM, "
                        "30 s glide)", exc)
        return MovementConfig(source=f"defaults ({exc})")
    if log is not None:
        for note in config.notes:
            log.info("--bpm-config %s: %s", config.source, note)
    return config
