"""The one OSC message table: every address stemdeck answers, its arguments (name, type, range, default), handler and documentation.

Everything that reads a control message goes through this table: the OSC
server's dispatcher, the score reader of ``stemdeck render``, the handlers
(:mod:`stemdeck.control.handlers`) and ``docs/osc-api.md``
(:mod:`stemdeck.control.docs`). Adding a message means adding one
:class:`Message` here and one handler method on the Controller. How each
argument type reads a value is :mod:`stemdeck.control.arg_types`.

Pure Python, no numpy: any thread may call :func:`parse`; it never touches
the engine. A bad message raises :class:`~stemdeck.errors.CommandError` whose
text is the ``/fail`` reason, written for the person who sent it, e.g.
``/stem_volume: volume 7.0 out of range 0..4``.

Compatibility: argument order, defaults and meaning follow the crowdstream
``audio_server.py`` that these clients were written for (deck names "A".."D",
EQ bands "low"/"mid"/"high", ``/play_stem`` volume 0.8 and loop on by
default, ``/deck_eq`` in DJ-knob percent with 50 = flat). Where stemdeck is
stricter (it rejects NaN, infinities and out-of-range values instead of
clamping them), the reason says so.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from stemdeck.control.arg_types import DECK_CHOICES, TYPES, Bad
# Decks, buffer IDs and limits are the engine's facts (engine/commands.py),
# named here too because the handlers read them from the table's module.
from stemdeck.engine.commands import (DECK_BUFFER_RANGES, DECK_NAMES, DECKS, MAX_BPM,  # noqa: F401
                                      MAX_BUFFER_ID, MAX_EQ_GAIN, MAX_LEVEL, MAX_RAMP_S, MAX_RATE, MIN_BPM,
                                      MIN_RATE, TEST_TONE_BUFFER)
from stemdeck.errors import CommandError

# -- constants shared with the handlers -------------------------------------------------------

BAND_NAMES = ("low", "mid", "high")
MAX_SECONDS = 86400.0    # a day: the longest time offset any message accepts

#: The summary figures: the top-level fields of ``/status.json`` (and of the
#: ``/get_status`` log line), read by :mod:`stemdeck.control.status`.
STATUS_FIELDS = (
    ("sample_rate", "i", "engine sample rate, Hz"),
    ("buffer_size", "i", "audio block size, frames (0 offline)"),
    ("latency_ms", "f", "output latency, milliseconds"),
    ("underruns", "i", "output underruns since start"),
    ("dsp_load_avg", "f", "render time / block period, average, percent"),
    ("dsp_load_peak", "f", "render time / block period, peak, percent"),
    ("cpu_percent", "f", "process CPU use, percent"),
    ("buffers_loaded", "i", "buffer IDs holding a sample"),
    ("voices_playing", "i", "stems playing now"),
    ("bpm", "f", "master tempo"),
    ("beat", "i", "beat within the bar, 1-based"),
    ("bar", "i", "bar since /reset, 1-based"),
    ("uptime_s", "f", "seconds since the server started (or since the render began)"),
    ("late_commands", "i", "commands that ran after their frame"),
)

#: ``/status.reply`` as scsynth sends it, so that a SuperCollider client reads it
#: unchanged: (field, OSC tag, scsynth's meaning, stemdeck's meaning, the
#: STATUS_FIELDS name it comes from, or a constant).
SCSYNTH_STATUS_FIELDS = (
    ("unused", "i", "unused", "always 1", 1),
    ("ugens", "i", "unit generators running", "stems playing now", "voices_playing"),
    ("synths", "i", "synths running", "stems playing now", "voices_playing"),
    ("groups", "i", "groups", f"decks: always {DECKS}", DECKS),
    ("synthdefs", "i", "synth definitions loaded", "buffer IDs holding a sample", "buffers_loaded"),
    ("avg_cpu", "f", "average CPU of the audio thread, percent",
     "DSP load: render time / block period, average, percent", "dsp_load_avg"),
    ("peak_cpu", "f", "peak CPU of the audio thread, percent",
     "DSP load, peak, percent", "dsp_load_peak"),
    ("nominal_sr", "d", "nominal sample rate", "engine sample rate, Hz", "sample_rate"),
    ("actual_sr", "d", "measured sample rate",
     "engine sample rate, Hz (the device's drift is not measured)", "sample_rate"),
)

#: ``/done /notify client_id max_logins``: how many clients scsynth's sclang may
#: expect to share the server (its ``-l`` default); client IDs are 0..MAX_LOGINS-1.
MAX_LOGINS = 64

REQUIRED = object()


class Keep:
    """Default of an optional argument that, when omitted, leaves a setting unchanged."""

    def __repr__(self):
        return "unchanged"


KEEP = Keep()


@dataclass(frozen=True)
class Arg:
    """One argument of a message."""
    name: str
    type: str                     # a key of TYPES
    doc: str
    lo: float | None = None
    hi: float | None = None
    default: Any = REQUIRED       # REQUIRED, KEEP, None or a value
    unit: str = ""
    variadic: bool = False        # last argument only: one or more values
    default_text: str = ""        # how the docs show a default of None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def osc(self) -> str:
        return TYPES[self.type].osc

    def convert(self, value):
        return TYPES[self.type].convert(value, self)


@dataclass(frozen=True)
class Message:
    """One OSC address: how to read it, what it does, who handles it."""
    address: str
    handler: str                  # Controller method ``on_<handler>``
    summary: str                  # one line
    group: str                    # docs section
    args: tuple[Arg, ...] = ()
    example: str = ""             # a score line without the time, e.g. "/stop_stem 100"
    reply: str = ""               # what comes back to the sender, if anything
    notes: str = ""               # longer doc (Markdown)
    asynchronous: bool = False    # completes later, answering /done or /fail
    live_only: bool = False       # meaningless in a score (refused by the score reader)
    origin: str = "crowdstream"   # crowdstream | scsynth | stemdeck
    reorder: Callable | None = field(default=None, compare=False)  # raw args -> canonical order

    @property
    def min_args(self) -> int:
        return sum(1 for a in self.args if a.required)

    @property
    def max_args(self) -> int | None:
        return None if any(a.variadic for a in self.args) else len(self.args)

    def usage(self) -> str:
        parts = []
        for a in self.args:
            text = a.name + ("..." if a.variadic else "")
            parts.append(text if a.required else f"[{text}]")
        return " ".join([self.address] + parts)


@dataclass(frozen=True)
class Call:
    """A validated message: the table entry and its arguments by name."""
    message: Message
    values: dict

    @property
    def address(self) -> str:
        return self.message.address

    def __getitem__(self, name):
        return self.values[name]


# -- custom argument orders ------------------------------------------------------------------

def _looks_numeric(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    if isinstance(v, str):
        try:
            float(v.strip())
        except ValueError:
            return False
        return True
    return False


def _start_group_order(args: list) -> list:
    """``/start_group start_at deck...``, or the start time anywhere among deck
    letters (``A B 8.0``, ``A 8.0 B``), as crowdstream found "the float among
    args": the last number is the start time when the first argument is not one."""
    if not args:
        return args
    if _looks_numeric(args[0]):
        return args
    for i in range(len(args) - 1, 0, -1):
        if _looks_numeric(args[i]):
            return [args[i]] + list(args[:i]) + list(args[i + 1:])
    raise CommandError("/start_group: missing start_at: give the start time in seconds "
                       "first or last, e.g. /start_group 4.0 A B")


# -- the table -------------------------------------------------------------------------------

def _id(doc="buffer ID: 100-1099 play on deck A, 1100-2099 B, 2100-3099 C, 3100-4099 D, "
            "any other ID on deck A"):
    return Arg("id", "int", doc, 0, MAX_BUFFER_ID)


def _vol(name="volume", doc="gain: 0 silent, 1 unity, up to 4 (+12 dB)", default=REQUIRED):
    return Arg(name, "float", doc, 0.0, MAX_LEVEL, default)


_DECK = Arg("deck", "deck", f"the deck: {DECK_CHOICES} (0..{DECKS - 1} accepted)")
_BAND = Arg("band", "band", "the EQ band: low (below 250 Hz), mid, high (above 2.5 kHz); "
                            "0, 1, 2 accepted")
_TIME_DOC = ("seconds after time zero (the last /reset, or the start); a time already past "
             "runs at once")


def _quant(doc="start on the next boundary of this many beats (0 = at once) instead of the "
                "/quantize setting"):
    return Arg("quantize", "quantize", doc, default=None, default_text="the /quantize setting")


def _pct(name):
    return Arg(name, "float", f"{name} band knob: 0 kill, 50 flat, 100 = +6 dB", 0.0, 100.0,
               unit="%")


MESSAGES: tuple[Message, ...] = (
    # --- buffers and stems ---
    Message(
        "/load_buffer", "load_buffer", "Load an audio file into a buffer ID.", "Buffers and stems",
        (_id(), Arg("path", "path", "audio file; relative paths in a score are relative to the "
                                    "score's folder"),
         Arg("name", "string", "display name (default: the file name without extension)",
             default=None, default_text="the file name"),
         Arg("bpm", "bpm", "the stem's own tempo (stemdeck extension): it plays at master tempo / "
                           "this; 0: it ignores the tempo", default=None,
             default_text="the server's --bpm")),
        example='/load_buffer 100 stems/drums.wav drums 126',
        reply="`/done /load_buffer id` when the sample is ready, or `/fail /load_buffer reason`",
        notes="Decoding runs off the audio thread; the file is resampled to the engine rate. "
              "Loading a file that another buffer already holds reuses that sample. Loading into "
              "an ID that is playing replaces its sample when the new one is ready, crossfading "
              "over 5 ms at the same position (crowdstream stopped it); a file that is refused "
              "changes nothing. Commands for a buffer whose "
              "load is still running wait for it and then run; in a score the load completes "
              "before the next line. With `bpm`, stems from songs at different tempos play in time: "
              "see `/stem_bpm`.",
        asynchronous=True),
    Message(
        "/free_buffer", "free_buffer", "Stop a buffer and free its memory.", "Buffers and stems",
        (_id(),), example="/free_buffer 100", reply="`/done /free_buffer id`, or `/fail /free_buffer reason`",
        notes="Stops the stem (5 ms fade), empties the ID and frees its sample's memory at once unless "
              "another ID holds the same file; commands waiting for its load get /fail.", origin="stemdeck"),
    Message(
        "/play_stem", "play_stem", "Start (or restart) the stem in a buffer.", "Buffers and stems",
        (_id(), Arg("rate", "float", "playback rate: 1 normal, 2 an octave up (changes pitch)",
                    MIN_RATE, MAX_RATE, 1.0),
         _vol(default=0.8), Arg("loop", "bool", "1 loop, 0 play once", default=True),
         Arg("start_pos", "float", "where to start, as a fraction of the buffer", 0.0, 1.0, 0.0),
         _quant()),
        example="/play_stem 100 1.0 0.8 1 0.0",
        notes="Defaults as crowdstream: rate 1, volume 0.8, loop on, from the start. A buffer "
              "plays one stem at a time: playing it again restarts it (with a 5 ms declick). "
              "The stem follows the master tempo (`/set_tempo`): its rate is multiplied by "
              "tempo / its own tempo (`/stem_bpm`; the server's `--bpm` unless given). With "
              "`/quantize` on (or the `quantize` argument, a stemdeck extension) it starts on "
              "the next beat or bar of the master clock instead of at once."),
    Message(
        "/stem_bpm", "stem_bpm", "Set the tempo a buffer's audio was made at.", "Buffers and stems",
        (_id(), Arg("bpm", "bpm", "the stem's own tempo; 0: it ignores the master tempo")),
        example="/stem_bpm 1100 126", origin="stemdeck",
        notes="A stem plays at its rate x master tempo / its own tempo, so stems from a 120 BPM "
              "song and a 126 BPM song play in time at any master tempo, beat for beat (a "
              "playing stem changes speed at once). The default is the server's `--bpm` (120), "
              "as crowdstream assumed for every stem; `/load_buffer` can give it too. A buffer "
              "still loading takes the value when it is ready."),
    Message(
        "/play_stem_section", "play_stem_section", "Play (or loop) a section of a buffer.",
        "Buffers and stems",
        (_id(), Arg("rate", "float", "playback rate", MIN_RATE, MAX_RATE),
         _vol(), Arg("loop", "bool", "1 loop the section, 0 play it once"),
         Arg("start", "float", "section start, seconds into the buffer", 0.0, MAX_SECONDS,
             unit="s"),
         Arg("duration", "float", "section length in seconds of the buffer (default: to the "
                                  "end)", 0.001, MAX_SECONDS, None, unit="s",
             default_text="to the end")),
        example="/play_stem_section 100 1.0 0.9 1 32.0 8.0",
        notes="`start` is in seconds, as the crowdstream mixer sends it (its section cue points "
              "are in seconds)."),
    Message(
        "/stop_stem", "stop_stem", "Stop the stem in a buffer (5 ms fade).", "Buffers and stems",
        (_id(),), example="/stop_stem 100",
        notes="Stopping a buffer that is loaded but not playing does nothing."),
    Message(
        "/stem_volume", "stem_volume", "Set a playing stem's volume.", "Buffers and stems",
        (_id(), _vol()), example="/stem_volume 100 0.5",
        notes="Ramped over a few milliseconds; no clicks."),
    Message(
        "/mixer_cleanup", "mixer_cleanup", "Stop everything and free every buffer.",
        "Buffers and stems", (), example="/mixer_cleanup",
        reply="`/done /mixer_cleanup`",
        notes="Loads still running are abandoned; commands waiting for them get `/fail`. "
              "Memory is freed once the audio thread lets go of the samples."),
    Message(
        "/test_tone", "test_tone", "Play a sine test tone on deck A.", "Buffers and stems",
        (Arg("freq", "float", "frequency", 20.0, 20000.0, 440.0, unit="Hz"),
         Arg("seconds", "float", "length", 0.01, 60.0, 1.0, unit="s")),
        example="/test_tone 440 1.0",
        notes=f"A real tone at -12 dBFS with 5 ms fades, in buffer {TEST_TONE_BUFFER} on deck A "
              "(so deck A's level, EQ and the master apply)."),
    # --- mixer ---
    Message(
        "/crossfade_levels", "crossfade_levels", "Set the levels of decks A and B.", "Mixer",
        (_vol("a", "deck A level: 0 silent, 1 unity"), _vol("b", "deck B level")),
        example="/crossfade_levels 1.0 0.0",
        notes="As in crowdstream these are the deck A and B faders themselves: "
              "`/crossfade_levels` and `/deck_levels` set the same two values, the last one "
              "wins. Ramped per sample."),
    Message(
        "/deck_levels", "deck_levels", "Set the four deck levels.", "Mixer",
        (_vol("a", "deck A level", default=KEEP), _vol("b", "deck B level", default=KEEP),
         _vol("c", "deck C level", default=KEEP), _vol("d", "deck D level", default=KEEP)),
        example="/deck_levels 1.0 0.0 0.0 0.0",
        notes="Omitted trailing levels keep their value (crowdstream). Ramped per sample."),
    Message(
        "/deck_filter", "deck_filter", "Set one EQ band of a deck as a linear gain.", "Mixer",
        (_DECK, _BAND, Arg("gain", "float", "linear gain: 0 kill, 1 flat, 2 = +6 dB", 0.0,
                           MAX_EQ_GAIN)),
        example="/deck_filter A low 0.0",
        notes="The EQ is a Linkwitz-Riley isolator (crossovers 250 Hz and 2.5 kHz), always on: "
              "no server flag is needed to enable it."),
    Message(
        "/deck_eq", "deck_eq", "Turn one EQ knob of a deck (DJ percent).", "Mixer",
        (_DECK, _BAND, Arg("percent", "float", "knob: 0 kill, 50 flat (0 dB), 100 = +6 dB",
                           0.0, 100.0, unit="%")),
        example="/deck_eq B low 0",
        notes="Below 50 % the gain is (percent/50)^2 (25 % = -12 dB); above 50 % it rises to "
              "+6 dB at 100 % (crowdstream treated everything above 50 % as flat)."),
    Message(
        "/deck_eq_all", "deck_eq_all", "Set all three EQ knobs of a deck (DJ percent).", "Mixer",
        (_DECK, _pct("low"), _pct("mid"), _pct("high")),
        example="/deck_eq_all A 50 50 50"),
    # --- tempo and clock ---
    Message(
        "/set_tempo", "set_tempo", "Set the master tempo; stems follow it.", "Tempo and clock",
        (Arg("bpm", "float", "beats per minute", MIN_BPM, MAX_BPM),
         Arg("ramp", "float", "glide time (stemdeck extension): the tempo moves linearly, sample "
                              "by sample, from where it is to `bpm`", 0.0, 600.0, 0.0, unit="s")),
        example="/set_tempo 126",
        notes="Every stem plays at its own rate x bpm / its own tempo (`/stem_bpm`, by default "
              "the server's `--bpm`, 120), as crowdstream's time-stretch did. How a deck changes "
              "speed is its stretch mode (`/keylock`): with `playback_rate` the pitch follows the "
              "speed, with key lock it does not. The beat clock (`/print_clock`, `/quantize`) "
              "runs at this tempo, ramps included."),
    Message(
        "/set_meter", "set_meter", "Set beats per bar for the clock.", "Tempo and clock",
        (Arg("beats", "int", "beats per bar", 1, 64),), example="/set_meter 4",
        notes="Bars count from the last `/reset` (bar 1 beat 1); `/quantize bar` starts on bars."),
    Message(
        "/print_clock", "print_clock", "Log bar and beat once per beat (or stop).",
        "Tempo and clock", (Arg("on", "bool", "1 on, 0 off", default=True),),
        example="/print_clock 1",
        notes="The live server logs one line per beat, e.g. `bar 12 beat 3 phase 0.00 bpm "
              "124.0`, when the engine renders the beat's first frame; `/notify` subscribers "
              "get `/beat bar beat` either way. A score render ignores it."),
    Message(
        "/quantize", "quantize", "Start stems on the beat: the grid for starts.", "Tempo and clock",
        (Arg("beats", "quantize", "0 off, 1 the next beat, 2, 4 or 8 beats, bar the next bar"),),
        example="/quantize 4", origin="stemdeck",
        notes="With a grid set, `/play_stem`, `/play` and `/cue`+`/start_group` start on the "
              "first boundary of the master clock at or after the time they would have started "
              "(beats count from the last `/reset`; the frame accounts for tempo ramps). Each of "
              "those messages may override it with its own `quantize` argument; a group starts "
              "on the coarsest grid its decks were cued with."),
    Message(
        "/keylock", "keylock", "Key lock a deck: tempo changes keep its pitch.", "Tempo and clock",
        (_DECK, Arg("on", "bool", "1 key lock (time-stretch), 0 playback rate (pitch follows "
                                  "tempo)")),
        example="/keylock A 1", origin="stemdeck",
        reply="`/fail /keylock reason` when Rubber Band is not installed",
        notes="Switches while playing with a short crossfade. A keylocked deck runs through "
              "Rubber Band's real-time stretcher; it renders ahead by the stretcher's latency "
              "(`/status.json` shows it) so that it stays in phase with the other decks. The "
              "server's `--stretch` sets the mode decks start in, `--keylock-engine` the Rubber "
              "Band engine."),
    Message(
        "/dance/total_movement", "total_movement", "Steer the tempo from a movement sensor.",
        "Tempo and clock",
        (Arg("value", "float", "total movement from the dance detector: 0..1, or a raw value "
                               "divided by the config's movement_max_value", 0.0, 1e9),),
        example="/dance/total_movement 0.1",
        notes="As crowdstream (the same `bpm_config.json`, `--bpm-config`): below 0.02 -> 105 "
              "BPM, below 0.05 -> 110, below 0.10 -> 115, from 0.10 rising linearly from 118 to "
              "130 BPM at 0.6 and above (the defaults). The tempo glides there: each message "
              "starts a linear ramp from the current tempo that would reach the target in 30 s "
              "going down and 14.7 s going up (the config's transition time and up/down "
              "smoothing); a stream of messages makes crowdstream's smooth exponential approach. "
              "Ignored when the server runs with `--movement-bpm off`."),
    Message(
        "/reset", "reset", "Set time zero (and bar 1) to now.", "Timed control", (),
        example="/reset",
        notes="`/play`, `/fade` and `/start_group` count their `start_at` from here; the beat "
              "clock's bar 1 beat 1 is here too."),
    # --- timed control (crowdstream's "dummy DJ" API) ---
    Message(
        "/play", "play", "Load a file onto a deck and start it at a time.", "Timed control",
        (_DECK, Arg("path", "path", "audio file"),
         Arg("start_at", "float", _TIME_DOC, 0.0, MAX_SECONDS, unit="s"), _quant()),
        example="/play A songs/one.wav 0.0",
        reply="`/fail /play reason` if the file cannot be loaded",
        notes="Uses the deck's first buffer ID (100, 1100, 2100, 3100); a file already loaded "
              "there is not loaded again. Plays looping at rate 1, volume 0.8. Quantised "
              "(`/quantize`), it starts on the first beat or bar boundary at or after `start_at`.",
        asynchronous=True),
    Message(
        "/fade", "fade", "Fade a deck's level to 0, starting at a time.", "Timed control",
        (_DECK, Arg("start_at", "float", _TIME_DOC, 0.0, MAX_SECONDS, unit="s"),
         Arg("duration", "float", "fade length; 0 cuts at once", 0.0, MAX_RAMP_S, 2.0, unit="s")),
        example="/fade A 30.0 4.0",
        notes="A linear ramp from the deck's level to 0, computed per sample in the engine."),
    Message(
        "/cue", "cue", "Load a file onto a deck and arm it for /start_group.", "Timed control",
        (_DECK, Arg("path", "path", "audio file"),
         Arg("start_pos", "float", "where to start, as a fraction of the file", 0.0, 1.0, 0.0),
         _quant("the grid the deck's `/start_group` starts on, instead of the /quantize "
                "setting")),
        example="/cue B songs/two.wav 0.0",
        reply="`/done /cue id` when the deck is loaded and armed, or `/fail /cue reason`",
        notes="Uses the deck's first buffer ID (100, 1100, 2100, 3100). The armed stem will "
              "loop at rate 1, volume 0.8.",
        asynchronous=True),
    Message(
        "/start_group", "start_group", "Start several decks on the same frame.", "Timed control",
        (Arg("start_at", "float", _TIME_DOC, 0.0, MAX_SECONDS, unit="s"),
         Arg("deck", "deck", "the decks to start, one or more", variadic=True)),
        example="/start_group 8.0 A B",
        reply="`/fail /start_group reason` for each deck left out",
        notes="The start time may also come last or between the decks (`/start_group A B 8.0`, "
              "`/start_group A 8.0 B`), as crowdstream took it. Starts each deck's "
              "cued stem; a deck already playing is left alone. A deck still loading delays "
              "the whole group until it is ready; a deck that failed to load is left out. "
              "Quantised (`/quantize`, or a `quantize` given to `/cue`: the coarsest of the "
              "group's decks wins), the group starts on the first boundary at or after `start_at`.",
        reorder=_start_group_order),
    Message(
        "/schedule_c_at", "schedule_c_at", "Start deck C's buffer 2100 at a time since the server "
        "started.", "Timed control",
        (Arg("seconds", "float", "seconds of audio since the server started (frame 0); a time "
                                 "already past starts at once", 0.0, MAX_SECONDS, unit="s"),),
        example="/schedule_c_at 8.0",
        notes="As crowdstream (its `--c_at` start-up flag's message): plays buffer 2100 looping at "
              "rate 1, volume 0.8, from the start; the buffer must be loaded (or loading) first. "
              "Unlike `start_at`, the time counts from the server's start, not from `/reset`."),
    Message(
        "/dummy", "dummy", "Log the message's words (crowdstream's test message).", "Timed control",
        (Arg("words", "string", "anything; `schedule_c_at seconds` runs `/schedule_c_at seconds`",
             default=(), variadic=True, default_text="none"),),
        example="/dummy hello",
        notes="crowdstream's debugging message: the server logs it. As there, `/dummy schedule_c_at "
              "8.0` is `/schedule_c_at 8.0`."),
    # --- status and server (SuperCollider conventions) ---
    Message(
        "/get_status", "get_status", "Log the server's state (and report it).",
        "Status and server", (), example="/get_status",
        reply="`/status.reply` (see below)",
        notes="As crowdstream: the server logs its state (the summary figures of `/status.json` "
              "and the deck levels). It also answers `/status.reply`, the same as `/status`."),
    Message(
        "/status", "status", "Report the server's state (scsynth's layout).", "Status and server",
        (), example="/status", reply="`/status.reply` (see below)", origin="scsynth",
        notes="The nine fields scsynth sends, each mapped to a stemdeck figure (see "
              "`/status.reply` below), so a SuperCollider client reads it unchanged. "
              "stemdeck's own figures are in `/status.json`."),
    Message(
        "/status.json", "status_json", "Report the state as one JSON string, per deck.",
        "Status and server", (), example="/status.json",
        reply="`/status.json.reply json`", origin="stemdeck"),
    Message(
        "/sync", "sync", "Answer once every earlier asynchronous command has finished.",
        "Status and server", (Arg("id", "int", "any number, echoed back", -2**31, 2**31 - 1),),
        example="/sync 1", reply="`/synced id`", origin="scsynth", asynchronous=True,
        notes="How a client waits for its loads: send the loads, then `/sync`, then play."),
    Message(
        "/version", "version", "Report the stemdeck version.", "Status and server", (),
        example="/version",
        reply="`/version.reply stemdeck major minor .patch branch commit`", origin="scsynth",
        notes="scsynth's six fields: the program name (`stemdeck`), major and minor as ints, "
              "the patch as a string with its leading dot (`.0`), then the git branch and "
              "commit, which are empty strings (an installed package has neither)."),
    Message(
        "/notify", "notify", "Subscribe the sender to events (or unsubscribe).",
        "Status and server", (Arg("on", "bool", "1 subscribe, 0 unsubscribe"),
                              Arg("client_id", "int", "the client ID asked for, as sclang sends it",
                                  0, 2**31 - 1, None, default_text="none")),
        example="/notify 1", reply="`/done /notify client_id max_logins`; then `/loaded id`, `/ended id`, "
                                   "`/underrun count`, `/late seconds address`, `/beat bar beat`, "
                                   "`/device lost reason`, `/device back seconds_out`, "
                                   "`/file what path outcome`, `/server stopping why`",
        notes="`/device lost reason` comes when the audio output is lost (e.g. the JACK server "
              "died) and `/device back seconds_out` when it plays again; the decks, buffers and "
              "clock are kept meanwhile, and `/status.json` shows `output` (`state`, `losses`, "
              "`reconnects`). `/file what path outcome` comes when a loaded file changes on disk: "
              "`what` is `written` (overwritten or truncated), `deleted`, `replaced` (another file "
              "renamed over it) or `moved`; `outcome` is `copied` (played on from memory), `kept` "
              "(the old data plays on), `silenced` (an unused cached sample, dropped) or `failed` "
              "(no memory for a copy: its stems went silent); see docs/media.md. "
              "`/server stopping why` comes just before the server stops. As scsynth, the "
              f"`/done` carries the sender's client ID (0..{MAX_LOGINS - 1}: the one asked for "
              "if no other sender holds it, else the lowest free one; a sender keeps its ID "
              f"until it unsubscribes) and the most clients expected ({MAX_LOGINS}).",
        origin="scsynth", live_only=True),
    Message(
        "/quit", "quit", "Stop the server.", "Status and server", (), example="/quit",
        reply="`/done /quit`; from an address the `quit_from` setting does not allow, "
              "`/fail /quit <reason>` and the server plays on",
        notes="Only honoured from the addresses in the `quit_from` setting (`--quit-from`, "
              "`STEMDECK_QUIT_FROM`, `[osc] quit_from`: `local`, the default, is this machine's "
              "loopback addresses; `any`; `none`; or addresses and networks). Before the server "
              "stops, every `/notify` subscriber gets `/server stopping <why>` (why: `/quit from "
              "host:port`, or `shutting down` on SIGINT/SIGTERM).",
        origin="scsynth", live_only=True),
)

BY_ADDRESS: dict[str, Message] = {m.address: m for m in MESSAGES}
assert len(BY_ADDRESS) == len(MESSAGES), "duplicate address in the message table"


def wire_args(address: str, args) -> tuple[list, int]:
    """What the OSC server takes of a message's arguments, as crowdstream's did:
    empty arrays are dropped (python-osc's ``send_message("/reset", [])`` sends
    one) and values past the message's last argument are ignored. Returns
    (arguments, how many were dropped). Scores stay strict (:func:`parse`)."""
    kept = [a for a in args if not (isinstance(a, list) and not a)]
    dropped = len(args) - len(kept)
    msg = BY_ADDRESS.get(address)
    hi = msg.max_args if msg is not None else None
    if hi is not None and len(kept) > hi:
        dropped += len(kept) - hi
        kept = kept[:hi]
    return kept, dropped


def lookup(address: str) -> Message:
    """The table entry for ``address``; CommandError naming the nearest one otherwise."""
    msg = BY_ADDRESS.get(address)
    if msg is not None:
        return msg
    if not isinstance(address, str) or not address.startswith("/"):
        raise CommandError(f"{address!r} is not an OSC address: addresses start with '/'")
    near = difflib.get_close_matches(address, list(BY_ADDRESS), n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise CommandError(f"{address}: unknown address{hint}")


def parse(address: str, args=()) -> Call:
    """Validate one message against the table.

    ``args`` are OSC values (int, float, str, bool; numpy scalars are fine) or,
    from a score, strings. Returns a :class:`Call` whose values are converted
    (ints, floats, bools, deck and band indices) with defaults filled in.
    """
    msg = lookup(address)
    args = list(args)
    try:
        if msg.reorder is not None:
            args = msg.reorder(args)
        n = len(args)
        lo, hi = msg.min_args, msg.max_args
        if n < lo or (hi is not None and n > hi):
            raise CommandError(f"{msg.address}: {_expects(msg)}, got {n} (usage: {msg.usage()})")
        values = {}
        for i, arg in enumerate(msg.args):
            if arg.variadic:
                values[arg.name] = tuple(_convert(arg, v) for v in args[i:])
                break
            if i < n:
                values[arg.name] = _convert(arg, args[i])
            else:
                values[arg.name] = arg.default
    except Bad as exc:
        raise CommandError(f"{msg.address}: {exc}") from None
    return Call(msg, values)


def _convert(arg: Arg, value):
    if value is None:
        kind = TYPES[arg.type].name
        raise Bad(f"{arg.name} is nil; send {'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    return arg.convert(value)


def _expects(msg: Message) -> str:
    lo, hi = msg.min_args, msg.max_args
    if hi is None:
        return f"expects at least {lo} argument{'s' if lo != 1 else ''}"
    if lo == hi:
        return f"expects {lo} argument{'s' if lo != 1 else ''}" if lo else "takes no arguments"
    return f"expects {lo} to {hi} arguments"


def path_args(address: str) -> tuple[int, ...]:
    """Positions of a message's file-path arguments, which the OSC server and
    the score reader resolve against their folder; () for a message with none
    or an address not in the table."""
    return _PATH_ARGS.get(address, ())


_PATH_ARGS = {m.address: tuple(i for i, a in enumerate(m.args) if a.type == "path") for m in MESSAGES}
