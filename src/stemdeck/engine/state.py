"""The engine state as the kernel sees it: a tuple of arrays viewed through
the state table (one row per array: address and shape). Any thread; the
views are made on every call, which costs nothing and allocates nothing.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit

from stemdeck.engine import kernel_cache  # noqa: F401  (before any kernel compiles: where they are cached)
from stemdeck.engine.rt import address_as_pointer

# error_model="numpy": a float division by zero gives inf/nan instead of
# raising, so no exception path (which would need the GIL) is compiled in.
JIT = dict(nogil=True, cache=True, error_model="numpy")

# positions of the arrays in the state tuple (the layout.State field order)
(S_COUNTERS, S_PARAMS, S_CLOCK, S_RAMPS, S_VF, S_VI, S_SLOTS, S_SLOT_REFS, S_BUFFERS,
 S_BUFFER_BPM, S_RING, S_RING_INDEX, S_PENDING, S_EVENTS, S_EVENTS_INDEX, S_EQ_COEFS,
 S_EQ_STATE, S_BUS, S_LIMITER, S_DURATIONS, S_DECK_ACTIVE, S_RECORD, S_RECORD_INDEX,
 S_KL_I, S_KL_F, S_KL_FN, S_KL_PTRS, S_KL_IN, S_KL_OUT, S_KL_FIFO, S_KL_DELAY, S_CLOCK_SNAP,
 S_CLOCK_SEQ) = range(33)
N_ARRAYS = 33


@njit(inline="always")
def _p(table, i):
    return address_as_pointer(table[i, 0])


@njit(**JIT)
def unpack(table):
    """View every state array through its address in ``table`` (no copies)."""
    t = table
    return (
        carray(_p(t, 0), (t[0, 1],), np.int64),
        carray(_p(t, 1), (t[1, 1],), np.float64),
        carray(_p(t, 2), (t[2, 1],), np.float64),
        carray(_p(t, 3), (t[3, 1], t[3, 2]), np.float64),
        carray(_p(t, 4), (t[4, 1], t[4, 2]), np.float64),
        carray(_p(t, 5), (t[5, 1], t[5, 2]), np.int64),
        carray(_p(t, 6), (t[6, 1], t[6, 2]), np.int64),
        carray(_p(t, 7), (t[7, 1], t[7, 2]), np.int64),
        carray(_p(t, 8), (t[8, 1], t[8, 2]), np.int64),
        carray(_p(t, 9), (t[9, 1],), np.float64),
        carray(_p(t, 10), (t[10, 1], t[10, 2]), np.float64),
        carray(_p(t, 11), (t[11, 1],), np.int64),
        carray(_p(t, 12), (t[12, 1], t[12, 2]), np.float64),
        carray(_p(t, 13), (t[13, 1], t[13, 2]), np.float64),
        carray(_p(t, 14), (t[14, 1],), np.int64),
        carray(_p(t, 15), (t[15, 1], t[15, 2]), np.float64),
        carray(_p(t, 16), (t[16, 1],), np.float64),
        carray(_p(t, 17), (t[17, 1], t[17, 2], t[17, 3]), np.float32),
        carray(_p(t, 18), (t[18, 1],), np.float64),
        carray(_p(t, 19), (t[19, 1],), np.float32),
        carray(_p(t, 20), (t[20, 1],), np.int64),
        carray(_p(t, 21), (t[21, 1], t[21, 2]), np.float32),
        carray(_p(t, 22), (t[22, 1],), np.int64),
        carray(_p(t, 23), (t[23, 1], t[23, 2]), np.int64),
        carray(_p(t, 24), (t[24, 1], t[24, 2]), np.float64),
        carray(_p(t, 25), (t[25, 1],), np.int64),
        carray(_p(t, 26), (t[26, 1], t[26, 2]), np.int64),
        carray(_p(t, 27), (t[27, 1], t[27, 2], t[27, 3]), np.float32),
        carray(_p(t, 28), (t[28, 1], t[28, 2], t[28, 3]), np.float32),
        carray(_p(t, 29), (t[29, 1], t[29, 2], t[29, 3]), np.float32),
        carray(_p(t, 30), (t[30, 1], t[30, 2], t[30, 3]), np.float32),
        carray(_p(t, 31), (t[31, 1],), np.float64),
        carray(_p(t, 32), (t[32, 1],), np.int64),
    )
