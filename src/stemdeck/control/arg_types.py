"""The argument types of the message table: how each reads a value (numbers, 0|1, text, paths, decks, bands, BPM, quantize) and words a refusal.

Each :class:`ArgType` in :data:`TYPES` converts one OSC value (or a score's
string) for an :class:`~stemdeck.control.spec.Arg` of that type, raising
:class:`Bad` with a reason written for the person who sent it; the table's
:func:`~stemdeck.control.spec.parse` prefixes the address. Conversions
accept what crowdstream's server accepted (numeric strings, any-case deck
letters, band prefixes) and refuse NaN, infinities and out-of-range values
instead of clamping them.

Pure Python, no numpy: any thread.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

from stemdeck.engine.commands import DECK_NAMES, DECKS, MAX_BPM, MIN_BPM

#: How a deck is named in help and errors: "A, B, C or D".
DECK_CHOICES = ", ".join(DECK_NAMES[:-1]) + " or " + DECK_NAMES[-1]


# -- argument types --------------------------------------------------------------------------

@dataclass(frozen=True)
class ArgType:
    name: str          # as written in the docs
    osc: str           # OSC type tag(s) accepted, as documented
    convert: Callable  # (value, arg) -> python value, raising Bad(reason)
    doc: str


class Bad(Exception):
    """A conversion failure; the message becomes ``<address>: <reason>``."""


def _is_bool(v) -> bool:
    return isinstance(v, bool)


def _number(value, arg) -> float:
    """int, float or numeric string (crowdstream converts with float()) -> finite float."""
    if _is_bool(value):
        raise Bad(f"{arg.name} {value!r} is a boolean, not a number")
    if isinstance(value, str):
        text = value.strip()
        try:
            v = float(text)
        except ValueError:
            raise Bad(f"{arg.name} {value!r} is not a number") from None
    else:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise Bad(f"{arg.name} {value!r} is not a number") from None
    if not math.isfinite(v):
        raise Bad(f"{arg.name} {_show(v)} is not a finite number")
    return v


def _show(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(float(f"{value:.7g}"))  # OSC floats are float32: show 0.8, not 0.800000011920929
    return repr(value)


def _as_sent(value, v):
    """Show a number as the client sent it (101, not 101.0); text as its number."""
    if isinstance(value, numbers.Integral) and not _is_bool(value):
        return repr(int(value))
    if isinstance(value, numbers.Real):
        return _show(float(value))
    return _show(v)


def _check_range(v, value, arg):
    if (arg.lo is not None and v < arg.lo) or (arg.hi is not None and v > arg.hi):
        raise Bad(f"{arg.name} {_as_sent(value, v)} out of range {bound_text(arg.lo)}..{bound_text(arg.hi)}"
                   + (f" {arg.unit}" if arg.unit else ""))
    return v


def bound_text(x) -> str:
    """A range bound as the docs and errors show it: 4, not 4.0; nothing for None."""
    if x is None:
        return ""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}"


def _conv_float(value, arg):
    return _check_range(_number(value, arg), value, arg)


def _conv_int(value, arg):
    v = _number(value, arg)
    if v != int(v):
        raise Bad(f"{arg.name} {_as_sent(value, v)} is not a whole number")
    return int(_check_range(int(v), value, arg))


def _conv_bool(value, arg):
    if _is_bool(value):
        return value
    v = _number(value, arg)
    if v not in (0.0, 1.0):
        raise Bad(f"{arg.name} {_as_sent(value, v)}: use 0 or 1")
    return v == 1.0


def _conv_string(value, arg):
    if isinstance(value, (bytes, bytearray)):
        raise Bad(f"{arg.name} is a blob; send a string")
    if _is_bool(value) or value is None or isinstance(value, (list, tuple)):
        raise Bad(f"{arg.name} {value!r} is not a string")
    return str(value)


def _conv_path(value, arg):
    if not isinstance(value, str):
        raise Bad(f"{arg.name} {_show(value)} is not a string: send the file path as a string")
    if not value.strip():
        raise Bad(f"{arg.name} is empty: send the path of an audio file")
    if "\x00" in value:
        raise Bad(f"{arg.name} contains a NUL byte")
    return value


def deck_index(value, name: str = "deck") -> int:
    """'A'..'D' (any case, as crowdstream), or 0..3 -> 0..3 (``DECKS`` decks)."""
    if isinstance(value, str):
        text = value.strip().upper()
        if len(text) == 1 and text in DECK_NAMES:
            return DECK_NAMES.index(text)
        if text.isdigit() and int(text) < DECKS:
            return int(text)
    elif not _is_bool(value) and isinstance(value, (int, float)) and float(value).is_integer() \
            and 0 <= value < DECKS:
        return int(value)
    raise Bad(f"{name} {_show(value)} unknown: use {DECK_CHOICES} (or 0..{DECKS - 1})")


def _conv_deck(value, arg):
    return deck_index(value, arg.name)


def _conv_band(value, arg):
    if isinstance(value, str):
        text = value.strip().lower()
        # crowdstream matches on the prefix: "lo", "low", "lows"; "mi", "mid"; "hi", "high"
        for i, prefix in enumerate(("lo", "mi", "hi")):
            if text.startswith(prefix):
                return i
        if text in ("0", "1", "2"):
            return int(text)
    elif not _is_bool(value) and isinstance(value, (int, float)) and float(value).is_integer() \
            and 0 <= value <= 2:
        return int(value)
    raise Bad(f"{arg.name} {_show(value)} unknown: use low, mid or high (or 0, 1, 2)")


#: ``/quantize`` and the per-message quantize option: beats between start points.
QUANTIZE_STEPS = (0, 1, 2, 4, 8)
QUANTIZE_BAR = "bar"


def _conv_bpm(value, arg):
    v = _number(value, arg)
    if v != 0.0 and not MIN_BPM <= v <= MAX_BPM:
        raise Bad(f"{arg.name} {_as_sent(value, v)} out of range: use {MIN_BPM:g}..{MAX_BPM:g} BPM, "
                   "or 0 for a stem that ignores the tempo")
    return v


def _conv_quantize(value, arg):
    if isinstance(value, str) and value.strip().lower() == QUANTIZE_BAR:
        return QUANTIZE_BAR
    v = _number(value, arg)
    if v not in QUANTIZE_STEPS:
        raise Bad(f"{arg.name} {_as_sent(value, v)}: use 0 (off), 1, 2, 4 or 8 beats, or bar")
    return int(v)


TYPES = {
    "int": ArgType("int", "i", _conv_int, "a whole number (a float with no fraction is accepted)"),
    "float": ArgType("float", "f", _conv_float, "a number (an int is accepted)"),
    "bool": ArgType("0|1", "i", _conv_bool, "0 or 1 (OSC true/false accepted)"),
    "string": ArgType("string", "s", _conv_string, "text"),
    "path": ArgType("path", "s", _conv_path, "an audio file path (WAV, FLAC, OGG, MP3, ...)"),
    "deck": ArgType("deck", "s|i", _conv_deck, f"{DECK_CHOICES} (or 0..{DECKS - 1})"),
    "band": ArgType("band", "s|i", _conv_band, "low, mid or high (or 0, 1, 2)"),
    "bpm": ArgType("bpm", "f", _conv_bpm,
                   f"a tempo, {MIN_BPM:g}..{MAX_BPM:g} BPM, or 0 (the stem ignores the tempo)"),
    "quantize": ArgType("beats", "i|s", _conv_quantize,
                        "0 (off), 1, 2, 4 or 8 beats, or bar (the meter's beats)"),
}
