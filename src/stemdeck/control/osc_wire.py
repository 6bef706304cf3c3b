"""OSC 1.0 packets to Python values and back: strict, bounded, with reasons.

The OSC server (:mod:`stemdeck.control.osc`) parses every packet here
rather than through python-osc's server classes, so that a malformed packet
becomes one ``/fail`` whose reason says what is wrong with it ("truncated:
string argument 2 has no terminating NUL", "unknown type tag 'x'"), never a
silently dropped datagram or an exception in a socket thread.

What is accepted (OSC 1.0 and the common 1.1 extensions scsynth reads):

- messages: address (UTF-8), optional type tag string (a message without
  one has no arguments, as old clients send), arguments ``i f s S b h t d
  c r m T F N I`` and arrays ``[ ]`` (returned as lists);
- bundles: ``#bundle``, a 64-bit NTP timetag, elements each prefixed by a
  positive size that is a multiple of 4; nesting up to :data:`MAX_DEPTH`.

Strings that are not valid UTF-8 are decoded with ``surrogateescape`` (a
file name in another encoding still opens); the address must be UTF-8.
Everything is bounded by the packet: no allocation bigger than it.

What is built is always valid UTF-8, so every client library can read it
(python-osc decodes strictly): a reply that quotes such a string (``/fail``
with a bad path) writes each byte that was not UTF-8 as the four
characters ``\\xNN``, and a NUL inside a string as ``\\x00``.

Pure Python, any thread.
"""

from __future__ import annotations

import codecs
import struct
import time
from dataclasses import dataclass

#: NTP timetag meaning "immediately" (OSC 1.0).
IMMEDIATELY = 1
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET = 2208988800
MAX_DEPTH = 8
BUNDLE_TAG = b"#bundle\x00"

_I32 = struct.Struct(">i")
_F32 = struct.Struct(">f")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")


class Double(float):
    """A float sent as an OSC double (``d``), as scsynth's ``/status.reply`` sample rates are."""


class WireError(Exception):
    """A packet that is not valid OSC. ``reason`` is for the person who sent
    it; ``address`` is the message's address when it could be read."""

    def __init__(self, reason: str, address: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.address = address


@dataclass(frozen=True, slots=True)
class Message:
    address: str
    args: tuple
    tags: str = ""          # the type tags as received, without the comma


@dataclass(frozen=True, slots=True)
class Bundle:
    timetag: int            # 64-bit NTP fixed point; IMMEDIATELY = 1
    elements: tuple         # Message | Bundle, in packet order


# -- parsing ---------------------------------------------------------------------------------

def parse_packet(data, *, max_depth: int = MAX_DEPTH):
    """One datagram (or one TCP frame) -> :class:`Message` or :class:`Bundle`.
    Raises :class:`WireError` with a reason a person can act on."""
    data = bytes(data)
    n = len(data)
    if n == 0:
        raise WireError("empty packet")
    if n % 4:
        raise WireError(f"packet of {n} bytes is not a multiple of 4: truncated, or not OSC")
    if data[0:1] == b"/":
        return _message(data, 0, n)
    if data[0:1] == b"#":
        return _bundle(data, 0, n, 0, max_depth)
    raise WireError("not an OSC packet: a message starts with '/' and a bundle with '#bundle' "
                    f"(got {data[:8]!r})")


def _string(data: bytes, pos: int, end: int, what: str, address=None) -> tuple[bytes, int]:
    nul = data.find(b"\x00", pos, end)
    if nul < 0:
        raise WireError(f"truncated: {what} has no terminating NUL", address)
    nxt = (nul + 4) & ~3
    if nxt > end:
        raise WireError(f"truncated: {what} is not padded to 4 bytes", address)
    return data[pos:nul], nxt


def _message(data: bytes, pos: int, end: int) -> Message:
    raw, pos = _string(data, pos, end, "the address")
    try:
        address = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"address {raw[:40]!r} is not valid UTF-8") from None
    if not address.startswith("/"):
        raise WireError(f"{address[:40]!r} is not an OSC address: addresses start with '/'")
    if pos >= end:
        return Message(address, (), "")       # no type tag string: no arguments (old clients)
    if data[pos:pos + 1] != b",":
        raise WireError("the type tag string must start with ',' (after the address)", address)
    rawtags, pos = _string(data, pos, end, "the type tag string", address)
    try:
        tags = rawtags[1:].decode("ascii")
    except UnicodeDecodeError:
        raise WireError(f"type tags {rawtags[1:40]!r} are not ASCII", address) from None
    args: list = []
    stack: list[list] = []
    cur = args
    number = 0
    for tag in tags:
        if tag == "[":
            stack.append(cur)
            new: list = []
            cur.append(new)
            cur = new
            continue
        if tag == "]":
            if not stack:
                raise WireError("type tags have a ']' without '['", address)
            cur = stack.pop()
            continue
        number += 1
        value, pos = _arg(data, pos, end, tag, number, address)
        cur.append(value)
    if stack:
        raise WireError("type tags have a '[' without ']'", address)
    if pos != end:
        raise WireError(f"{end - pos} bytes left after the arguments: the type tags "
                        f"',{tags}' do not match the data", address)
    return Message(address, tuple(args), tags)


def _need(pos: int, size: int, end: int, tag: str, number: int, address: str):
    if pos + size > end:
        raise WireError(f"truncated: argument {number} (type '{tag}') needs {size} bytes, "
                        f"{max(end - pos, 0)} left", address)


def _arg(data: bytes, pos: int, end: int, tag: str, number: int, address: str):
    if tag == "i":
        _need(pos, 4, end, tag, number, address)
        return _I32.unpack_from(data, pos)[0], pos + 4
    if tag == "f":
        _need(pos, 4, end, tag, number, address)
        return _F32.unpack_from(data, pos)[0], pos + 4
    if tag in "sS":
        raw, pos = _string(data, pos, end, f"string argument {number}", address)
        return raw.decode("utf-8", "surrogateescape"), pos
    if tag == "b":
        _need(pos, 4, end, tag, number, address)
        size = _I32.unpack_from(data, pos)[0]
        if size < 0 or pos + 4 + size > end:
            raise WireError(f"truncated: blob argument {number} declares {size} bytes, "
                            f"{max(end - pos - 4, 0)} left", address)
        start = pos + 4
        return data[start:start + size], start + ((size + 3) & ~3)
    if tag in "hdt":
        _need(pos, 8, end, tag, number, address)
        if tag == "h":
            return _I64.unpack_from(data, pos)[0], pos + 8
        if tag == "d":
            return _F64.unpack_from(data, pos)[0], pos + 8
        return _U64.unpack_from(data, pos)[0], pos + 8
    if tag == "c":
        _need(pos, 4, end, tag, number, address)
        code = _I32.unpack_from(data, pos)[0]
        try:
            return chr(code), pos + 4
        except (ValueError, OverflowError):
            raise WireError(f"char argument {number} has code {code}, not a character",
                            address) from None
    if tag in "rm":
        _need(pos, 4, end, tag, number, address)
        return data[pos:pos + 4], pos + 4
    if tag == "T":
        return True, pos
    if tag == "F":
        return False, pos
    if tag == "N":
        return None, pos
    if tag == "I":
        return float("inf"), pos
    raise WireError(f"unknown OSC type tag {tag!r} (argument {number}); "
                    "use i, f, s, b, h, d, t, c, r, m, T, F, N, I", address)


def _bundle(data: bytes, pos: int, end: int, depth: int, max_depth: int) -> Bundle:
    if data[pos:pos + 8] != BUNDLE_TAG:
        raise WireError("not an OSC packet: starts with '#' but not '#bundle'")
    if depth >= max_depth:
        raise WireError(f"bundles nested more than {max_depth} deep")
    if pos + 16 > end:
        raise WireError("truncated bundle: no room for its timetag")
    timetag = _U64.unpack_from(data, pos + 8)[0]
    pos += 16
    elements = []
    index = 0
    while pos < end:
        index += 1
        if pos + 4 > end:
            raise WireError(f"truncated bundle: element {index} has no size")
        size = _I32.unpack_from(data, pos)[0]
        pos += 4
        if size <= 0 or size % 4 or pos + size > end:
            raise WireError(f"bundle element {index} declares {size} bytes, "
                            f"{end - pos} left (sizes are positive multiples of 4)")
        first = data[pos:pos + 1]
        try:
            if first == b"/":
                elements.append(_message(data, pos, pos + size))
            elif first == b"#":
                elements.append(_bundle(data, pos, pos + size, depth + 1, max_depth))
            else:
                raise WireError(f"bundle element {index} is neither a message nor a bundle")
        except WireError as exc:
            if exc.reason.startswith("bundle element"):
                raise
            where = f" ({exc.address})" if exc.address else ""
            raise WireError(f"bundle element {index}{where}: {exc.reason}", exc.address) from None
        pos += size
    return Bundle(timetag, tuple(elements))


# -- building ------------------------------------------------------------------------------------

def _escape_unencodable(exc: UnicodeError):
    """Codec error handler: a byte smuggled in by ``surrogateescape`` becomes
    ``\\xNN``; any other lone surrogate ``\\uNNNN`` (neither is valid UTF-8)."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}"
                   for c in exc.object[exc.start:exc.end])
    return text, exc.end


codecs.register_error("stemdeck.osc_escape", _escape_unencodable)


def _pad_string(text: str) -> bytes:
    raw = text.encode("utf-8", "stemdeck.osc_escape")
    if b"\x00" in raw:              # an OSC string ends at its first NUL: keep the packet aligned
        raw = raw.replace(b"\x00", b"\\x00")
    return raw + b"\x00" * (4 - len(raw) % 4)


def encode_message(address: str, args=()) -> bytes:
    """Build one message: int -> i (h beyond 32 bits), float -> f (:class:`Double` -> d), str -> s
    (always valid UTF-8: a NUL inside, or a byte that was not UTF-8, is
    written as the four characters ``\\xNN``), bytes -> b, bool -> T/F,
    None -> N."""
    tags = [","]
    parts = []
    for value in args:
        if value is True:
            tags.append("T")
        elif value is False:
            tags.append("F")
        elif value is None:
            tags.append("N")
        elif isinstance(value, int):
            if -2**31 <= value < 2**31:
                tags.append("i")
                parts.append(_I32.pack(value))
            else:
                tags.append("h")
                parts.append(_I64.pack(value))
        elif isinstance(value, Double):
            tags.append("d")
            parts.append(_F64.pack(value))
        elif isinstance(value, float):
            tags.append("f")
            parts.append(_F32.pack(value))
        elif isinstance(value, str):
            tags.append("s")
            parts.append(_pad_string(value))
        elif isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value)
            tags.append("b")
            parts.append(_I32.pack(len(value)) + value + b"\x00" * (-len(value) % 4))
        else:
            try:                                         # numpy scalars
                if float(value).is_integer() and hasattr(value, "dtype") and value.dtype.kind in "iu":
                    tags.append("i")
                    parts.append(_I32.pack(int(value)))
                else:
                    tags.append("f")
                    parts.append(_F32.pack(float(value)))
            except (TypeError, ValueError):
                tags.append("s")
                parts.append(_pad_string(str(value)))
    return _pad_string(address) + _pad_string("".join(tags)) + b"".join(parts)


def encode_bundle(timetag: int, elements) -> bytes:
    """Build a bundle; ``elements`` are encoded packets (bytes)."""
    out = [BUNDLE_TAG, _U64.pack(timetag)]
    for element in elements:
        out.append(_I32.pack(len(element)))
        out.append(element)
    return b"".join(out)


# -- time --------------------------------------------------------------------------------------------

def ntp_from_unix_ns(ns: int) -> int:
    """Unix time in nanoseconds -> 64-bit NTP timetag (exact to the fraction)."""
    return ((int(ns) + NTP_UNIX_OFFSET * 1_000_000_000) << 32) // 1_000_000_000


def ntp_from_unix(seconds: float) -> int:
    whole = int(seconds // 1)
    frac = seconds - whole
    return ((whole + NTP_UNIX_OFFSET) << 32) + int(round(frac * 2**32))


def unix_from_ntp(timetag: int) -> float:
    return (timetag >> 32) - NTP_UNIX_OFFSET + (timetag & 0xFFFFFFFF) / 2**32


def ntp_now() -> int:
    return ntp_from_unix_ns(time.time_ns())
