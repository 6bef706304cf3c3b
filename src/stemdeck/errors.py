"""The one error hierarchy: every failure a person can act on is one of these.

Any thread may raise them; the audio callback never raises (it counts).
"""


class StemdeckError(Exception):
    """Base class: the message is written for the person running stemdeck."""


class UsageError(StemdeckError):
    """A bad flag, setting or argument: the CLI exits with status 2."""


class MediaError(StemdeckError):
    """A file that cannot be used as audio (missing, not audio, corrupt, too big)."""


class ScoreError(StemdeckError):
    """A malformed score line; the message starts with ``file:line:``."""


class CommandError(StemdeckError):
    """A control message with a bad argument; becomes a ``/fail`` reply."""


class DeviceError(StemdeckError):
    """The audio device cannot be opened or was lost."""
