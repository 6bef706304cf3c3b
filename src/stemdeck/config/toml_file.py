"""stemdeck.toml on disk: where it is looked for, reading it (with line numbers for messages), and write_config (values set in place, comments kept).

Control thread only (start-up, ``stemdeck tune --write-config``). Standard
library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stemdeck.config.table import SETTINGS
from stemdeck.config.values import parse_value, toml_key, toml_value
from stemdeck.errors import UsageError

# tomllib is imported where used: most runs need it not, and every
# subcommand's --help imports this module.

CONFIG_FILE_NAME = "stemdeck.toml"
CONFIG_ENV = "STEMDECK_CONFIG"


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


def load_toml(path: Path, origin: str) -> tuple[dict, str]:
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


def find_line(text: str, section: str, key: str) -> int | None:
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


def find_section_line(text: str, section: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"""\s*\[\s*["']?{re.escape(section)}["']?\s*\]""", line) or re.match(
            rf"\s*{re.escape(section)}\s*=", line
        ):
            return number
    return None


# --- writing ---


def _dump_toml(data: dict) -> str:
    """A whole document: plain keys first, then one [table] per nested dict."""
    lines: list[str] = []

    def table(prefix: list[str], body: dict) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in body.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(toml_key(p) for p in prefix) + "]")
        for key, value in scalars.items():
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
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
            new_line = f"{toml_key(key)} = {toml_value(value)}"
            number = find_line("\n".join(lines), section, key)
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
                lines += [f"[{toml_key(section)}]", new_line]
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
                    parse_value(s, value, f"the value to write to {path}")

    if path.exists():
        data, text = load_toml(path, "write_config")
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
