"""Score files: timed OSC messages in a text file, for ``stemdeck render``.

One message per line, prefixed by its time in seconds from the start::

    # two decks, a crossfade, a bass swap
    0.0   /load_buffer 100 drums.wav drums      # relative to this file's folder
    0.0   /load_buffer 1100 "other song/bass.wav"
    0.0   /play_stem 100 1.0 0.8 1
    16.0  /play_stem 1100
    16.0  /crossfade_levels 1.0 0.0
    24.5  /crossfade_levels 0.5 1.0

- ``#`` starts a comment (a whole line or the rest of one); blank lines are fine.
- Words are split like a shell does (:mod:`shlex`): quote a path or name with
  spaces or a ``#`` in it, "like this" or 'like this'.
- Arguments are typed by the message table (:mod:`stemdeck.control.spec`):
  ``100`` is an int where an int is expected, a float where a float is.
- Relative file paths are resolved against the score's folder.
- Times never go backwards; lines with equal times run in file order.

Every malformed line raises :class:`~stemdeck.errors.ScoreError` whose
message starts ``file:line:``. Pure Python; any thread.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass

from stemdeck.control import spec
from stemdeck.errors import CommandError, ScoreError

MAX_TIME = spec.MAX_SECONDS
TIME_HINT = "each line starts with its time in seconds, e.g. '12.5 /crossfade_levels 0.5 1.0'"


@dataclass(frozen=True)
class ScoreLine:
    """One timed message of a score."""
    filename: str
    lineno: int
    time: float              # seconds from the start of the render
    call: spec.Call          # the validated message (paths resolved)
    text: str                # the line as written

    @property
    def where(self) -> str:
        return f"{self.filename}:{self.lineno}"

    @property
    def address(self) -> str:
        return self.call.address


def read_score(path: str | os.PathLike) -> list[ScoreLine]:
    """Read and validate a score file; relative paths resolve against its folder."""
    shown = os.fspath(path)
    try:
        with open(shown, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ScoreError(f"{shown}: no such score file") from None
    except IsADirectoryError:
        raise ScoreError(f"{shown}: a directory, not a score file") from None
    except OSError as exc:
        raise ScoreError(f"{shown}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ScoreError(f"{shown}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x}): "
                         "a score is a text file") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise ScoreError(f"{shown}:{line}: NUL byte: a score is a text file, not binary")
    base = os.path.dirname(os.path.abspath(shown))
    return parse_score(text, filename=shown, base_dir=base)


def parse_score(text: str, *, filename: str = "<score>", base_dir: str | None = None) -> list[ScoreLine]:
    """Parse score text; ``base_dir`` resolves relative paths (default: the current folder)."""
    lines: list[ScoreLine] = []
    previous: ScoreLine | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        where = f"{filename}:{lineno}"
        item = _parse_line(line, where, base_dir)
        if item is None:
            continue
        time, call = item
        if previous is not None and time < previous.time:
            raise ScoreError(f"{where}: time {_num(time)} is before the previous line's "
                             f"{_num(previous.time)} (line {previous.lineno}): keep lines in "
                             "time order")
        previous = ScoreLine(filename, lineno, time, call, line)
        lines.append(previous)
    return lines


def _parse_line(line: str, where: str, base_dir: str | None):
    try:
        words = _split(line)
    except ValueError as exc:
        reason = str(exc)
        if "quotation" in reason:
            reason = "unterminated quote: close it, or quote the whole word"
        elif "escaped" in reason:
            reason = "a backslash at the end of the line escapes nothing"
        raise ScoreError(f"{where}: {reason}") from None
    if not words:
        return None
    first = words[0]
    if first.startswith("/"):
        raise ScoreError(f"{where}: missing time before {first}: {TIME_HINT}")
    time = _time(first, where)
    if len(words) < 2:
        raise ScoreError(f"{where}: no OSC address after the time {first}: {TIME_HINT}")
    address, args = words[1], words[2:]
    try:
        message = spec.lookup(address)
    except CommandError as exc:
        raise ScoreError(f"{where}: {exc}") from None
    if message.live_only:
        raise ScoreError(f"{where}: {address} only works on a live server, not in a score")
    try:
        call = spec.parse(address, args)
    except CommandError as exc:
        raise ScoreError(f"{where}: {exc}") from None
    paths = spec.path_args(message.address)
    if paths:
        values = dict(call.values)
        for name in (message.args[i].name for i in paths):
            values[name] = resolve(values[name], base_dir)
        call = spec.Call(message, values)
    return time, call


def _split(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _time(word: str, where: str) -> float:
    try:
        t = float(word)
    except ValueError:
        raise ScoreError(f"{where}: time {word!r} is not a number: {TIME_HINT}") from None
    if not math.isfinite(t):
        raise ScoreError(f"{where}: time {word!r} is not a finite number")
    if t < 0:
        raise ScoreError(f"{where}: time {word} is negative: times count from 0, the start")
    if t > MAX_TIME:
        raise ScoreError(f"{where}: time {word} is beyond {MAX_TIME:g} s (24 hours)")
    return t


def resolve(path: str, base_dir: str | None) -> str:
    """A score's relative path, against the score's folder (``~`` expanded)."""
    path = os.path.expanduser(path)
    if os.path.isabs(path) or base_dir is None:
        return path
    return os.path.normpath(os.path.join(base_dir, path))


def _num(x: float) -> str:
    return f"{x:g}"
