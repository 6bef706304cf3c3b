"""The settings table: one row per thing a user can set (flag, environment variables, stemdeck.toml key, validator, default, help).

To add a setting, add one row to :data:`SETTINGS` (and a test); nothing
else. How a row's value is found is :mod:`stemdeck.config.resolve`; its
validators are :mod:`stemdeck.config.values`.

Control thread only (start-up). Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stemdeck.config.values import (QUIT_FROM_WORDS, choice, parse_bpm, parse_device, parse_file_path,
                                    parse_host, parse_latency, parse_on_off, parse_quit_from,
                                    parse_sample_rate, parse_stats_interval, show_latency, show_quit_from,
                                    whole_in)
from stemdeck.engine.commands import DEFAULT_KEYLOCK_ENGINE, KEYLOCK_ENGINES, MAX_BPM, MIN_BPM, STRETCH_MODES

if TYPE_CHECKING:
    from stemdeck.platform_info import PlatformInfo

BUFFER_SIZE_MIN = 32
BUFFER_SIZE_MAX = 8192
POWERS_OF_TWO = tuple(2**n for n in range(5, 14))  # 32 .. 8192
BACKENDS = ("portaudio", "null")


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str  # attribute on Settings, argparse dest
    flag: str
    metavar: str
    env: tuple[str, ...]  # checked in this order
    section: str  # stemdeck.toml [section] key
    key: str
    parse: Callable[[object], Any]  # raises Invalid
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
            parse=whole_in(BUFFER_SIZE_MIN, BUFFER_SIZE_MAX),
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
            parse=parse_sample_rate,
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
            parse=parse_device,
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
            parse=choice(BACKENDS),
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
            parse=parse_latency,
            valid="low, high, or a number of seconds from 0.001 to 1 (e.g. 0.02 for 20 ms)",
            help="PortAudio's suggested output latency; high is safest from underruns",
            default="high",
            show=show_latency,
        ),
        Setting(
            name="host",
            flag="--host",
            metavar="ADDRESS",
            env=("STEMDECK_HOST",),
            section="osc",
            key="host",
            parse=parse_host,
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
            parse=whole_in(0, 65535),
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
            parse=parse_quit_from,
            valid="local (loopback addresses), any, none, or addresses/networks such as "
                  "192.168.1.20,10.0.0.0/8 (a TOML list in stemdeck.toml)",
            help="who may stop the server with /quit; others get /fail and the music plays on",
            default=QUIT_FROM_WORDS["local"],
            show=show_quit_from,
            title="/quit from",
        ),
        Setting(
            name="stats_interval",
            flag="--stats-interval",
            metavar="SECONDS",
            env=("STEMDECK_STATS_INTERVAL",),
            section="server",
            key="stats_interval",
            parse=parse_stats_interval,
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
            parse=whole_in(0, 1 << 20),
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
            parse=parse_bpm,
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
            parse=choice(STRETCH_MODES),
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
            parse=choice(KEYLOCK_ENGINES),
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
            parse=parse_file_path,
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
            parse=parse_on_off,
            valid="on or off",
            help="let /dance/total_movement steer the tempo (off: the messages are ignored)",
            default=True,
            title="movement steers tempo",
            show=lambda v: "on" if v else "off",
        ),
    )
}

SECTIONS = {s.section for s in SETTINGS.values()}
PLATFORM_DEFAULT_TEXT = {
    "buffer_size": "by machine: 1024 on a Raspberry Pi 4, 512 on a Pi 5 or ordinary machine, 256 on a strong desktop",
    "cache_mb": "a quarter of RAM, 256 to 2048",
}


def setting_named(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise ValueError(f"unknown setting {name!r}; known: {', '.join(SETTINGS)}") from None


def setting_names(names: Iterable[str] | None) -> list[str]:
    names = list(SETTINGS) if names is None else list(dict.fromkeys(names))
    for name in names:
        setting_named(name)
    return names
