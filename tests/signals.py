"""Test signals: the generators that make stems and the measurements that read the output.

Every test file makes its inputs and measures its outputs with these, so a
newcomer learns one vocabulary:

Generators (``seconds`` becomes ``round(seconds * sr)`` frames)
    ``wave``    one sine as float64 mono: the exact maths, for files written at any bit depth
    ``sine``    the same as a float32 stereo stem (both channels equal), what the engine plays
    ``stereo``  two mono signals (or one, twice) as a C-contiguous (frames, 2) array
    ``dc``      a constant level, float32 stereo, by seconds or by ``frames=``

Measurements (on one channel: pass ``out[:, 0]``)
    ``amplitude``   amplitude of the ``freq`` component (least-squares fit of a sine)
    ``residual_db`` everything that is not that sine, relative to it, in dB
    ``peak_hz``     frequency of the strongest spectral peak (Hann window, interpolated)
    ``strongest``   which of some candidate frequencies is loudest (a pitch in a band)
    ``rms``, ``db``, ``dbfs``  level, a ratio in dB, a level in dB full scale
    ``onset``       the first frame louder than a threshold (None: silence)
    ``onsets``      every rise through a threshold, at least ``gap`` frames apart
    ``attacks``     drum hits: jumps of the envelope's local mean (robust to tails)
"""

from __future__ import annotations

import numpy as np

SR = 44100


# -- generators -----------------------------------------------------------------------------------

def frames(seconds: float, sr: int = SR) -> int:
    return int(round(seconds * sr))


def wave(freq: float, seconds: float, amp: float = 0.3, *, sr: int = SR, phase: float = 0.0) -> np.ndarray:
    """``amp * sin(2 pi freq t + phase)``, float64 mono."""
    t = np.arange(frames(seconds, sr)) / sr
    return amp * np.sin(2 * np.pi * freq * t + phase)


def stereo(left: np.ndarray, right: np.ndarray | None = None) -> np.ndarray:
    """(frames, 2), C-contiguous, in the inputs' dtype; ``right`` defaults to ``left``."""
    return np.ascontiguousarray(np.stack([left, left if right is None else right], axis=1))


def sine(freq: float, seconds: float, amp: float = 0.3, *, sr: int = SR, phase: float = 0.0) -> np.ndarray:
    """A stereo float32 sine stem (the float64 wave rounded once to float32)."""
    return stereo(wave(freq, seconds, amp, sr=sr, phase=phase).astype(np.float32))


def dc(level: float, seconds: float | None = None, *, frames: int | None = None, sr: int = SR) -> np.ndarray:
    """A constant float32 stereo stem: exact sample values, for timing to the frame."""
    if (seconds is None) == (frames is None):
        raise TypeError("dc() takes seconds or frames=, not both")
    n = frames if frames is not None else globals()["frames"](seconds, sr)
    return np.full((n, 2), level, np.float32)


# -- measurements --------------------------------------------------------------------------------

def _fit(x: np.ndarray, freq: float, sr: int) -> tuple[float, float]:
    """Weights (a, b) of the least-squares ``a sin(w n) + b cos(w n)`` through ``x``,
    ``w = 2 pi freq / sr``: the normal equations, with the sums of sin^2, cos^2
    and sin cos in closed form (one complex exponential per sample, as fast as
    a single DFT bin)."""
    x = np.asarray(x, dtype=np.float64)
    n, w = len(x), 2 * np.pi * freq / sr
    z = np.sum(x * np.exp(-1j * w * np.arange(n)))         # sum x cos - i sum x sin
    step = np.exp(2j * w)
    if abs(1 - step) < 1e-9:                               # 0 Hz or Nyquist: sin is all zeros
        return 0.0, float(z.real) / n
    g = (1 - step ** n) / (1 - step)                       # sum of e^(2 i w n)
    ss, cc, sc = (n - g.real) / 2, (n + g.real) / 2, g.imag / 2
    a, b = np.linalg.solve([[ss, sc], [sc, cc]], [-z.imag, z.real])
    return float(a), float(b)


def amplitude(x: np.ndarray, freq: float, sr: int = SR) -> float:
    """Amplitude of the ``freq`` component of ``x`` (one channel): a least-squares
    fit of sin and cos. Over a whole number of cycles it equals the DFT's
    ``2 |mean(x e^(-i w n))|``; over any other window it has no leakage from
    the component itself."""
    return float(np.hypot(*_fit(x, freq, sr)))


def residual_db(x: np.ndarray, freq: float, sr: int = SR) -> float:
    """Everything in ``x`` that is not the ``freq`` sine, relative to that sine, in dB."""
    x = np.asarray(x, dtype=np.float64)
    a, b = _fit(x, freq, sr)
    wn = 2 * np.pi * freq / sr * np.arange(len(x))
    fit = a * np.sin(wn) + b * np.cos(wn)
    return 20 * np.log10(np.sqrt(np.mean((x - fit) ** 2)) / np.sqrt(np.mean(fit ** 2)))


def peak_hz(x: np.ndarray, sr: int = SR) -> float:
    """Frequency of the strongest spectral bin of ``x`` (Hann window), refined by
    parabolic interpolation on the log magnitude: a few hundredths of a bin."""
    x = np.asarray(x, dtype=np.float64)
    mag = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(mag[1:-1])) + 1
    a, b, c = np.log(mag[k - 1:k + 2] + 1e-300)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / len(x)


def strongest(x: np.ndarray, freqs, sr: int = SR) -> float:
    """The candidate in ``freqs`` with the largest :func:`amplitude` in ``x``."""
    freqs = np.asarray(freqs, dtype=np.float64)
    return float(freqs[int(np.argmax([amplitude(x, f, sr) for f in freqs]))])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def db(ratio: float) -> float:
    """A ratio of levels in dB (0 counts as -240 dB rather than an error)."""
    return 20 * np.log10(max(ratio, 1e-12))


def dbfs(x: np.ndarray) -> float:
    """The peak of ``x`` in dB full scale (1.0 = 0 dBFS)."""
    return db(float(np.max(np.abs(x))))


def onset(x: np.ndarray, threshold: float = 0.0) -> int | None:
    """The first frame of ``x`` (one channel) whose magnitude exceeds ``threshold``; None if none."""
    nz = np.flatnonzero(np.abs(x) > threshold)
    return int(nz[0]) if len(nz) else None


def onsets(x: np.ndarray, threshold: float, gap: int) -> np.ndarray:
    """Frames where ``|x|`` rises above ``threshold``, keeping only rises at least
    ``gap`` frames after the last one kept (a burst's own wiggles are one onset)."""
    above = np.abs(x) > threshold
    starts = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    keep = [starts[0]] if len(starts) else []
    for s in starts[1:]:
        if s - keep[-1] > gap:
            keep.append(s)
    return np.array(keep)


def envelope(x: np.ndarray) -> np.ndarray:
    """Amplitude envelope (magnitude of the analytic signal)."""
    n = len(x)
    h = np.zeros(n)
    h[0] = 1
    h[1:(n + 1) // 2] = 2
    if n % 2 == 0:
        h[n // 2] = 1
    return np.abs(np.fft.ifft(np.fft.fft(x) * h))


def attacks(x: np.ndarray, window: int = 64, jump: float = 3.0, floor_db: float = -50.0) -> np.ndarray:
    """Frames where the envelope's mean over the next ``window`` frames is
    ``jump`` times its mean over the previous ones (``x`` is a loop: it wraps),
    ignoring levels ``floor_db`` below the loudest."""
    env = envelope(x)
    n = len(env)
    padded = np.concatenate([env[-window:], env, env[:window]])
    c = np.concatenate([[0.0], np.cumsum(padded)])
    k = np.arange(n) + window
    before = (c[k] - c[k - window]) / window
    after = (c[k + window] - c[k]) / window
    floor = env.max() * 10 ** (floor_db / 20)
    hot = np.flatnonzero((after / (before + floor) > jump) & (after > floor))
    if not len(hot):
        return hot
    return hot[np.concatenate([[True], np.diff(hot) > window])] + window // 2
