"""Settings: the one table of what a user can set, and where each value came from.

Every setting (buffer size, sample rate, device, ...) is one row of
:data:`SETTINGS`: its command-line flag, environment variable(s), key in
``stemdeck.toml``, validator, default and help text. Precedence, highest
first:

1. the command-line flag (``--buffer-size 256``);
2. the environment (``AUDIO_BUFFER_SIZE``, then ``STEMDECK_BUFFER_SIZE``);
3. one config file: ``--config FILE`` (or ``STEMDECK_CONFIG``), else
   ``./stemdeck.toml``, else ``$XDG_CONFIG_HOME/stemdeck/stemdeck.toml``
   (``~/.config/stemdeck/stemdeck.toml``); the first that exists is read,
   files are not merged;
4. the default, which for the buffer size and cache depends on the machine
   (:mod:`stemdeck.platform_info`).

Tools call :func:`add_arguments` on their parser and :func:`resolve` in
``run``; the :class:`Settings` it returns knows each value's source, the
warnings to show, and the lines to print at start-up. A bad value anywhere
raises :class:`~stemdeck.errors.UsageError` (exit status 2) naming where it
came from and what is valid. :func:`write_config` updates a stemdeck.toml in
place for ``stemdeck tune --write-config``.

To add a setting, add one row to ``SETTINGS`` (and a test); nothing else.

Control thread only (start-up). Standard library only (and the engine's
plain facts, :mod:`stemdeck.engine.commands`): imported by every subcommand,
so it must stay cheap.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stemdeck.engine.commands import (DEFAULT_KEYLOCK_ENGINE, KEYLOCK_ENGINES, MAX_BPM, MIN_BPM, STRETCH_MODES,
                                      SAMPLE_RATES)
from stemdeck.errors import UsageError

# tomllib, difflib, ipaddress and json are imported where used: most runs
# need none of them, and every subcommand's --help imports this module.

if TYPE_CHECKING:
    from stemdeck.platform_info import PlatformInfo

CONFIG_FILE_NAME = "stemdeck.toml"
CONFIG_ENV = "STEMDECK_CONFIG"

BUFFER_SIZE_MIN = 32
BUFFER_SIZE_MAX = 8192
POWERS_OF_TWO = tuple(2**n for n in range(5, 14))  # 32 .. 8192
BACKENDS = ("portaudio", "null")


class _Invalid(ValueError):
    """A raw value a validator refuses; ``hint`` is appended to the message."""

    def __init__(self, hint: str = ""):
        super().__init__(hint)
        self.hint = hint


# --- validators: raw value (flag/env text, or a TOML value) -> typed value ---


def _is_number(raw: object) -> bool:
    return isinstance(raw, (int, float)) and not isinstance(raw, bool)


def _whole(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
        return int(raw)
    raise _Invalid()


def _real(raw: object) -> float:
    if _is_number(raw):
        value = float(raw)
    elif isinstance(raw, str) and re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", raw):
        value = float(raw)
    else:
        raise _Invalid()
    if not math.isfinite(value):
        raise _Invalid()
    return value


def _whole_in(lo: int, hi: int) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        value = _whole(raw)
        if not lo <= value <= hi:
            raise _Invalid()
        return value

    return parse


def _choice(choices: Iterable[str]) -> Callable[[object], str]:
    choices = tuple(choices)

    def parse(raw: object) -> str:
        if isinstance(raw, str) and raw.strip().lower() in choices:
            return raw.strip().lower()
        import difflib

        close = difflib.get_close_matches(str(raw).strip().lower(), choices, n=1)
        raise _Invalid(f"did you mean {close[0]}?" if close else "")

    return parse


def _parse_sample_rate(raw: object) -> int:
    try:
        value = _whole(raw)
    except _Invalid:
        # "44.1" or "48k": say what was probably meant.
        text = str(raw).strip().lower().rstrip("khz ")
        try:
            khz = float(text)
        except ValueError:
            raise _Invalid() from None
        matches = [r for r in SAMPLE_RATES if abs(r / 1000 - khz) < 0.05]
        raise _Invalid(f"did you mean {matches[0]}?" if matches else "") from None
    if value not in SAMPLE_RATES:
        matches = [r for r in SAMPLE_RATES if value * 1000 == r or (value == 44 and r == 44100)]
        raise _Invalid(f"did you mean {matches[0]}?" if matches else "")
    return value


def _parse_device(raw: object) -> int | str:
    # An index stays an int; anything else is a name to match by substring.
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            raise _Invalid()
        return raw
    if isinstance(raw, str) and raw.strip():
        text = raw.strip()
        return int(text) if text.isdigit() else text
    raise _Invalid()


def _parse_latency(raw: object) -> str | float:
    if isinstance(raw, str) and raw.strip().lower() in ("low", "high"):
        return raw.strip().lower()
    try:
        seconds = _real(raw)
    except _Invalid:
        text = str(raw).strip().lower()
        m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*ms", text)
        raise _Invalid(f"for {m.group(1)} ms write {float(m.group(1)) / 1000:g}" if m else "") from None
    if not 0.001 <= seconds <= 1.0:
        hint = f"for {seconds:g} ms write {seconds / 1000:g}" if 1 < seconds <= 1000 else ""
        raise _Invalid(hint)
    return seconds


_HOSTNAME = (r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def _parse_host(raw: object) -> str:
    if not isinstance(raw, str):
        raise _Invalid()
    import ipaddress

    text = raw.strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if re.fullmatch(_HOSTNAME, text) and not re.fullmatch(r"[\d.]+", text):
        return text  # resolved when the server binds, not here (DNS may be slow)
    raise _Invalid()


def _parse_stats_interval(raw: object) -> float:
    value = _real(raw)
    if value != 0 and not 0.1 <= value <= 3600:
        raise _Invalid()
    return value


def _parse_on_off(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise _Invalid()


def _parse_file_path(raw: object) -> str:
    text = str(raw).strip() if isinstance(raw, str) else ""
    if not text:
        raise _Invalid()
    return os.path.expanduser(text)


#: ``quit_from``'s words for common sets of networks.
QUIT_FROM_WORDS = {"local": ("127.0.0.0/8", "::1/128"), "any": ("0.0.0.0/0", "::/0"), "none": ()}


def _parse_quit_from(raw: object) -> tuple[str, ...]:
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
            raise _Invalid(f"{item!r} is not an address or network") from None
        nets += [n for n in found if n not in nets]
    if not items:
        raise _Invalid()
    return tuple(nets)


def _show_quit_from(nets: tuple[str, ...]) -> str:
    for word, value in QUIT_FROM_WORDS.items():
        if set(nets) == set(value):
            return {"local": "this machine (loopback)", "any": "anyone",
                    "none": "nobody (stop with SIGINT/SIGTERM)"}[word]
    return ", ".join(nets)


def _parse_bpm(raw: object) -> float:
    value = _real(raw)
    if not MIN_BPM <= value <= MAX_BPM:
        raise _Invalid()
    return value


# --- how values are shown at start-up ---


def latency_text(frames: int, sample_rate: int) -> str:
    """``256 frames = 5.8 ms at 44100 Hz``."""
    return f"{frames} frames = {frames / sample_rate * 1000:.1f} ms at {sample_rate} Hz"


def _show_latency(value: object) -> str:
    return value if isinstance(value, str) else f"{value * 1000:g} ms"


# --- the table ---


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str  # attribute on Settings, argparse dest
    flag: str
    metavar: str
    env: tuple[str, ...]  # checked in this order
    section: str  # stemdeck.toml [section] key
    key: str
    parse: Callable[[object], Any]  # raises _Invalid
    valid: str  # what is accepted, in words, for error messages and help
    help: str
    default: Any = None
    # A default that depends on the machine: PlatformInfo -> value.
    platform_default: Callable[[PlatformInfo], Any] | None = None
    show: Callable[[Any], str] = str
    title: str = ""  # how start-up output and messages name it; default: name with spaces

    @property
    def label(self) -> str:
        return self.title or self.name.replace("_", " ")


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            name="buffer_size",
            flag="--buffer-size",
            metavar="FRAMES",
            env=("AUDIO_BUFFER_SIZE", "STEMDECK_BUFFER_SIZE"),
            section="audio",
            key="buffer_size",
            parse=_whole_in(BUFFER_SIZE_MIN, BUFFER_SIZE_MAX),
            valid=(
                f"a whole number from {BUFFER_SIZE_MIN} to {BUFFER_SIZE_MAX}; powers of two are best: "
                + ", ".join(map(str, POWERS_OF_TWO))
            ),
            help="frames per audio block; smaller is lower latency, larger is safer from underruns",
            platform_default=lambda p: p.default_buffer_size,
        ),
        Setting(
            name="sample_rate",
            flag="--sample-rate",
            metavar="HZ",
            env=("STEMDECK_SAMPLE_RATE",),
            section="audio",
            key="sample_rate",
            parse=_parse_sample_rate,
            valid="44100 or 48000",
            help="output sample rate in Hz",
            default=44100,
            show=lambda v: f"{v} Hz",
        ),
        Setting(
            name="device",
            flag="--device",
            metavar="INDEX|NAME",
            env=("STEMDECK_DEVICE",),
            section="audio",
            key="device",
            parse=_parse_device,
            valid="a device index (0, 1, ...) or part of a device name, as listed by 'stemdeck devices'",
            help="output device",
            default=None,
            show=lambda v: "the system's default output" if v is None else (f"#{v}" if isinstance(v, int) else repr(v)),
        ),
        Setting(
            name="backend",
            flag="--backend",
            metavar="portaudio|null",
            env=("STEMDECK_BACKEND",),
            section="audio",
            key="backend",
            parse=_choice(BACKENDS),
            valid="portaudio or null",
            help="portaudio plays on a sound card or JACK; null runs on its own clock with no audio device",
            default="portaudio",
        ),
        Setting(
            name="latency",
            flag="--latency",
            metavar="low|high|SECONDS",
            env=("STEMDECK_LATENCY",),
            section="audio",
            key="latency",
            parse=_parse_latency,
            valid="low, high, or a number of seconds from 0.001 to 1 (e.g. 0.02 for 20 ms)",
            help="PortAudio's suggested output latency; high is safest from underruns",
            default="high",
            show=_show_latency,
        ),
        Setting(
            name="host",
            flag="--host",
            metavar="ADDRESS",
            env=("STEMDECK_HOST",),
            section="osc",
            key="host",
            parse=_parse_host,
            valid="an IP address or host name, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces)",
            help="address the OSC server listens on",
            default="127.0.0.1",
            title="OSC host",
        ),
        Setting(
            name="port",
            flag="--port",
            metavar="PORT",
            env=("STEMDECK_PORT",),
            section="osc",
            key="port",
            parse=_whole_in(0, 65535),
            valid="a whole number from 0 to 65535 (0 lets the system pick a free port)",
            help="UDP port the OSC server listens on",
            default=57120,
            title="OSC port",
        ),
        Setting(
            name="quit_from",
            flag="--quit-from",
            metavar="local|any|none|CIDR,...",
            env=("STEMDECK_QUIT_FROM",),
            section="osc",
            key="quit_from",
            parse=_parse_quit_from,
            valid="local (loopback addresses), any, none, or addresses/networks such as "
                  "192.168.1.20,10.0.0.0/8 (a TOML list in stemdeck.toml)",
            help="who may stop the server with /quit; others get /fail and the music plays on",
            default=QUIT_FROM_WORDS["local"],
            show=_show_quit_from,
            title="/quit from",
        ),
        Setting(
            name="stats_interval",
            flag="--stats-interval",
            metavar="SECONDS",
            env=("STEMDECK_STATS_INTERVAL",),
            section="server",
            key="stats_interval",
            parse=_parse_stats_interval,
            valid="0 (off) or a number of seconds from 0.1 to 3600",
            help="print a one-line load and underrun summary this often",
            default=0.0,
            show=lambda v: "off" if v == 0 else f"every {v:g} s",
        ),
        Setting(
            name="cache_mb",
            flag="--cache-mb",
            metavar="MB",
            env=("STEMDECK_CACHE_MB",),
            section="media",
            key="cache_mb",
            parse=_whole_in(0, 1 << 20),
            valid="a whole number of megabytes from 0 (no cache) to 1048576",
            help="memory for decoded samples kept for reuse",
            platform_default=lambda p: p.default_cache_mb(),
            show=lambda v: f"{v} MB",
            title="sample cache",
        ),
        Setting(
            name="bpm",
            flag="--bpm",
            metavar="BPM",
            env=("STEMDECK_BPM",),
            section="clock",
            key="bpm",
            parse=_parse_bpm,
            valid=f"a number of beats per minute from {MIN_BPM:g} to {MAX_BPM:g}",
            help="starting tempo of the beat clock",
            default=120.0,
            title="tempo",
            show=lambda v: f"{v:g} BPM",
        ),
        Setting(
            name="stretch",
            flag="--stretch",
            metavar="playback_rate|keylock",
            env=("STEMDECK_STRETCH",),
            section="clock",
            key="stretch",
            parse=_choice(STRETCH_MODES),
            valid="playback_rate (pitch follows tempo) or keylock (Rubber Band keeps the pitch)",
            help="how every deck changes tempo when the server starts (/keylock DECK 0|1 switches one live)",
            default="playback_rate",
            title="tempo change",
        ),
        Setting(
            name="keylock_engine",
            flag="--keylock-engine",
            metavar="|".join(KEYLOCK_ENGINES),
            env=("STEMDECK_KEYLOCK_ENGINE",),
            section="clock",
            key="keylock_engine",
            parse=_choice(KEYLOCK_ENGINES),
            # the latencies are rubberband.LOOKAHEAD_44K; the pitch error benchmarks/keylock_latency.py's
            valid="finer (exact pitch, 70 ms of latency) or faster (52 ms, up to ~27 cents off on pure tones)",
            help="Rubber Band engine used for key lock",
            default=DEFAULT_KEYLOCK_ENGINE,
            title="key lock engine",
        ),
        Setting(
            name="bpm_config",
            flag="--bpm-config",
            metavar="FILE",
            env=("STEMDECK_BPM_CONFIG",),
            section="clock",
            key="bpm_config",
            parse=_parse_file_path,
            valid="the path of a JSON file in crowdstream's bpm_config.json format",
            help="movement-to-tempo thresholds, targets and glide times for /dance/total_movement",
            default=None,
            title="movement tempo",
            show=lambda v: "built-in defaults (crowdstream's)" if v is None else v,
        ),
        Setting(
            name="movement_bpm",
            flag="--movement-bpm",
            metavar="on|off",
            env=("STEMDECK_MOVEMENT_BPM",),
            section="clock",
            key="movement_bpm",
            parse=_parse_on_off,
            valid="on or off",
            help="let /dance/total_movement steer the tempo (off: the messages are ignored)",
            default=True,
            title="movement steers tempo",
            show=lambda v: "on" if v else "off",
        ),
    )
}

_SECTIONS = {s.section for s in SETTINGS.values()}
_PLATFORM_DEFAULT_TEXT = {
    "buffer_size": "by machine: 1024 on a Raspberry Pi 4, 512 on a Pi 5 or ordinary machine, 256 on a strong desktop",
    "cache_mb": "a quarter of RAM, 256 to 2048",
}


def _setting(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise ValueError(f"unknown setting {name!r}; known: {', '.join(SETTINGS)}") from None


def _names(names: Iterable[str] | None) -> list[str]:
    names = list(SETTINGS) if names is None else list(dict.fromkeys(names))
    for name in names:
        _setting(name)
    return names


# --- command line ---


def add_arguments(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add the flags for ``names`` (all settings if None) and ``--config``.

    Flags default to None so that :func:`resolve` can tell "not given" from
    a value and fall through to the environment, config file and default.
    """
    group = parser.add_argument_group(
        "settings",
        "Each setting is taken from, in order: its flag, its environment variable, "
        "the config file, the default. The values in use and their sources are printed at start-up.",
    )
    if "--config" not in parser._option_string_actions:  # argparse has no public lookup
        group.add_argument(
            "--config",
            metavar="FILE",
            default=None,
            help=(
                f"read settings from FILE (env {CONFIG_ENV}); default: ./{CONFIG_FILE_NAME}, "
                f"else $XDG_CONFIG_HOME/stemdeck/{CONFIG_FILE_NAME} (~/.config/stemdeck/{CONFIG_FILE_NAME})"
            ),
        )
    for name in _names(names):
        s = SETTINGS[name]
        if s.platform_default is not None:
            default = _PLATFORM_DEFAULT_TEXT.get(name, "by machine")
        else:
            default = s.show(s.default)
        text = (
            f"{s.help}: {s.valid}. Env {', then '.join(s.env)}; "
            f"{CONFIG_FILE_NAME} [{s.section}] {s.key}; default: {default}."
        )
        group.add_argument(s.flag, dest=s.name, metavar=s.metavar, default=None, help=text.replace("%", "%%"))


# --- config files ---


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/stemdeck/stemdeck.toml``, else ``~/.config/stemdeck/stemdeck.toml``."""
    environ = os.environ if environ is None else environ
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore relative paths
        base = Path(xdg)
    else:
        home = environ.get("HOME")
        base = (Path(home) if home else Path.home()) / ".config"
    return base / "stemdeck" / CONFIG_FILE_NAME


def config_search_path(environ: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> list[Path]:
    """The files looked for when no config file is named, in order."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    return [cwd / CONFIG_FILE_NAME, user_config_path(environ)]


def _load_toml(path: Path, origin: str) -> tuple[dict, str]:
    import tomllib
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"config file {path} (from {origin}) does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} (from {origin}) is a folder, not a file") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path} (from {origin}): {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"config file {path} line {line}: not UTF-8 text; save it as UTF-8") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line N, column M)".
        raise UsageError(
            f"config file {path} is not valid TOML: {exc}; "
            f"expected lines like '[audio]' and 'buffer_size = 512'"
        ) from None


def _find_line(text: str, section: str, key: str) -> int | None:
    """Line number of ``key`` in ``[section]`` (best effort, for messages)."""
    current = ""
    key_re = re.compile(rf"""\s*(["']?){re.escape(key)}\1\s*=""")
    dotted_re = re.compile(rf"""\s*{re.escape(section)}\s*\.\s*{re.escape(key)}\s*=""")
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[\s*([^\[\]]+?)\s*\]", line)
        if header:
            current = header.group(1).strip("\"'")
            continue
        if current == section and key_re.match(line):
            return number
        if current == "" and dotted_re.match(line):
            return number
    return None


def _find_section_line(text: str, section: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"""\s*\[\s*["']?{re.escape(section)}["']?\s*\]""", line) or re.match(
            rf"\s*{re.escape(section)}\s*=", line
        ):
            return number
    return None


# --- resolution ---


class Settings:
    """The effective settings: ``settings.buffer_size``, and where each came from."""

    def __init__(
        self,
        values: dict[str, Any],
        sources: dict[str, str],
        warnings: list[str],
        config_path: Path | None,
        searched: list[Path],
        platform: PlatformInfo | None,
    ):
        self._values = values
        self._sources = sources
        self.warnings = warnings
        self.config_path = config_path  # the file read, or None
        self.searched = searched  # files looked for when none was named
        self._platform = platform

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        if name in SETTINGS:
            raise AttributeError(f"setting {name!r} was not resolved; pass it in resolve(args, names)")
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"Settings({self._values!r})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._values)

    @property
    def platform(self) -> PlatformInfo:
        if self._platform is None:
            from stemdeck.platform_info import detect

            self._platform = detect()
        return self._platform

    def source(self, name: str) -> str:
        """Where the value came from: ``flag --buffer-size``,
        ``environment AUDIO_BUFFER_SIZE``, ``config /path/stemdeck.toml``,
        ``default``, ``platform default (Raspberry Pi 4)``."""
        try:
            return self._sources[name]
        except KeyError:
            _setting(name)
            raise KeyError(f"setting {name!r} was not resolved") from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def show(self, name: str) -> str:
        """The value in words, as printed at start-up."""
        value = self._values[name]
        if name == "buffer_size":
            return latency_text(value, self._values.get("sample_rate", SETTINGS["sample_rate"].default))
        return SETTINGS[name].show(value)

    def describe(self) -> list[str]:
        """Lines to print at start-up: the machine, the config file, each
        setting with its source. Warnings are in :attr:`warnings`."""
        lines = [f"{'platform':<15} {self.platform.description}"]
        if self.config_path is not None:
            lines.append(f"{'config file':<15} {self.config_path}")
        elif self.searched:
            lines.append(f"{'config file':<15} none (looked for {', '.join(map(str, self.searched))})")
        for name in self._values:
            lines.append(f"{SETTINGS[name].label:<15} {self.show(name):<34} from {self._sources[name]}")
        return lines


def _arg(args: object, name: str) -> Any:
    if args is None:
        return None
    if isinstance(args, Mapping):
        return args.get(name)
    return getattr(args, name, None)


def _quote(raw: object) -> str:
    """The raw value as the user wrote it: text as is, TOML values as TOML."""
    if not isinstance(raw, str):
        try:
            raw = _toml_value(raw)
        except TypeError:
            raw = str(raw)
    return f"'{raw}'"


def _invalid(setting: Setting, raw: object, where: str, exc: _Invalid) -> UsageError:
    message = f"{setting.label} {_quote(raw)} (from {where}) must be {setting.valid}"
    if exc.hint:
        message += f"; {exc.hint}"
    return UsageError(message)


def _parse(setting: Setting, raw: object, where: str) -> Any:
    try:
        return setting.parse(raw)
    except _Invalid as exc:
        raise _invalid(setting, raw, where, exc) from None


def _config_file(args, environ, cwd) -> tuple[Path | None, str, list[Path]]:
    named = _arg(args, "config")
    if named not in (None, ""):
        path = Path(named)
        return (path if path.is_absolute() else cwd / path), "flag --config", []
    named = environ.get(CONFIG_ENV, "").strip()
    if named:
        path = Path(named)
        return (path if path.is_absolute() else cwd / path), f"environment {CONFIG_ENV}", []
    searched = config_search_path(environ, cwd)
    for path in searched:
        if path.exists():
            return path, "search", searched
    return None, "", searched


def _check_layout(data: dict, text: str, path: Path, warnings: list[str]) -> None:
    """Refuse a known section that is not a table; warn of unknown keys (typos)."""
    known_keys = {(s.section, s.key) for s in SETTINGS.values()}
    for section, body in data.items():
        if section not in _SECTIONS:
            if isinstance(body, dict):
                warnings.append(
                    f"{path}: unknown section [{section}] ignored (known sections: {', '.join(sorted(_SECTIONS))})"
                )
            else:
                owner = [s for s in SETTINGS.values() if s.key == section]
                hint = f"; put it under [{owner[0].section}]" if owner else ""
                warnings.append(f"{path}: key '{section}' outside any section ignored{hint}")
            continue
        if not isinstance(body, dict):
            line = _find_section_line(text, section)
            at = f" line {line}" if line else ""
            raise UsageError(
                f"config file {path}{at}: '{section}' must be a table, written as a line '[{section}]' "
                f"followed by 'key = value' lines"
            )
        for key in body:
            if (section, key) not in known_keys:
                keys = sorted(k for s, k in known_keys if s == section)
                import difflib

                close = difflib.get_close_matches(key, keys, n=1)
                hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(keys)})"
                line = _find_line(text, section, key)
                at = f" line {line}" if line else ""
                warnings.append(f"{path}{at}: unknown key [{section}] {key} ignored{hint}")


def resolve(
    args: object,
    names: Iterable[str] | None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    platform: PlatformInfo | None = None,
) -> Settings:
    """Resolve ``names`` (all settings if None) from flag > environment >
    config file > default.

    ``args``: the argparse namespace (a missing attribute or None means the
    flag was not given); a mapping also works. ``environ`` defaults to
    ``os.environ``, ``cwd`` to the working folder, ``platform`` to
    :func:`stemdeck.platform_info.detect` (run only when a default needs it).
    Raises :class:`UsageError` for any bad value or unreadable config file.
    """
    names = _names(names)
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else Path(cwd)
    warnings: list[str] = []

    path, origin, searched = _config_file(args, environ, cwd)
    data: dict = {}
    text = ""
    if path is not None:
        data, text = _load_toml(path, origin)
        _check_layout(data, text, path, warnings)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in names:
        s = SETTINGS[name]
        raw = _arg(args, name)
        if raw is not None:
            source = f"flag {s.flag}"
            values[name] = _parse(s, raw, source)
            sources[name] = source
            continue
        given = [(var, environ[var].strip()) for var in s.env if environ.get(var, "").strip()]
        if given:
            var, raw = given[0]
            source = f"environment {var}"
            values[name] = _parse(s, raw, source)
            sources[name] = source
            for other, other_raw in given[1:]:
                if other_raw != raw:
                    warnings.append(f"{var}={raw} and {other}={other_raw} are both set; using {var}")
            continue
        section = data.get(s.section, {})
        if s.key in section:
            raw = section[s.key]
            line = _find_line(text, s.section, s.key)
            where = f"config {path}" + (f" line {line}" if line else "") + f", [{s.section}] {s.key}"
            values[name] = _parse(s, raw, where)
            sources[name] = f"config {path}"
            continue
        if s.platform_default is not None:
            if platform is None:
                from stemdeck.platform_info import detect

                platform = detect()
            values[name] = s.platform_default(platform)
            sources[name] = f"platform default ({platform.label})"
        else:
            values[name] = s.default
            sources[name] = "default"

    if "buffer_size" in values:
        frames = values["buffer_size"]
        if frames & (frames - 1):
            below = max(p for p in POWERS_OF_TWO if p < frames)
            above = min(p for p in POWERS_OF_TWO if p > frames)
            warnings.append(
                f"buffer size {frames} (from {sources['buffer_size']}) is not a power of two; "
                f"audio drivers and JACK work best with powers of two: try {below} or {above}"
            )

    return Settings(values, sources, warnings, path, searched, platform)


# --- writing ---


def _toml_key(key: str) -> str:
    import json

    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
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
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "isoformat"):  # dates and times, as tomllib returns them
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _dump_toml(data: dict) -> str:
    """A whole document: plain keys first, then one [table] per nested dict."""
    lines: list[str] = []

    def table(prefix: list[str], body: dict) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in body.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for key, value in scalars.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in tables.items():
            table(prefix + [key], value)

    table([], data)
    return "\n".join(lines) + "\n"


def _merge(base: dict, updates: Mapping) -> dict:
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def _edit_in_place(text: str, updates: Mapping[str, Mapping[str, Any]]) -> str:
    """Replace or add ``key = value`` lines, keeping comments and layout."""
    lines = text.splitlines()
    for section, body in updates.items():
        for key, value in body.items():
            new_line = f"{_toml_key(key)} = {_toml_value(value)}"
            number = _find_line("\n".join(lines), section, key)
            if number is not None:
                lines[number - 1] = new_line
                continue
            start = None
            for i, line in enumerate(lines):
                header = re.match(r"\s*\[\s*([^\[\]]+?)\s*\]", line)
                if header and header.group(1).strip("\"'") == section:
                    start = i
                    break
            if start is None:
                if lines and lines[-1].strip():
                    lines.append("")
                lines += [f"[{_toml_key(section)}]", new_line]
                continue
            # After the section's last key line (before blank lines/comments leading into the next table).
            end = start + 1
            while end < len(lines) and not re.match(r"\s*\[", lines[end]):
                end += 1
            insert = end
            while insert > start + 1 and (not lines[insert - 1].strip() or lines[insert - 1].lstrip().startswith("#")):
                insert -= 1
            lines.insert(insert, new_line)
    return "\n".join(lines) + "\n"


def write_config(path: str | os.PathLike, updates: Mapping[str, Mapping[str, Any]]) -> Path:
    """Set ``updates`` (``{"audio": {"buffer_size": 256}}``) in the TOML file
    at ``path``, creating it (and its folder) if needed and keeping every
    other key, comment and line as it was. Values of known settings are
    validated first (UsageError). Writes atomically (temporary file, then
    rename). Returns the path written."""
    path = Path(path)
    for section, body in updates.items():
        if not isinstance(body, Mapping):
            raise TypeError(f"write_config: updates[{section!r}] must be a mapping of key -> value")
        for key, value in body.items():
            for s in SETTINGS.values():
                if (s.section, s.key) == (section, key):
                    _parse(s, value, f"the value to write to {path}")

    if path.exists():
        data, text = _load_toml(path, "write_config")
    else:
        data, text = {}, ""
    expected = _merge(data, updates)
    new_text = _edit_in_place(text, updates) if text.strip() else _dump_toml(expected)
    import tomllib

    try:
        ok = tomllib.loads(new_text) == expected
    except tomllib.TOMLDecodeError:
        ok = False
    if not ok:
        # A layout the line editor does not understand (inline tables, dotted
        # keys, multi-line values): rewrite the whole file, losing comments.
        new_text = _dump_toml(expected)

    path.parent.mkdir(parents=True, exist_ok=True)
    # A new file gets the usual 0o666 minus umask; an existing one keeps its mode.
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
        if path.exists():
            os.chmod(tmp, mode)  # os.open applied the umask; restore the original mode
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UsageError(f"cannot write config file {path}: {exc.strerror or exc}") from None
    return path
