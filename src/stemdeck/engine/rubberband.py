"""Key lock: Rubber Band's real-time stretcher, driven from the render kernel.

Control thread only: this module finds the library, creates one stretcher per
deck before audio starts, and frees them after it stops. The kernel calls the
stretchers through C function pointers kept in the state (no GIL, no Python).

Rubber Band is used through its C API in Debian's ``librubberband2``. pylibrb
(the Python binding) cannot be called without the GIL and exports no C
symbols, so it cannot serve the audio thread; the library underneath is the
same.

How a deck keeps its key: its voices play at the vinyl rate (pitch follows
tempo) and the stretcher shifts the pitch back by 1 / rate at a time ratio of
1, so one frame in is one frame out and the deck stays on the engine's
timeline. The stretcher's output lags its input, so a keylocked deck renders
its voices ``lookahead`` frames ahead; see stretch.py for the delay line that
keeps the unstretched path aligned and lets key lock switch with a crossfade.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from stemdeck.engine.commands import KEYLOCK_ENGINES

# RubberBandOptions
OPT_REALTIME = 0x00000001
OPT_WINDOW_SHORT = 0x00100000
OPT_PITCH_HIGH_CONSISTENCY = 0x04000000
OPT_CHANNELS_TOGETHER = 0x10000000
OPT_ENGINE_FINER = 0x20000000

# Frames a keylocked deck renders ahead at 44.1 kHz. Measured with
# benchmarks/keylock_latency.py: after the preferred start pad is fed and the
# start delay trimmed, output for a frame is available once about 1,930
# (faster, short window) or 2,730 (finer, short window) frames beyond it have
# been fed, at any block size from 64 to 1024, at pitch scale 0.9; less at
# higher scales. The stretcher's delay grows as the scale falls (tempo up),
# and the engine trims the growth, so the lookahead also covers scales down
# to 0.8 (tempo +25 %, or +10 % while catching up after a sudden change):
# below that the deck's output would run dry (counted as starved frames).
# The default window needs about 3,800 (faster): too much latency for live use.
LOOKAHEAD_44K = {"faster": 2304, "finer": 3072}
MAX_PROCESS = 8192


class RubberBand:
    """The C API of librubberband, loaded once per process."""

    _instance = None

    def __init__(self, lib):
        self.lib = lib
        P, U, I, D = ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_double
        sigs = {
            "rubberband_new": (P, [U, U, I, D, D]),
            "rubberband_delete": (None, [P]),
            "rubberband_reset": (None, [P]),
            "rubberband_set_pitch_scale": (None, [P, D]),
            "rubberband_set_max_process_size": (None, [P, U]),
            "rubberband_get_start_delay": (U, [P]),
            "rubberband_get_preferred_start_pad": (U, [P]),
            "rubberband_process": (None, [P, P, U, I]),
            "rubberband_available": (I, [P]),
            "rubberband_retrieve": (U, [P, P, U]),
            "rubberband_get_engine_version": (I, [P]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args

    @classmethod
    def load(cls) -> "RubberBand | None":
        """The library, or None where it is not installed (key lock then
        reports itself unavailable; everything else works)."""
        if cls._instance is None:
            name = ctypes.util.find_library("rubberband") or "librubberband.so.2"
            try:
                cls._instance = cls(ctypes.CDLL(name))
            except (OSError, AttributeError):
                return None
        return cls._instance

    def address(self, name: str) -> int:
        return ctypes.cast(getattr(self.lib, name), ctypes.c_void_p).value

    def function_table(self) -> list[int]:
        """Addresses in the order of layout.FN_* ."""
        return [self.address(n) for n in ("rubberband_process", "rubberband_available",
                                          "rubberband_retrieve", "rubberband_set_pitch_scale",
                                          "rubberband_reset", "rubberband_get_start_delay")]

    def new(self, sample_rate: int, engine: str = "faster") -> int:
        if engine not in KEYLOCK_ENGINES:
            raise ValueError(f"key lock engine {engine!r}: use faster or finer")
        opts = OPT_REALTIME | OPT_CHANNELS_TOGETHER | OPT_PITCH_HIGH_CONSISTENCY | OPT_WINDOW_SHORT
        if engine == "finer":
            opts |= OPT_ENGINE_FINER
        handle = self.lib.rubberband_new(sample_rate, 2, opts, 1.0, 1.0)
        self.lib.rubberband_set_max_process_size(handle, MAX_PROCESS)
        return handle

    def start_pad(self, handle: int) -> int:
        return self.lib.rubberband_get_preferred_start_pad(handle)

    def delete(self, handle: int) -> None:
        self.lib.rubberband_delete(handle)


def lookahead_frames(sample_rate: int, engine: str) -> int:
    return int(round(LOOKAHEAD_44K[engine] * sample_rate / 44100 / 64.0)) * 64
