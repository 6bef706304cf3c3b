"""How a setting's raw value (flag or environment text, a TOML value) becomes a typed value, or an error naming where it came from; how values are shown.

The validators here are the ``parse`` and ``show`` columns of
:data:`stemdeck.config.table.SETTINGS`. A validator raises :class:`Invalid`
(with a hint when one helps); :func:`parse_value` turns that into the
:class:`~stemdeck.errors.UsageError` a person sees.

Control thread only (start-up). Standard library only.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from stemdeck.engine.commands import MAX_BPM, MIN_BPM, SAMPLE_RATES
from stemdeck.errors import UsageError

# difflib, ipaddress and json are imported where used: most runs need none, and
# every subcommand's --help imports this module.


class Invalid(ValueError):
    """A raw value a validator refuses; ``hint`` is appended to the message."""

    def __init__(self, hint: str = ""):
        super().__init__(hint)
        self.hint = hint


# --- validators: raw value (flag/env text, or a TOML value) -> typed value ---


def _is_number(raw: object) -> bool:
    return isinstance(raw, (int, float)) and not isinstance(raw, bool)


def whole(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
        return int(raw)
    raise Invalid()


def real(raw: object) -> float:
    if _is_number(raw):
        value = float(raw)
    elif isinstance(raw, str) and re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", raw):
        value = float(raw)
    else:
        raise Invalid()
    if not math.isfinite(value):
        raise Invalid()
    return value


def whole_in(lo: int, hi: int) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        value = whole(raw)
        if not lo <= value <= hi:
            raise Invalid()
        return value

    return parse


def choice(choices: Iterable[str]) -> Callable[[object], str]:
    choices = tuple(choices)

    def parse(raw: object) -> str:
        if isinstance(raw, str) and raw.strip().lower() in choices:
            return raw.strip().lower()
        import difflib

        close = difflib.get_close_matches(str(raw).strip().lower(), choices, n=1)
        raise Invalid(f"did you mean {close[0]}?" if close else "")

    return parse


def parse_sample_rate(raw: object) -> int:
    try:
        value = whole(raw)
    except Invalid:
        # "44.1" or "48k": say what was probably meant.
        text = str(raw).strip().lower().rstrip("khz ")
        try:
            khz = float(text)
        except ValueError:
            raise Invalid() from None
        matches = [r for r in SAMPLE_RATES if abs(r / 1000 - khz) < 0.05]
        raise Invalid(f"did you mean {matches[0]}?" if matches else "") from None
    if value not in SAMPLE_RATES:
        matches = [r for r in SAMPLE_RATES if value * 1000 == r or (value == 44 and r == 44100)]
        raise Invalid(f"did you mean {matches[0]}?" if matches else "")
    return value


def parse_device(raw: object) -> int | str:
    # An index stays an int; anything else is a name to match by substring.
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            raise Invalid()
        return raw
    if isinstance(raw, str) and raw.strip():
        text = raw.strip()
        return int(text) if text.isdigit() else text
    raise Invalid()


def parse_latency(raw: object) -> str | float:
    if isinstance(raw, str) and raw.strip().lower() in ("low", "high"):
        return raw.strip().lower()
    try:
        seconds = real(raw)
    except Invalid:
        text = str(raw).strip().lower()
        m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*ms", text)
        raise Invalid(f"for {m.group(1)} ms write {float(m.group(1)) / 1000:g}" if m else "") from None
    if not 0.001 <= seconds <= 1.0:
        hint = f"for {seconds:g} ms write {seconds / 1000:g}" if 1 < seconds <= 1000 else ""
        raise Invalid(hint)
    return seconds


_HOSTNAME = (r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def parse_host(raw: object) -> str:
    if not isinstance(raw, str):
        raise Invalid()
    import ipaddress

    text = raw.strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if re.fullmatch(_HOSTNAME, text) and not re.fullmatch(r"[\d.]+", text):
        return text  # resolved when the server binds, not here (DNS may be slow)
    raise Invalid()


def parse_stats_interval(raw: object) -> float:
    value = real(raw)
    if value != 0 and not 0.1 <= value <= 3600:
        raise Invalid()
    return value


def parse_on_off(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise Invalid()


def parse_file_path(raw: object) -> str:
    text = str(raw).strip() if isinstance(raw, str) else ""
    if not text:
        raise Invalid()
    return os.path.expanduser(text)


#: ``quit_from``'s words for common sets of networks.
QUIT_FROM_WORDS = {"local": ("127.0.0.0/8", "::1/128"), "any": ("0.0.0.0/0", "::/0"), "none": ()}


def parse_quit_from(raw: object) -> tuple[str, ...]:
    """``local``, ``any``, ``none`` or addresses/networks (comma-separated, or a TOML list)."""
    import ipaddress

    items = raw if isinstance(raw, (list, tuple)) else str(raw).replace(",", " ").split()
    nets: list[str] = []
    for item in items:
        text = str(item).strip().lower()
        try:
            found = QUIT_FROM_WORDS[text] if text in QUIT_FROM_WORDS else \
                (str(ipaddress.ip_network(text, strict=False)),)
        except ValueError:
            raise Invalid(f"{item!r} is not an address or network") from None
        nets += [n for n in found if n not in nets]
    if not items:
        raise Invalid()
    return tuple(nets)


def show_quit_from(nets: tuple[str, ...]) -> str:
    for word, value in QUIT_FROM_WORDS.items():
        if set(nets) == set(value):
            return {"local": "this machine (loopback)", "any": "anyone",
                    "none": "nobody (stop with SIGINT/SIGTERM)"}[word]
    return ", ".join(nets)


def parse_bpm(raw: object) -> float:
    value = real(raw)
    if not MIN_BPM <= value <= MAX_BPM:
        raise Invalid()
    return value


# --- how values are shown at start-up ---


def latency_text(frames: int, sample_rate: int) -> str:
    """``256 frames = 5.8 ms at 44100 Hz``."""
    return f"{frames} frames = {frames / sample_rate * 1000:.1f} ms at {sample_rate} Hz"


def show_latency(value: object) -> str:
    return value if isinstance(value, str) else f"{value * 1000:g} ms"


# --- a value as written, with where it came from ---


def _quote(raw: object) -> str:
    """The raw value as the user wrote it: text as is, TOML values as TOML."""
    if not isinstance(raw, str):
        try:
            raw = toml_value(raw)
        except TypeError:
            raw = str(raw)
    return f"'{raw}'"


def _invalid(setting, raw: object, where: str, exc: Invalid) -> UsageError:
    message = f"{setting.label} {_quote(raw)} (from {where}) must be {setting.valid}"
    if exc.hint:
        message += f"; {exc.hint}"
    return UsageError(message)


def parse_value(setting, raw: object, where: str) -> Any:
    """``setting.parse(raw)`` (a :class:`~stemdeck.config.table.Setting`), or a
    UsageError naming the setting, the value as written, where it came from
    and what is valid."""
    try:
        return setting.parse(raw)
    except Invalid as exc:
        raise _invalid(setting, raw, where, exc) from None


def toml_key(key: str) -> str:
    import json

    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        import json

        # A JSON string is a TOML basic string, except that TOML also forbids a raw DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "isoformat"):  # dates and times, as tomllib returns them
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
