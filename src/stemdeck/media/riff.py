"""What the refusal rules and the sample mapper both read in uncompressed files: the RIFF/AIFF chunk walk.

WAV (RIFF, RIFX, RF64, BW64) and AIFF (FORM) headers are a list of chunks,
each an ID, a 32-bit length and a body padded to an even length.
:mod:`stemdeck.media.refusals` walks them to explain a refusal and to downmix;
:mod:`stemdeck.media.mapped` walks them to find the samples it maps. Also
:data:`FLOAT_LIMIT`, where the decoder and the mapper stop trusting a float sample.

Pure Python, any thread; the caller owns the open file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

MAX_CHUNKS = 512       # a sane file has a handful of chunks before its samples
FLOAT_LIMIT = 64.0     # +36 dBFS: beyond this a float file is damaged, not loud
DS64_UNSET = 0xFFFFFFFF   # an RF64 chunk length that the ds64 chunk gives instead


def chunks(fh: BinaryIO, pos: int, size: int, order: str = "<") -> Iterator[tuple[bytes, int, int]]:
    """(ID, body length, body offset) of each chunk from ``pos`` in a file of
    ``size`` bytes, ``order`` "<" (RIFF) or ">" (RIFX, AIFF). The file is at
    the body when a chunk is yielded. Stops at the end of the file or after
    MAX_CHUNKS; a header cut off mid-chunk raises ``struct.error``."""
    for _ in range(MAX_CHUNKS):
        if pos + 8 > size:
            return
        fh.seek(pos)
        cid, csize = struct.unpack(order + "4sI", fh.read(8))
        yield cid, csize, pos + 8
        pos += 8 + csize + (csize & 1)   # chunks are padded to even length


def ds64_data_size(fh: BinaryIO, csize: int, order: str = "<") -> int | None:
    """The 64-bit data length in an RF64 ``ds64`` chunk (the file at its body), or None."""
    body = fh.read(min(csize, 28))
    return struct.unpack(order + "Q", body[8:16])[0] if len(body) >= 16 else None
