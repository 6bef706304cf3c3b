"""Resolving settings: the flags a tool adds, and each value taken from flag > environment > stemdeck.toml > default, with its source.

Tools call :func:`add_arguments` on their parser and :func:`resolve` in
``run``; the :class:`Settings` it returns knows each value's source, the
warnings to show, and the lines to print at start-up.

Control thread only (start-up). Standard library only.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stemdeck.config.table import (PLATFORM_DEFAULT_TEXT, POWERS_OF_TWO, SECTIONS, SETTINGS, setting_named,
                                   setting_names)
from stemdeck.config.toml_file import (CONFIG_ENV, CONFIG_FILE_NAME, config_search_path, find_line,
                                       find_section_line, load_toml)
from stemdeck.config.values import latency_text, parse_value
from stemdeck.errors import UsageError

# difflib is imported where used: most runs need it not, and every
# subcommand's --help imports this module.

if TYPE_CHECKING:
    from stemdeck.platform_info import PlatformInfo


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
    for name in setting_names(names):
        s = SETTINGS[name]
        if s.platform_default is not None:
            default = PLATFORM_DEFAULT_TEXT.get(name, "by machine")
        else:
            default = s.show(s.default)
        text = (
            f"{s.help}: {s.valid}. Env {', then '.join(s.env)}; "
            f"{CONFIG_FILE_NAME} [{s.section}] {s.key}; default: {default}."
        )
        group.add_argument(s.flag, dest=s.name, metavar=s.metavar, default=None, help=text.replace("%", "%%"))


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
            setting_named(name)
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
        if section not in SECTIONS:
            if isinstance(body, dict):
                warnings.append(
                    f"{path}: unknown section [{section}] ignored (known sections: {', '.join(sorted(SECTIONS))})"
                )
            else:
                owner = [s for s in SETTINGS.values() if s.key == section]
                hint = f"; put it under [{owner[0].section}]" if owner else ""
                warnings.append(f"{path}: key '{section}' outside any section ignored{hint}")
            continue
        if not isinstance(body, dict):
            line = find_section_line(text, section)
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
                line = find_line(text, section, key)
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
    names = setting_names(names)
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else Path(cwd)
    warnings: list[str] = []

    path, origin, searched = _config_file(args, environ, cwd)
    data: dict = {}
    text = ""
    if path is not None:
        data, text = load_toml(path, origin)
        _check_layout(data, text, path, warnings)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in names:
        s = SETTINGS[name]
        raw = _arg(args, name)
        if raw is not None:
            source = f"flag {s.flag}"
            values[name] = parse_value(s, raw, source)
            sources[name] = source
            continue
        given = [(var, environ[var].strip()) for var in s.env if environ.get(var, "").strip()]
        if given:
            var, raw = given[0]
            source = f"environment {var}"
            values[name] = parse_value(s, raw, source)
            sources[name] = source
            for other, other_raw in given[1:]:
                if other_raw != raw:
                    warnings.append(f"{var}={raw} and {other}={other_raw} are both set; using {var}")
            continue
        section = data.get(s.section, {})
        if s.key in section:
            raw = section[s.key]
            line = find_line(text, s.section, s.key)
            where = f"config {path}" + (f" line {line}" if line else "") + f", [{s.section}] {s.key}"
            values[name] = parse_value(s, raw, where)
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
