"""The command records control code posts to the engine, and the facts every
layer shares: decks, buffer IDs, op names and the limits the engine accepts.

Pure Python (no numpy, no numba): config, the message table and the tools
import it at start-up.

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

#: What an op is called in messages to people (``/late seconds command``).
OP_NAMES = {OP_BIND: "bind", OP_UNBIND: "unbind", OP_PLAY: "play", OP_STOP: "stop",
            OP_VOLUME: "volume", OP_RATE: "rate", OP_DECK_LEVEL: "deck_level", OP_DECK_EQ: "deck_eq",
            OP_XFADE: "crossfade", OP_MASTER: "master", OP_TEMPO: "tempo", OP_STOP_ALL: "stop_all",
            OP_VOICE_BPM: "stem_bpm", OP_DECK_STOP: "deck_stop", OP_KEYLOCK: "keylock",
            OP_TEMPO_AHEAD: "tempo"}

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

# -- decks and buffer IDs --------------------------------------------------------------

DECKS = 4
DECK_NAMES = "ABCD"
#: Crowdstream's buffer-ID ranges per deck (100-1099 A, ... 3100-4099 D);
#: ``/play`` and ``/cue`` load into the first ID of their deck's range.
DECK_BUFFER_RANGES = tuple((100 + 1000 * d, 1100 + 1000 * d) for d in range(DECKS))
MAX_BUFFER_IDS = 8192                 # the engine's buffer table
TEST_TONE_BUFFER = MAX_BUFFER_IDS - 1  # reserved for ``/test_tone``
MAX_BUFFER_ID = TEST_TONE_BUFFER - 1   # the highest ID a client may use


def deck_for_buffer(buffer_id: int) -> int:
    """Deck index of a crowdstream buffer ID (see DECK_BUFFER_RANGES);
    anything else plays on deck A."""
    if DECK_BUFFER_RANGES[0][0] <= buffer_id < DECK_BUFFER_RANGES[-1][1]:
        return (buffer_id - DECK_BUFFER_RANGES[0][0]) // 1000
    return 0


# -- limits ------------------------------------------------------------------------------

SAMPLE_RATES = (44100, 48000)          # the rates the engine renders at (EQ, key lock tables)
MIN_BPM, MAX_BPM = 20.0, 400.0         # master tempo and a stem's own tempo
MIN_RATE, MAX_RATE = 0.25, 4.0         # a stem's playback rate
MAX_RAMP_S = 3600.0                    # the longest ramp (fade, glide) in seconds
MAX_LEVEL = 4.0                        # volumes and levels: 1.0 = unity, up to +12 dB
MAX_EQ_GAIN = 2.0                      # linear band gain: 0 kill, 1 flat, 2 = +6 dB

KEYLOCK_ENGINES = ("finer", "faster")  # Rubber Band 3 and 2
# The default is "finer" (Rubber Band 3): measured on pure tones through the
# real-time pitch shifter (benchmarks/keylock_latency.py), it is exact (0.0
# cents at scales 0.9 to 1.11), while "faster" (Rubber Band 2) is off by up to
# 27 cents at the same scales, which fails key lock's whole purpose; "faster"
# has the lower latency: a keylocked deck renders 52 ms ahead instead of 70
# (rubberband.LOOKAHEAD_44K).
DEFAULT_KEYLOCK_ENGINE = "finer"
STRETCH_MODES = ("playback_rate", "keylock")   # how a deck follows the tempo: pitch follows, or key lock
