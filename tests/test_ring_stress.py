"""The command ring under load: the control thread posting while the audio
thread drains, as in a live set (rings.ring_push on one side, the kernel's
apply.drain_commands on the other). Every record arrives once, in order and
whole; a full ring refuses and counts instead of overwriting a record that
has not been read. (The clock seqlock has its own such test in
test_engine_core.py.)"""

from __future__ import annotations

import threading
import time
from dataclasses import fields

import numpy as np
from numba import njit

from signals import SR
from stemdeck.engine import Engine
from stemdeck.engine import commands as C
from stemdeck.engine import layout as L
from stemdeck.engine.apply import drain_commands
from stemdeck.engine.rings import ring_push

RECORDS = 300_000
RING = 1024            # small, so both ends wrap hundreds of times and the producer often finds it full
DEADLINE_S = 120.0     # the drains themselves take about a second; a busy machine gets far more


def kernel_view(state: L.State) -> tuple:
    """The state arrays in table order: what the kernel's functions take as ``st``."""
    return tuple(getattr(state, f.name) for f in fields(state) if f.name != "table")


@njit(nogil=True)
def expected_record(seq, n):
    """The payload of record ``seq``: every field different, so a torn or shifted record shows."""
    s = float(seq)
    return (float(seq % 8191), 0.5 * s, -s, float(seq % 977), 3.0 * s + 1.0, s * s, float(n - seq))


@njit(nogil=True)
def produce(ring, index, n, waits, stop):
    """The control thread, compiled so it runs beside the consumer without the
    GIL: push records 1..n, spinning while the ring is full (counted), until
    the consumer gives up (``stop[0]``)."""
    for seq in range(1, n + 1):
        target, a, b, c, d, e, f = expected_record(seq, n)
        while not ring_push(ring, index, C.ASAP, float(seq), float(C.OP_NOP), target, a, b, c, d, e, f):
            waits[0] += 1
            if stop[0]:
                return


def check_drained(rows: np.ndarray, first: int, n: int, block: int) -> None:
    if not len(rows):
        return
    seqs = rows[:, C.F_SEQ]
    want = np.arange(first, first + len(rows))
    if not np.array_equal(seqs, want):
        bad = int(np.flatnonzero(seqs != want)[0])
        raise AssertionError(f"record {want[bad]} expected, {seqs[bad]:.0f} drained (lost, repeated or reordered)")
    expect = np.array([expected_record(int(s), n) for s in want])
    payload = rows[:, [C.F_TARGET, C.F_A, C.F_B, C.F_C, C.F_D, C.F_E, C.F_F]]
    torn = np.flatnonzero(np.any(payload != expect, axis=1))
    assert not len(torn), f"record {want[torn[0]]} corrupted: {payload[torn[0]]} != {expect[torn[0]]}"
    assert np.all(rows[:, C.F_OP] == C.OP_NOP) and np.all(rows[:, C.F_FRAME] == block)


def test_every_record_arrives_once_in_order_and_whole_while_both_threads_run():
    state = L.State.allocate(SR, 256, 8, 8, RING, 120.0)
    st = kernel_view(state)
    pending, counters = state.pending, state.counters
    drain_commands(st, 0)                      # compiled before the race starts
    waits, stop = np.zeros(1, np.int64), np.zeros(1, np.int64)
    producer = threading.Thread(target=produce, args=(state.ring, state.ring_index, RECORDS, waits, stop),
                                daemon=True)
    producer.start()
    received, block, drains = 0, 0, 0
    deadline = time.monotonic() + DEADLINE_S
    try:
        while received < RECORDS:
            assert time.monotonic() < deadline, f"only {received} of {RECORDS} records within {DEADLINE_S} s"
            block += 256
            drain_commands(st, block)          # the audio thread's drain, as at the top of a block
            k = int(counters[L.CT_PENDING])
            check_drained(pending[:k], received + 1, RECORDS, block)
            received += k
            counters[L.CT_PENDING] = 0         # as if the block applied them all
            drains += 1
    finally:
        stop[0] = 1
        producer.join(DEADLINE_S)
    drain_commands(st, block + 256)
    assert counters[L.CT_PENDING] == 0, "a record arrived twice"
    assert counters[L.CT_PENDING_FULL] == 0 and counters[L.CT_LATE] == 0
    # the race really happened: the ring wrapped, filled and was drained in pieces
    assert drains > RECORDS // RING and waits[0] > 0, (drains, int(waits[0]))


def test_a_full_ring_refuses_and_counts_instead_of_overwriting():
    e = Engine(SR, ring_size=64)
    accepted = [e.post(C.OP_NOP, 0.0, float(i)) for i in range(100)]
    assert accepted == [True] * 64 + [False] * 36
    assert e.stats()["dropped_commands"] == 36
    st = kernel_view(e.state)
    drain_commands(st, 0)
    kept = e.state.pending[:e.state.counters[L.CT_PENDING], C.F_A]
    assert list(kept) == list(range(64))       # the first 64, none overwritten by the 36 refused
    e.state.counters[L.CT_PENDING] = 0
    assert e.post(C.OP_NOP, 0.0, 100.0)        # drained: room again


def test_the_kernel_applies_every_command_posted_while_it_renders():
    """End to end: Engine.post on this thread, Engine.run_callback on another
    (the audio thread): every command accepted is applied exactly once."""
    e = Engine(SR, ring_size=256)
    out = np.zeros((64, 2), np.float32)
    e.run_callback(out)                        # compiled before the race starts
    before = e.stats()["commands"]
    stop = threading.Event()

    def audio():
        while not stop.is_set():
            e.run_callback(out)

    t = threading.Thread(target=audio, daemon=True)
    t.start()
    accepted = 0
    try:
        for i in range(100_000):
            accepted += e.post(C.OP_NOP, 0.0, float(i))
    finally:
        stop.set()
        t.join()
    e.run_callback(out)                        # the last records posted
    stats = e.stats()
    assert stats["commands"] - before == accepted and stats["dropped_commands"] == 100_000 - accepted
    assert stats["late_commands"] == 0 and e.state.counters[L.CT_PENDING] == 0
