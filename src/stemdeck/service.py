"""Telling systemd how the server is: sd_notify's READY, WATCHDOG, STATUS and STOPPING.

Holds :class:`Notifier` (one datagram per message to ``$NOTIFY_SOCKET``),
:func:`watchdog_interval` (from ``$WATCHDOG_USEC`` / ``$WATCHDOG_PID``),
:class:`StreamJudge` (is the audio stream alive?) and :func:`supervise`, the
task ``stemdeck serve`` starts on its control thread when it prints ``ready``
(``examples/stemdeck.service`` and ``docs/running.md`` show the unit).

The protocol (``man sd_notify``) is a datagram of ``KEY=value`` lines to a
unix socket; a path starting with ``@`` names one in the abstract namespace.
Without ``NOTIFY_SOCKET`` nothing is sent and :func:`supervise` returns at
once; without ``WATCHDOG_USEC`` it never wakes until the server stops.

The watchdog: every half ``WATCHDOG_USEC`` it sends ``WATCHDOG=1`` if the
engine's frame counter moved since the last look (on PortAudio: within the
3 s its device monitor may take to call a stalled stream lost), so a stuck
stream (a hung clock thread, a monitor or reconnect that hangs, a frozen
process) stops the pings and systemd restarts the server after
``WatchdogSec``. One exception, decided on purpose: while the output is
lost and reconnecting (:data:`RECOVERING`; ``--reconnect``, 30 s by
default) the frame counter stands still by design, and the pings go on
for up to that window plus :data:`LOST_GRACE_SECONDS` after the last
rendered frame. A restart would throw away the decks and buffers the
reconnect keeps, and a new process could not open the missing device
either; if the device is not back in time the server exits 1 by itself
(``Restart=on-failure``), and if it hangs instead, the pings stop and the
watchdog catches it.

Threads: everything here runs on the control thread's asyncio loop, never
the audio thread; the socket is non-blocking and a refused send is dropped
(logged once), so systemd can never stall the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

log = logging.getLogger("stemdeck")

LOST_GRACE_SECONDS = 10.0      # beyond --reconnect: noticing the loss (2 s stall) and giving up
RECOVERING = ("lost", "reconnecting")    # output states of a device being reopened (audio.portaudio)


class Notifier:
    """Sends sd_notify messages to ``address`` (a path, or ``\\0name`` in the
    abstract namespace) from a non-blocking datagram socket."""

    def __init__(self, address: str):
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        self._failed = False

    @classmethod
    def from_environ(cls, environ=os.environ) -> Notifier | None:
        """The notifier ``$NOTIFY_SOCKET`` asks for, or None when it is unset or unusable."""
        where = environ.get("NOTIFY_SOCKET", "")
        if not where:
            return None
        if where.startswith("@"):
            return cls("\0" + where[1:])
        if where.startswith("/"):
            return cls(where)
        log.warning("NOTIFY_SOCKET=%r: only unix socket paths and @abstract names are supported; "
                    "not notifying systemd", where)
        return None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one message; False (logged once) if the socket refused it."""
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:       # EAGAIN (systemd busy), ECONNREFUSED, ENOENT: never wait for it
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at %s: %s (dropped; later failures are not logged)",
                            self.address.replace("\0", "@"), exc)
            return False

    def close(self) -> None:
        self._sock.close()


def watchdog_interval(environ=os.environ) -> float | None:
    """Seconds between watchdog pings (half ``WATCHDOG_USEC``), or None when
    no watchdog is asked of this process (unset, or ``WATCHDOG_PID`` is another's)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("WATCHDOG_USEC=%r: not a positive number of microseconds; no watchdog pings", usec)
        return None
    return value / 2e6


class StreamJudge:
    """Is the stream alive? ``check()`` at each watchdog wake: True while the
    engine's frame counter moves, or while ``output`` reconnects a lost device
    (for up to ``reconnect`` + :data:`LOST_GRACE_SECONDS` after the last
    frame). Also says what changed, as a status line for ``systemctl status``."""

    def __init__(self, engine, output, reconnect: float, clock=time.monotonic):
        self.engine = engine
        self.output = output
        self.reconnect = reconnect
        self.allowance = reconnect + LOST_GRACE_SECONDS
        # A PortAudio stream that stalls is only called lost (RECOVERING) by
        # its monitor after STALL_SECONDS; a ping skipped meanwhile would make
        # systemd kill the server at the next deadline, before the reconnect
        # it should be spared for. The null backend has no monitor to wait for.
        self.notice = 0.0
        if getattr(output, "kind", None) == "portaudio":
            from stemdeck.audio.portaudio import STALL_SECONDS

            self.notice = STALL_SECONDS + 1.0      # + its polling, on a busy machine
        self.clock = clock
        self.last_frame = engine.frame
        self.last_move = clock()
        self.verdict = "playing"

    def check(self) -> tuple[bool, str | None]:
        """(alive, status line when the verdict changed, else None)."""
        frame, now = self.engine.frame, self.clock()
        state = self.output.state if self.output is not None else "?"
        if frame != self.last_frame:
            self.last_frame, self.last_move = frame, now
            verdict, alive = "playing", True
        elif state in RECOVERING and now - self.last_move <= self.allowance:
            verdict, alive = "reconnecting", True
        elif now - self.last_move <= self.notice:
            verdict, alive = self.verdict, True      # not yet: the output may be about to call it lost
        else:
            verdict, alive = "stuck", False
        still = now - self.last_move
        if verdict == self.verdict:
            return alive, None
        previous, self.verdict = self.verdict, verdict
        clock = f"engine clock at {frame / self.engine.sample_rate:.1f} s"
        if verdict == "playing":
            if previous == "stuck":
                log.warning("watchdog: the engine's clock moves again (%s); telling systemd it is alive", clock)
            return alive, f"playing ({clock})"
        if verdict == "reconnecting":
            return alive, f"audio device lost, reconnecting (--reconnect {self.reconnect:g} s); {clock}"
        why = f"output {state}" + (", for longer than the reconnect window" if state in RECOVERING else "")
        log.error("watchdog: the engine's clock has not moved for %.1f s (%s, %s): no longer telling "
                  "systemd it is alive (it restarts stemdeck if this lasts WatchdogSec)", still, why, clock)
        return alive, f"stuck: no audio rendered for {still:.1f} s ({why}); {clock}"


async def supervise(server, environ=os.environ) -> None:
    """The control-thread task for ``server`` (a :class:`stemdeck.live.Server`
    that just printed ``ready``): READY=1 now, WATCHDOG=1 while the stream
    lives, STOPPING=1 when the task is cancelled (the server stops).
    Returns at once when ``NOTIFY_SOCKET`` is unset."""
    notifier = Notifier.from_environ(environ)
    if notifier is None:
        return
    interval = watchdog_interval(environ)
    s = server.settings
    notifier.send("READY=1", f"STATUS=playing: {s.sample_rate} Hz, {s.buffer_size}-frame blocks, "
                             f"{s.backend} backend, OSC on {s.host}:{s.port}")
    try:
        if interval is None:
            await asyncio.Event().wait()            # nothing to do until the stop
        judge = StreamJudge(server.engine, server.output, server.reconnect)
        while True:
            await asyncio.sleep(interval)
            alive, status = judge.check()
            lines = (["WATCHDOG=1"] if alive else []) + ([f"STATUS={status}"] if status else [])
            if lines:
                notifier.send(*lines)
    except asyncio.CancelledError:
        notifier.send("STOPPING=1", "STATUS=stopping")
        raise
    finally:
        notifier.close()
