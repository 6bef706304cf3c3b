"""The demo's two songs, synthesised: four looping stems each, written as WAV files.

Holds the songs (:data:`SONGS`: tempo, key, arrangement), the synthesis
(:func:`render_song`: deterministic numpy, fixed seeds, same bytes on every
machine with the same numpy) and the cache (:func:`ensure_demo_stems`).

- Song 1: 120 BPM, A minor (Am F C G). Song 2: 126 BPM, D minor
  (Dm Gm Bb A); a fifth apart, so they mix in key.
- Stems: ``drums`` (kick, snare or clap, hats), ``bass``, ``chords``,
  ``lead``. Each is an 8-bar loop, stereo 16-bit (TPDF-dithered) WAV at
  44100 Hz, a whole number of frames per beat, about 2.8 MB.
- Loops are seamless: every note, echo and reverb tail that runs past the
  end of bar 8 is folded onto the start, and the effects are circular, so
  the last frame leads into the first like any other pair of frames.
- Levels leave headroom: the four stems of a song summed peak below -1 dBFS.

Threads: any non-audio thread (the demo command runs it on the main thread
before rendering). Synthesis takes a few seconds on a small machine, once;
later calls find the files and their version stamp in the cache.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported lazily: the CLI imports tools modules for --help
    import numpy as np

SAMPLE_RATE = 44100
BARS = 8
BEATS_PER_BAR = 4
STEPS_PER_BEAT = 4                       # the grid is sixteenth notes
STEMS = ("drums", "bass", "chords", "lead")
SUBTYPE = "PCM_16"
# Bump when anything below changes the audio: cached files are then rewritten.
CONTENT_VERSION = 1
STAMP_NAME = "demo-stems.json"

_TAIL_SECONDS = 4.0                      # longest note + release rendered past the loop end
_SUM_PEAK = 10 ** (-1.5 / 20)            # the four stems together peak at -1.5 dBFS


@dataclass(frozen=True)
class Song:
    """One demo song: its tempo, key and arrangement (MIDI notes on a 16th grid).

    Steps are sixteenth notes within a bar (0-15). Note tuples are
    ``(bar, step, length in steps, midi note, velocity)``.
    """

    name: str
    bpm: int
    key: str
    seed: int
    chords: tuple                        # per bar: the chord's MIDI notes
    bass_roots: tuple                    # per bar: the bass root (MIDI)
    bass_pattern: tuple                  # (step, semitones above root, steps, velocity) per bar
    lead: tuple                          # (bar, step, steps, midi, velocity)
    style: str                           # "pads" (song 1) or "stabs" (song 2)
    drums: dict = field(hash=False, compare=False, default_factory=dict)

    @property
    def frames_per_beat(self) -> int:
        fpb = SAMPLE_RATE * 60 / self.bpm
        if fpb != int(fpb):
            raise ValueError(f"{self.bpm} BPM is not a whole number of frames per beat")
        return int(fpb)

    @property
    def frames_per_step(self) -> float:
        return self.frames_per_beat / STEPS_PER_BEAT

    @property
    def loop_frames(self) -> int:
        return BARS * BEATS_PER_BAR * self.frames_per_beat

    @property
    def loop_seconds(self) -> float:
        return self.loop_frames / SAMPLE_RATE

    def stem_names(self) -> list[str]:
        return [f"{self.name}_{stem}" for stem in STEMS]


def _bars(pattern_per_bar: dict[int, tuple], default: tuple) -> tuple:
    """Expand {bar: steps} (0-based bars) to (bar, step, velocity) hits for 8 bars."""
    hits = []
    for bar in range(BARS):
        for step, vel in pattern_per_bar.get(bar, default):
            hits.append((bar, step, vel))
    return tuple(hits)


def _hat16(accent=1.0, soft=0.35, skip=()):
    return tuple((s, accent if s % 4 == 2 else soft) for s in range(16) if s not in skip)


_FOUR = tuple((s, 1.0) for s in (0, 4, 8, 12))

SONG1 = Song(
    name="song1", bpm=120, key="A minor", seed=1201, style="pads",
    # Am, F/A, C/G, G: voice-led triads around middle C
    chords=((57, 60, 64), (57, 60, 65), (55, 60, 64), (55, 59, 62)) * 2,
    bass_roots=(45, 41, 48, 43) * 2,               # A2 F2 C3 G2
    bass_pattern=((2, 0, 2, 1.0), (6, 0, 2, 0.85), (7, 12, 1, 0.55), (10, 0, 2, 1.0),
                  (14, 0, 1, 0.85), (15, 7, 1, 0.6)),
    lead=tuple((bar, step, n, midi, vel) for bar, notes in enumerate((
        ((0, 2, 76), (2, 2, 72), (4, 2, 69), (6, 2, 72), (8, 4, 76), (12, 2, 74), (14, 2, 72)),
        ((0, 6, 72), (6, 2, 69), (8, 4, 77), (12, 4, 76)),
        ((0, 2, 76), (2, 2, 79), (4, 4, 76), (8, 2, 72), (10, 2, 74), (12, 4, 76)),
        ((0, 6, 74), (6, 2, 71), (8, 8, 67)),
        ((0, 2, 81), (2, 2, 76), (4, 2, 72), (6, 2, 76), (8, 4, 81), (12, 2, 79), (14, 2, 77)),
        ((0, 6, 77), (6, 2, 76), (8, 4, 72), (12, 4, 74)),
        ((0, 2, 76), (2, 2, 74), (4, 4, 72), (8, 2, 71), (10, 2, 72), (12, 4, 74)),
        ((0, 4, 71), (4, 4, 74), (8, 8, 69)),
    )) for step, n, midi, vel in ((s, n, m, 0.9 if s % 4 == 0 else 0.75) for s, n, m in notes)),
    drums={
        "kick": _bars({3: _FOUR + ((14, 0.7),), 7: _FOUR + ((14, 0.7),)}, _FOUR),
        "snare": _bars({7: ((4, 1.0), (12, 1.0), (13, 0.45), (14, 0.6), (15, 0.8))},
                       ((4, 1.0), (12, 1.0))),
        "hat": _bars({1: _hat16(skip=(14,)), 3: _hat16(skip=(14,)), 5: _hat16(skip=(14,)),
                      7: _hat16(skip=(14,))}, _hat16()),
        "open_hat": _bars({1: ((14, 0.8),), 3: ((14, 0.8),), 5: ((14, 0.8),), 7: ((14, 0.8),)}, ()),
    },
)

SONG2 = Song(
    name="song2", bpm=126, key="D minor", seed=1262, style="stabs",
    # Dm, Gm/D, Bb/D, A/C#: D4 held on top of the first three
    chords=((62, 65, 69), (62, 67, 70), (62, 65, 70), (61, 64, 69)) * 2,
    bass_roots=(38, 43, 46, 45) * 2,               # D2 G2 Bb2 A2
    bass_pattern=((2, 0, 3, 1.0), (6, 0, 2, 0.8), (9, 12, 1, 0.6), (10, 0, 3, 1.0),
                  (14, 0, 1, 0.75), (15, 12, 1, 0.55)),
    lead=tuple((bar, step, n, midi, vel) for bar, notes in enumerate((
        ((0, 3, 81), (3, 3, 77), (6, 2, 74), (8, 3, 77), (11, 3, 81), (14, 2, 79)),
        ((0, 4, 82), (4, 2, 79), (6, 2, 74), (8, 6, 79), (14, 2, 77)),
        ((0, 3, 77), (3, 3, 74), (6, 2, 70), (8, 3, 74), (11, 3, 77), (14, 2, 79)),
        ((0, 6, 76), (6, 2, 73), (8, 8, 69)),
        ((0, 3, 86), (3, 3, 81), (6, 2, 77), (8, 3, 81), (11, 3, 86), (14, 2, 84)),
        ((0, 4, 82), (4, 2, 86), (6, 2, 82), (8, 6, 79), (14, 2, 77)),
        ((0, 3, 77), (3, 3, 79), (6, 2, 81), (8, 3, 82), (11, 3, 81), (14, 2, 79)),
        ((0, 4, 76), (4, 4, 73), (8, 8, 76)),
    )) for step, n, midi, vel in ((s, n, m, 0.9 if s % 4 == 0 else 0.75) for s, n, m in notes)),
    drums={
        "kick": _bars({}, _FOUR),
        "snare": _bars({7: ((4, 1.0), (12, 1.0), (14, 0.5), (15, 0.75))}, ((4, 1.0), (12, 1.0))),
        "hat": _bars({}, tuple((s, 0.4 if s % 2 else 0.25) for s in range(16) if s % 4 != 2)),
        "open_hat": _bars({}, ((2, 0.75), (6, 0.75), (10, 0.75), (14, 0.8))),
        "rim": _bars({b: ((3, 0.5), (11, 0.45)) if b % 2 else ((7, 0.45), (11, 0.5))
                      for b in range(BARS)}, ()),
    },
)

SONGS = (SONG1, SONG2)


# -- the cache -----------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """``$STEMDECK_CACHE/demo`` if set, else ``$XDG_CACHE_HOME/stemdeck/demo``,
    else ``~/.cache/stemdeck/demo``."""
    root = os.environ.get("STEMDECK_CACHE")
    if root:
        return Path(root).expanduser() / "demo"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "stemdeck" / "demo"


def demo_stem_paths(cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Where the stems live (``song1_drums`` -> ``DIR/song1_drums.wav``), written or not."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return {name: folder / f"{name}.wav" for song in SONGS for name in song.stem_names()}


def ensure_demo_stems(cache_dir: str | os.PathLike | None = None, *, log=None) -> dict[str, Path]:
    """Make sure the eight demo stems exist in ``cache_dir`` (default:
    :func:`default_cache_dir`) and return ``{"song1_drums": path, ...}``.

    Files are reused when the folder's version stamp names this
    :data:`CONTENT_VERSION` and every file still has the size it was written
    with; otherwise all are synthesised again. Files are written to a
    temporary name and renamed, and the stamp is written last, so an
    interrupted run is simply redone. ``log`` (a callable taking a string)
    hears what is happening.
    """
    paths = demo_stem_paths(cache_dir)
    folder = next(iter(paths.values())).parent
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / STAMP_NAME
    if _stamp_matches(stamp, paths):
        return paths
    import soundfile as sf

    sizes = {}
    for song in SONGS:
        if log:
            log(f"synthesising {song.name} ({song.bpm} BPM, {song.key}) into {folder}")
        stems = render_song(song)
        for stem, audio in stems.items():
            path = paths[f"{song.name}_{stem}"]
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                sf.write(tmp, _to_pcm16(audio, seed=song.seed + STEMS.index(stem)),
                         SAMPLE_RATE, subtype=SUBTYPE, format="WAV")
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            sizes[path.name] = path.stat().st_size
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": CONTENT_VERSION, "sample_rate": SAMPLE_RATE,
                               "files": sizes}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, stamp)
    return paths


def _stamp_matches(stamp: Path, paths: dict[str, Path]) -> bool:
    try:
        info = json.loads(stamp.read_text())
        if info.get("version") != CONTENT_VERSION or info.get("sample_rate") != SAMPLE_RATE:
            return False
        files = info["files"]
        return all(p.stat().st_size == files[p.name] for p in paths.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _to_pcm16(audio: "np.ndarray", seed: int) -> "np.ndarray":
    """Float to 16-bit with TPDF dither (fixed seed: same bytes every run)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    dither = rng.random(audio.shape) - rng.random(audio.shape)     # +-1 LSB triangular
    scaled = np.rint(audio * 32767.0 + dither)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


# -- synthesis ----------------------------------------------------------------------------------

def render_song(song: Song) -> dict[str, "np.ndarray"]:
    """The four stems of ``song`` as float64 ``(loop_frames, 2)`` arrays,
    levelled so that their sum peaks at -1.5 dBFS."""
    import numpy as np

    rng = np.random.default_rng(song.seed)
    stems = {
        "drums": _drums(song, rng),
        "bass": _bass(song),
        "chords": _chords(song, rng),
        "lead": _lead(song, rng),
    }
    # balance by peak (targets chosen from measured RMS: drums and bass lead,
    # chords and lead sit below them) ...
    targets = {"drums": 0.55, "bass": 0.42, "chords": 0.26, "lead": 0.3}
    for name, audio in stems.items():
        audio *= targets[name] / np.max(np.abs(audio))
    # ... then leave headroom for the sum of all four
    total = np.max(np.abs(sum(stems.values())))
    for audio in stems.values():
        audio *= _SUM_PEAK / total
    return stems


class _Loop:
    """A stereo loop being written: notes may run past the end; :meth:`folded`
    adds that overhang onto the start, as it sounds when the loop repeats."""

    def __init__(self, song: Song):
        import numpy as np

        self.song = song
        self.n = song.loop_frames
        self.buf = np.zeros((self.n + int(_TAIL_SECONDS * SAMPLE_RATE), 2))

    def at(self, bar: int, step: float) -> int:
        return int(round((bar * 16 + step) * self.song.frames_per_step))

    def add(self, start: int, sound: "np.ndarray", gain=1.0, pan: float = 0.0) -> None:
        """Mix ``sound`` (mono 1-D or stereo) at frame ``start``; ``pan`` -1..1, constant power."""
        n = min(len(sound), len(self.buf) - start)
        if n < len(sound):
            raise ValueError("a note longer than the loop's tail allowance")
        if sound.ndim == 1:
            angle = (pan + 1) * math.pi / 4
            self.buf[start:start + n, 0] += sound * (gain * math.cos(angle) * math.sqrt(2))
            self.buf[start:start + n, 1] += sound * (gain * math.sin(angle) * math.sqrt(2))
        else:
            self.buf[start:start + n] += sound * gain

    def folded(self) -> "np.ndarray":
        out = self.buf[:self.n].copy()
        tail = self.buf[self.n:]
        out[:len(tail)] += tail
        return out


def _t(n: int) -> "np.ndarray":
    import numpy as np

    return np.arange(n) / SAMPLE_RATE


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _adsr(gate: int, attack: float, decay: float, sustain: float, release: float) -> "np.ndarray":
    """Gate length in frames, times in seconds. Raised-cosine attack (no click),
    exponential decay to ``sustain``, and a release that reaches exactly zero."""
    import numpy as np

    a = max(int(attack * SAMPLE_RATE), 32)
    r = max(int(release * SAMPLE_RATE), 64)
    t = np.arange(gate)
    env = sustain + (1 - sustain) * np.exp(-np.maximum(t - a, 0) / max(decay * SAMPLE_RATE, 1))
    ramp = np.minimum(t / a, 1.0)
    env *= 0.5 - 0.5 * np.cos(np.pi * ramp)
    last = env[-1] if gate else 0.0
    tr = np.arange(1, r + 1)
    tail = last * np.exp(-4.0 * tr / r) * (0.5 + 0.5 * np.cos(np.pi * tr / r))
    return np.concatenate([env, tail])


def _harmonics(phase: "np.ndarray", weights, f0: float, cutoff, order: int = 2,
               max_hz: float = 16000.0) -> "np.ndarray":
    """Band-limited additive oscillator: sum of ``weights(k) * sin(k * phase)``
    through a ``order``-pole low-pass at ``cutoff`` Hz (scalar or per frame).
    Harmonics stop below ``max_hz`` (and Nyquist): no aliasing by construction."""
    import numpy as np

    kmax = int(min(max_hz, 0.45 * SAMPLE_RATE) / f0)
    out = np.zeros_like(phase)
    x = (f0 / np.asarray(cutoff, dtype=float)) ** (2 * order)
    c2 = 2 * np.cos(phase)
    s_prev, s = np.zeros_like(phase), np.sin(phase)         # sin((k-1)p), sin(kp)
    for k in range(1, kmax + 1):
        w = weights(k)
        if w:
            gain = w / np.sqrt(1 + k ** (2 * order) * x)
            if np.max(gain) < 1e-4:
                break
            out += gain * s
        s_prev, s = s, c2 * s - s_prev                       # Chebyshev recurrence
    return out


def _saw(k: int) -> float:
    return 1.0 / k


def _square(k: int) -> float:
    return 1.0 / k if k % 2 else 0.0


def _noise_band(n: int, lo: float, hi: float, rng) -> "np.ndarray":
    """White noise band-limited to lo..hi Hz with gentle 2-pole skirts."""
    import numpy as np

    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE) + 1e-9
    shape = 1 / np.sqrt(1 + (lo / f) ** 4) / np.sqrt(1 + (f / hi) ** 4)
    out = np.fft.irfft(spec * shape, n)
    return out / np.max(np.abs(out))


# drums

def _kick(bpm: int) -> "np.ndarray":
    import numpy as np

    n = int(0.42 * SAMPLE_RATE * 120 / bpm)
    t = _t(n)
    freq = 46 + 120 * np.exp(-t / 0.032) + 20 * np.exp(-t / 0.004)
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    amp = np.exp(-t / 0.2) * (0.5 - 0.5 * np.cos(np.pi * np.minimum(t / 0.0015, 1)))
    fade = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - t[-1] + 0.04) / 0.04, 0, 1))
    body = np.sin(phase) * amp * fade
    drive = np.tanh(2.2 * body) / np.tanh(2.2)             # a little saturation: punch
    return drive


def _snare(rng) -> "np.ndarray":
    import numpy as np

    n = int(0.32 * SAMPLE_RATE)
    t = _t(n)
    click = 0.5 - 0.5 * np.cos(np.pi * np.minimum(t / 0.001, 1))
    tone = (np.sin(2 * np.pi * 188 * t) + 0.5 * np.sin(2 * np.pi * 331 * t)) * np.exp(-t / 0.055)
    noise = _noise_band(n, 1200, 9000, rng) * np.exp(-t / 0.11)
    end = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - t[-1] + 0.05) / 0.05, 0, 1))
    return (0.55 * tone + 0.8 * noise) * click * end


def _clap(rng) -> "np.ndarray":
    import numpy as np

    n = int(0.3 * SAMPLE_RATE)
    t = _t(n)
    noise = _noise_band(n, 900, 6000, rng)
    env = np.zeros(n)
    for i, delay in enumerate((0.0, 0.011, 0.022)):              # three hands, then the room
        d = t - delay
        env += np.where(d >= 0, np.exp(-np.maximum(d, 0) / 0.007), 0) * (0.8 if i < 2 else 1.0)
    env += np.where(t >= 0.022, 0.45 * np.exp(-np.maximum(t - 0.022, 0) / 0.09), 0)
    attack = 0.5 - 0.5 * np.cos(np.pi * np.minimum(t / 0.0008, 1))
    env *= attack
    # each burst starts with its own short ramp so no step is a click
    env = np.convolve(env, np.hanning(33) / np.hanning(33).sum(), mode="same")
    end = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - t[-1] + 0.05) / 0.05, 0, 1))
    return noise * env * end


def _hat(rng, decay: float, length: float) -> "np.ndarray":
    import numpy as np

    n = int(length * SAMPLE_RATE)
    t = _t(n)
    # metallic: six inharmonic squares (band-limited) plus noise, all high-passed
    metal = np.zeros(n)
    for f in (205.3, 304.4, 369.6, 522.7, 540.0, 800.0):
        metal += _harmonics(2 * np.pi * f * 1.9 * t, _square, f * 1.9, 20000.0, max_hz=18000)
    spec = np.fft.rfft(0.35 * metal / np.max(np.abs(metal)) + _noise_band(n, 6000, 16000, rng))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE) + 1e-9
    out = np.fft.irfft(spec / np.sqrt(1 + (7000 / f) ** 6), n)
    out /= np.max(np.abs(out))
    attack = 0.5 - 0.5 * np.cos(np.pi * np.minimum(t / 0.0006, 1))
    end = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - t[-1] + 0.01) / 0.01, 0, 1))
    return out * np.exp(-t / decay) * attack * end


def _rim(rng) -> "np.ndarray":
    import numpy as np

    n = int(0.08 * SAMPLE_RATE)
    t = _t(n)
    tone = (np.sin(2 * np.pi * 1700 * t) * np.exp(-t / 0.012)
            + 0.6 * np.sin(2 * np.pi * 820 * t) * np.exp(-t / 0.02))
    attack = 0.5 - 0.5 * np.cos(np.pi * np.minimum(t / 0.0005, 1))
    end = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - t[-1] + 0.01) / 0.01, 0, 1))
    return (tone + 0.3 * _noise_band(n, 2000, 8000, rng) * np.exp(-t / 0.01)) * attack * end


def _drums(song: Song, rng) -> "np.ndarray":
    import numpy as np

    loop = _Loop(song)
    sends = _Loop(song)                                # what goes to the reverb
    kick = _kick(song.bpm)
    backbeat = _snare(rng) if song.style == "pads" else _clap(rng)
    closed = _hat(rng, 0.03, 0.12)
    opened = _hat(rng, 0.2, 0.5)
    rim = _rim(rng)
    open_steps = {(b, s) for b, s, _ in song.drums.get("open_hat", ())}
    for bar, step, vel in song.drums["kick"]:
        loop.add(loop.at(bar, step), kick, vel)
    for bar, step, vel in song.drums["snare"]:
        loop.add(loop.at(bar, step), backbeat, 0.55 * vel, pan=0.05)
        sends.add(loop.at(bar, step), backbeat, 0.3 * vel, pan=0.05)
    for bar, step, vel in song.drums["hat"]:
        if (bar, step) in open_steps:
            continue
        loop.add(loop.at(bar, step), closed, 0.2 * vel, pan=0.3)
    for bar, step, vel in song.drums.get("open_hat", ()):
        # an open hat rings until the next closed hat would choke it (or 2 steps)
        sound = opened[:int(2 * song.frames_per_step)].copy()
        sound[-256:] *= 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, 256))
        loop.add(loop.at(bar, step), sound, 0.2 * vel, pan=0.3)
    for bar, step, vel in song.drums.get("rim", ()):
        loop.add(loop.at(bar, step), rim, 0.25 * vel, pan=-0.4)
        sends.add(loop.at(bar, step), rim, 0.1 * vel, pan=-0.4)
    dry = loop.folded()
    wet = _reverb(sends.folded(), rng, seconds=1.2)
    return dry + wet


# bass

def _bass_note(freq: float, gate: int, vel: float, style: str) -> "np.ndarray":
    import numpy as np

    env = _adsr(gate, 0.004, 0.12, 0.65, 0.03)
    n = len(env)
    t = _t(n)
    phase = 2 * np.pi * freq * t
    if style == "pads":   # song 1: round, plucky saw
        cutoff = 220 + 1500 * vel * np.exp(-t / 0.07)
        tone = _harmonics(phase, _saw, freq, cutoff, order=2, max_hz=5000)
    else:                 # song 2: hollow square with a slower filter
        cutoff = 260 + 1100 * vel * np.exp(-t / 0.12)
        tone = _harmonics(phase, _square, freq, cutoff, order=2, max_hz=5000)
    sub = np.sin(phase)
    return (0.9 * tone + 0.55 * sub) * env * vel


def _bass(song: Song) -> "np.ndarray":
    loop = _Loop(song)
    for bar in range(BARS):
        root = song.bass_roots[bar]
        for step, semis, steps, vel in song.bass_pattern:
            gate = int(steps * song.frames_per_step * 0.85)
            loop.add(loop.at(bar, step), _bass_note(_midi_hz(root + semis), gate, vel, song.style), 1.0)
    return loop.folded()


# chords

def _pad_voice(freq: float, gate: int, detune_cents: float) -> "np.ndarray":
    import numpy as np

    env = _adsr(gate, 0.08, 0.6, 0.8, 0.45)
    f = freq * 2 ** (detune_cents / 1200)
    t = _t(len(env))
    tone = _harmonics(2 * np.pi * f * t, _saw, f, 1800.0, order=2, max_hz=7000)
    return tone * env


def _stab(freq: float, gate: int) -> "np.ndarray":
    import numpy as np

    env = _adsr(gate, 0.003, 0.09, 0.35, 0.08)
    t = _t(len(env))
    # an organ-ish stab: drawbar partials 1, 2, 3, 4, 6 with a short bright attack
    weights = {1: 1.0, 2: 0.6, 3: 0.45, 4: 0.3, 6: 0.15}
    cutoff = 1500 + 3000 * np.exp(-t / 0.04)
    tone = _harmonics(2 * np.pi * freq * t, lambda k: weights.get(k, 0.0), freq, cutoff, order=1,
                      max_hz=8000)
    return tone * env


def _sidechain(song: Song) -> "np.ndarray":
    """Gain that ducks on every beat (as if keyed by the kick), periodic and
    continuous across beats: 1 at the end of each beat, 1 at its start."""
    import numpy as np

    T = song.frames_per_beat
    t = np.arange(T) / SAMPLE_RATE
    e = np.exp(-t / 0.13) * (1 - np.exp(-t / 0.006))
    e -= (np.arange(T) / T) * e[-1]          # returns to exactly 0 at the beat's end
    g = 1 - 0.55 * e / e.max()
    return np.tile(g, BARS * BEATS_PER_BAR)


def _chords(song: Song, rng) -> "np.ndarray":
    import numpy as np

    loop = _Loop(song)
    bar_frames = 16 * song.frames_per_step
    if song.style == "pads":
        for bar, chord in enumerate(song.chords):
            gate = int(bar_frames * 0.96)
            for i, note in enumerate(chord):
                f = _midi_hz(note)
                # three detuned voices per note, spread across the stereo field
                for detune, pan in ((-9, -0.7), (0, 0.0), (8, 0.7)):
                    loop.add(loop.at(bar, 0), _pad_voice(f, gate, detune + i), 0.3, pan=pan)
        dry = loop.folded()
        wet = _reverb(dry, rng, seconds=2.2) * 0.5
        return (dry + wet) * _sidechain(song)[:, None]
    for bar, chord in enumerate(song.chords):
        for step in (3, 6, 10, 13):
            gate = int(song.frames_per_step * (1.6 if step in (6, 13) else 1.0))
            for i, note in enumerate(chord):
                loop.add(loop.at(bar, step), _stab(_midi_hz(note), gate), 0.35,
                         pan=(-0.3, 0.0, 0.3)[i % 3])
    dry = loop.folded()
    echo = _pingpong(dry, int(3 * song.frames_per_step), feedback=0.38, wet=0.35, tone_hz=3000)
    return dry + echo + _reverb(dry, rng, seconds=1.6) * 0.3


# lead

def _lead_note(freq: float, gate: int, vel: float, style: str) -> "np.ndarray":
    import numpy as np

    if style == "pads":     # song 1: a plucked saw/square lead with delayed vibrato
        env = _adsr(gate, 0.005, 0.25, 0.55, 0.12)
        t = _t(len(env))
        vib_depth = 0.004 * np.clip((t - 0.25) / 0.2, 0, 1)
        inst = freq * (1 + vib_depth * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(inst) / SAMPLE_RATE
        cutoff = 900 + 3500 * vel * np.exp(-t / 0.15)
        tone = _harmonics(phase, lambda k: 1.0 / k if k % 2 else 0.5 / k, freq, cutoff, order=2,
                          max_hz=12000)
        return tone * env * vel
    # song 2: an FM bell / electric piano: index falls as the note rings
    env = _adsr(gate, 0.003, 0.5, 0.35, 0.3)
    t = _t(len(env))
    index = 0.3 + 2.2 * vel * np.exp(-t / 0.18)
    mod = np.sin(2 * np.pi * freq * t)
    bell = np.sin(2 * np.pi * freq * 3.5 * t) * 0.15 * np.exp(-t / 0.25)
    tone = np.sin(2 * np.pi * freq * t + index * mod) + bell
    return tone * env * vel


def _lead(song: Song, rng) -> "np.ndarray":
    loop = _Loop(song)
    for bar, step, steps, note, vel in song.lead:
        gate = int(steps * song.frames_per_step * 0.92)
        loop.add(loop.at(bar, step), _lead_note(_midi_hz(note), gate, vel, song.style), 1.0,
                 pan=-0.1 if song.style == "pads" else 0.1)
    dry = loop.folded()
    echo = _pingpong(dry, int(3 * song.frames_per_step), feedback=0.42, wet=0.4, tone_hz=2500)
    return dry + echo + _reverb(dry, rng, seconds=2.0) * 0.35


# effects: circular over the loop, i.e. exactly the steady state of a loop played forever

def _pingpong(x: "np.ndarray", delay: int, feedback: float, wet: float, tone_hz: float) -> "np.ndarray":
    """Ping-pong echo of the mono sum: echoes alternate left, right, left...
    each darker than the last. Closed form of the infinite feedback series,
    applied in the frequency domain over the loop."""
    import numpy as np

    n = len(x)
    mono = np.fft.rfft(x.mean(axis=1))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    # one tap: the delay and a one-pole low-pass (each echo darker than the last)
    d = np.exp(-2j * np.pi * f * delay / SAMPLE_RATE) / (1 + 1j * f / tone_hz)
    gd = feedback * d
    left = wet * d / (1 - gd * gd)
    right = wet * feedback * d * d / (1 - gd * gd)
    return np.stack([np.fft.irfft(mono * left, n), np.fft.irfft(mono * right, n)], axis=1)


def _reverb(x: "np.ndarray", rng, seconds: float) -> "np.ndarray":
    """A plate-like reverb: decorrelated decaying noise per channel (brighter
    early, darker late), convolved circularly with the loop."""
    import numpy as np

    n = len(x)
    m = int(seconds * SAMPLE_RATE)
    t = _t(m)
    pre = int(0.018 * SAMPLE_RATE)
    out = np.empty_like(x)
    for ch in range(2):
        bright = _noise_band(m, 200, 9000, rng) * np.exp(-t * 6.9 / (0.45 * seconds))
        dark = _noise_band(m, 150, 2500, rng) * np.exp(-t * 6.9 / seconds)
        ir = bright * 0.6 + dark
        ir *= 0.5 - 0.5 * np.cos(np.pi * np.minimum(t / 0.004, 1))
        ir *= 0.5 + 0.5 * np.cos(np.pi * t / t[-1])           # ends at zero
        ir /= np.sqrt(np.sum(ir ** 2))                        # unit energy
        h = np.zeros(n)
        h[pre:pre + m] = ir[:n - pre]
        out[:, ch] = np.fft.irfft(np.fft.rfft(x[:, ch]) * np.fft.rfft(h), n)
    return out
