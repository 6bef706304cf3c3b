"""The command records control code posts to the engine.

Any control thread may *build* records; exactly one thread at a time (the
control thread that owns the :class:`~stemdeck.engine.engine.Engine`) may
*post* them. Records are rows of float64 so that one lock-free ring carries
them all; integers (frames, IDs, slots) stay exact up to 2**53.

Row layout (``REC_WIDTH`` columns)::

    0 frame   absolute engine frame it takes effect at, or ASAP (-1)
    1 seq     arrival order, assigned on push (ties on frame keep order)
    2 op      one of the OP_* codes below
    3 target  buffer ID, deck index or slot, per op
    4..9      arguments a..f, per op (see each OP_* comment)
"""

REC_WIDTH = 10
ASAP = -1.0

F_FRAME, F_SEQ, F_OP, F_TARGET, F_A, F_B, F_C, F_D, F_E, F_F = range(REC_WIDTH)

# op codes: target / arguments
OP_NOP = 0
OP_BIND = 1          # buffer_id / a=slot, b=deck (-1: by ID range)
OP_UNBIND = 2        # buffer_id / -  (stops its voices, releases its slot)
OP_PLAY = 3          # buffer_id / a=rate b=volume c=flags d=start (0..1 of the buffer)
                     #             e=section start (s, -1 none) f=section duration (s)
OP_STOP = 4          # buffer_id / -
OP_VOLUME = 5        # buffer_id / a=volume b=ramp frames (0: default)
OP_RATE = 6          # buffer_id / a=rate
OP_DECK_LEVEL = 7    # deck / a=level b=ramp frames (0: default)
OP_DECK_EQ = 8       # deck / a=band (0 low, 1 mid, 2 high) b=linear gain c=ramp frames
OP_XFADE = 9         # - / a=gain on deck A b=gain on deck B c=ramp frames
OP_MASTER = 10       # - / a=volume b=ramp frames
OP_TEMPO = 11        # - / a=bpm b=ramp frames (0: at once)
OP_STOP_ALL = 12     # - / -
OP_VOICE_BPM = 13    # buffer_id / a=source bpm (0: the stem ignores the master tempo)
OP_DECK_STOP = 14    # deck / -  (stops every voice on the deck)
OP_KEYLOCK = 15      # deck / a=1 on, 0 off
OP_TEMPO_AHEAD = 16  # (made by the engine from OP_TEMPO) as OP_TEMPO, c=the frame it was due
OP_COUNT = 17

# A flag on the op code: the command belongs to a message that came with no
# time ("as soon as possible"); its frame only keeps the message's commands
# together. If that frame has passed when the engine sees it, it runs at once
# and is not counted late: only scheduled and timetagged commands can be late.
SOFT = 1 << 10
OP_MASK = SOFT - 1


class Soon(int):
    """An ``at`` frame that only keeps an untimed message's commands together
    (posted with the SOFT flag). Arithmetic on it gives a plain int, so a
    frame computed from it is an ordinary deadline again."""

# PLAY flags
PLAY_LOOP = 1

# events the engine posts back (rows of EV_WIDTH float64): kind, a, b, c
EV_WIDTH = 4
EV_SLOT_RELEASED = 1  # a=slot: control may free the sample's memory now
EV_ENDED = 2          # a=buffer_id b=frame: a one-shot voice reached its end
EV_LATE = 3           # a=op b=frames late c=target: a command ran after its frame
EV_VOICES_FULL = 4    # a=buffer_id: PLAY found no free voice
EV_UNBOUND = 5        # a=op b=buffer_id: a command named a buffer with no sample
EV_KEYLOCK_UNAVAILABLE = 6  # a=deck: key lock asked for, but Rubber Band is not installed

DECKS = 4
DECK_NAMES = "ABCD"


def deck_for_buffer(buffer_id: int) -> int:
    """Deck index of a crowdstream buffer ID: 100-1099 A, 1100-2099 B, 2100-3099 C,
    3100-4099 D; anything else plays on deck A."""
    if 100 <= buffer_id < 4100:
        return (buffer_id - 100) // 1000
    return 0
