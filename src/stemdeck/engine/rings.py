"""The lock-free single-producer/single-consumer rings between threads.

- commands: control thread -> audio thread (``ring_push``; drained in apply.py);
- events: audio thread -> control thread (``post_event``, ``events_drain``); the
  control thread sleeps until the engine writes to its wake-up descriptor
  (below), so it never polls for events;
- record: audio thread -> recorder thread (``record_block``, ``record_drain``);
- the clock: audio thread -> any thread (``publish_clock``, ``read_clock``), a
  seqlock rather than a ring: readers want the latest value, not every one.

Each publishes a record by storing the index after the record with release
ordering; the reader loads the index with acquire ordering (rt.py). A full
ring drops and counts; nobody ever waits.

Waking the events' reader. The control side may attach a file descriptor
(an eventfd, or a pipe's write end: :mod:`stemdeck.control.engine_wakeup`)
with :func:`attach_wakeup`. ``post_event`` then writes 8 bytes to it (one
``write``, on a non-blocking descriptor: it never waits; a full pipe only
refuses) when the reader had taken everything before this event, which is
when it may be asleep; events posted while it still has some to read add no
system call. The writer stores its index and then reads the reader's; the
reader stores its index and then reads the writer's again (full fences
both), so one of them sees the other: either the writer wakes the reader, or
the reader finds the new event itself and wakes itself (``events_drain``).
No GIL, no lock, no allocation on the audio thread; with nothing attached
(offline render, tests) it costs one load.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from stemdeck.engine import kernel_cache  # noqa: F401  (before any kernel compiles: where they are cached)
from stemdeck.engine import commands as C
from stemdeck.engine import layout as L
from stemdeck.engine.rt import fence_acquire, fence_release, load_acquire, store_release
from stemdeck.engine.state import (JIT, S_CLOCK, S_CLOCK_SEQ, S_CLOCK_SNAP, S_COUNTERS, S_EVENTS,
                                   S_EVENTS_INDEX, S_RECORD, S_RECORD_INDEX)


IX_WAKEUP = 1       # events_index: the wake-up descriptor + 1 (0: none), on the writer's line


@intrinsic
def _fence_full(typingctx):
    """A full fence: the store before it is visible before the load after it."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _write_wakeup(typingctx, fd):
    """``write(fd, &1, 8)`` through libc's symbol (resolved when the JIT links,
    so the kernels stay cacheable). The result is ignored: a refused write
    means the reader has a wake-up pending already."""
    sig = types.void(types.int64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(i64, [ir.IntType(32), ir.IntType(8).as_pointer(), i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "write")
        one = cgutils.alloca_once(builder, i64)
        builder.store(ir.Constant(i64, 1), one)
        builder.call(fn, [builder.trunc(args[0], ir.IntType(32)),
                          builder.bitcast(one, ir.IntType(8).as_pointer()), ir.Constant(i64, 8)])
        return context.get_dummy_value()

    return sig, codegen


def attach_wakeup(events_index: np.ndarray, fd: int | None) -> None:
    """Make ``post_event`` write to ``fd`` (None: to nothing). Set it before
    the audio starts, and close the descriptor only after it has stopped."""
    events_index[IX_WAKEUP] = 0 if fd is None else int(fd) + 1


@njit(**JIT)
def ring_push(ring, index, frame, seq, op, target, a, b, c, d, e, f):
    """Control thread: publish one record; False if the ring is full."""
    cap = ring.shape[0]
    w = index[L.IX_WRITE]                      # only this thread writes it
    if w - load_acquire(index, L.IX_READ) >= cap:
        return False
    row = w & (cap - 1)
    ring[row, C.F_FRAME] = frame
    ring[row, C.F_SEQ] = seq
    ring[row, C.F_OP] = op
    ring[row, C.F_TARGET] = target
    ring[row, C.F_A] = a
    ring[row, C.F_B] = b
    ring[row, C.F_C] = c
    ring[row, C.F_D] = d
    ring[row, C.F_E] = e
    ring[row, C.F_F] = f
    store_release(index, L.IX_WRITE, w + 1)   # the record is visible before the index
    return True


@njit(**JIT)
def post_event(st, kind, a, b, c):
    events = st[S_EVENTS]
    index = st[S_EVENTS_INDEX]
    cap = events.shape[0]
    w = index[L.IX_WRITE]
    if w - load_acquire(index, L.IX_READ) >= cap:
        st[S_COUNTERS][L.CT_EVENTS_DROPPED] += 1
        return
    row = w % cap
    events[row, 0] = kind
    events[row, 1] = a
    events[row, 2] = b
    events[row, 3] = c
    store_release(index, L.IX_WRITE, w + 1)
    wake = index[IX_WAKEUP]
    if wake != 0:
        _fence_full()
        if load_acquire(index, L.IX_READ) == w:     # the reader had taken everything: it may sleep
            _write_wakeup(wake - 1)


@njit(nogil=True, cache=True)
def events_drain(events, index):
    """Control thread: take every published event (allocates the result). An
    event published meanwhile, whose writer saw the old index, wakes the
    reader again from here (see the module docstring)."""
    w = load_acquire(index, L.IX_WRITE)
    r = index[L.IX_READ]
    cap = events.shape[0]
    out = np.empty((w - r, events.shape[1]), np.float64)
    for k in range(w - r):
        out[k] = events[(r + k) % cap]
    store_release(index, L.IX_READ, w)
    wake = index[IX_WAKEUP]
    if wake != 0 and w != r:
        _fence_full()
        if load_acquire(index, L.IX_WRITE) != w:
            _write_wakeup(wake - 1)
    return out


@njit(**JIT)
def record_block(st, out, frames):
    """Copy the block into the record ring for the writer thread; a full ring
    drops the block and counts it (the callback never waits for the disk)."""
    ring = st[S_RECORD]
    index = st[S_RECORD_INDEX]
    cap = ring.shape[0]
    w = index[L.IX_WRITE]
    if w + frames - load_acquire(index, L.IX_READ) > cap:
        st[S_COUNTERS][L.CT_RECORD_DROPPED] += frames
        return
    for i in range(frames):
        row = (w + i) & (cap - 1)
        ring[row, 0] = out[i, 0]
        ring[row, 1] = out[i, 1]
    store_release(index, L.IX_WRITE, w + frames)


@njit(nogil=True, cache=True)
def record_drain(ring, index, out):
    """Writer thread: copy up to len(out) recorded frames into ``out``; returns the count."""
    w = load_acquire(index, L.IX_WRITE)
    r = index[L.IX_READ]
    cap = ring.shape[0]
    k = min(w - r, out.shape[0])
    for i in range(k):
        row = (r + i) & (cap - 1)
        out[i, 0] = ring[row, 0]
        out[i, 1] = ring[row, 1]
    store_release(index, L.IX_READ, r + k)
    return k


@njit(**JIT)
def publish_clock(st, frame):
    """Audio thread, at a block boundary: the frame counter and the tempo
    clock, for readers on other threads. The count is odd while writing."""
    seq = st[S_CLOCK_SEQ]
    snap = st[S_CLOCK_SNAP]
    clock = st[S_CLOCK]
    n = seq[0]
    seq[0] = n + 1
    fence_release()                      # readers see the odd count before any new value
    snap[L.SN_FRAME] = frame
    snap[L.SN_BEATS] = clock[L.CK_BEATS]
    snap[L.SN_BPM] = clock[L.CK_BPM]
    snap[L.SN_BPM_TGT] = clock[L.CK_BPM_TGT]
    snap[L.SN_BPM_STEP] = clock[L.CK_BPM_STEP]
    snap[L.SN_BPM_REM] = clock[L.CK_BPM_REM]
    store_release(seq, 0, n + 2)         # ... and every new value before the even count


@njit(nogil=True, cache=True)
def read_clock(snap, seq, out):
    """Any thread: copy the latest published clock into ``out``; retries while
    a block is being published (a few hundred nanoseconds). Returns False if
    the audio thread never let go (a stuck writer)."""
    for _ in range(100000):
        before = load_acquire(seq, 0)
        if before & 1:
            continue
        for i in range(snap.shape[0]):
            out[i] = snap[i]
        fence_acquire()                  # the copies stay before the second look
        if load_acquire(seq, 0) == before:
            return True
    return False
