"""A real JACK server for tests, with no sound card: ``jackd -n NAME -d dummy``.

The dummy driver runs a real JACK graph on a real clock, so PortAudio's
JACK host API opens it like a device and a late callback is a real xrun.
Each :class:`JackServer` has a name unique to this test run, and
:attr:`JackServer.env` (a copy of ``os.environ`` with ``JACK_DEFAULT_SERVER``
set) points subprocesses at it. PortAudio reads ``JACK_DEFAULT_SERVER``
when it initialises (``import sounddevice``), so run the code under test in
a subprocess with ``env=server.env`` rather than in the pytest process.

Used through the ``jack_server`` and ``make_jack_server`` fixtures in
``conftest.py``; also usable as a context manager from scripts
(benchmarks)::

    with JackServer(rate=44100, period=128) as server:
        subprocess.run([...], env=server.env)
        assert server.xruns() == 0

What was learned about jackd 1.9 (Debian jackd2) here:

- readiness: ``jack_wait -c -s NAME`` prints "running" once clients can
  connect (about 0.3 s after start);
- every late client cycle logs one line containing ``XRun``
  (``JackEngine::XRun: client = PortAudio was not finished, state =
  Triggered``), naming each client unfinished at that cycle's start
  (:meth:`JackServer.xrun_blames`);
- SIGTERM stops it in milliseconds and removes its files; SIGKILL leaves
  its socket and semaphores in JACK's tmp folder (``/dev/shm``), which
  :meth:`JackServer.kill` removes; a server can be started again under the
  same name afterwards;
- PortAudio's client is named ``PortAudio`` (ports ``PortAudio:out_0``...);
- ``jack_rec`` writes a usable file only when it ends by itself (``-d``),
  not when it is killed;
- ``JACK_NO_START_SERVER=1`` (set in :attr:`env`) stops a client from
  auto-starting a default server when this one is down;
- JACK registers servers in a table of only 8 slots
  (``/dev/shm/jack-shm-registry``). A server killed with SIGKILL keeps its
  slot until a server *of the same name* starts again, so eight killed
  servers lock every JACK test on the machine out ("Too many servers
  already active"). :meth:`JackServer.stop` therefore restarts a killed
  server once and stops it properly, and :meth:`JackServer.start` frees
  the slots of dead servers (:func:`reclaim_dead_registrations`) when the
  table is full. Never leave a test's jackd SIGKILLed without this helper.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

JACK_TMP_DIR = Path("/dev/shm")  # Debian's libjack keeps sockets and semaphores here
JACK_REGISTRY = JACK_TMP_DIR / "jack-shm-registry"
_counter = itertools.count(1)
# "JackEngine::XRun: client = NAME was not finished, state = STATE" and
# "JackEngine::XRun: client NAME finished after current callback"
_XRUN_BLAME = re.compile(r"client = (?P<client>.+?) was not finished, state = (?P<state>\w+)"
                         r"|client (?P<late>.+?) finished after current callback")
_RUN_ID = uuid.uuid4().hex[:6]


def missing_tools() -> str | None:
    """Why JACK tests cannot run here, or None if they can."""
    missing = [tool for tool in ("jackd", "jack_wait", "jack_lsp") if shutil.which(tool) is None]
    if missing:
        return (
            f"needs {', '.join(missing)} (Debian: DEBIAN_FRONTEND=noninteractive apt-get install jackd2)"
        )
    return None


def registered_servers() -> list[tuple[str, int]]:
    """(name, pid) of this user's servers in JACK's server registry.

    Each slot is ``{pid_t pid; char name[]}`` with the name stored as
    ``jack-<uid>:<server name>:``; the pid is the 4 bytes before it.
    """
    try:
        data = JACK_REGISTRY.read_bytes()
    except OSError:
        return []
    servers = []
    for m in re.finditer(rb"jack-(\d+):([^:\x00]+):\x00", data):
        if int(m.group(1)) == os.getuid() and m.start() >= 4:
            (pid,) = struct.unpack_from("=i", data, m.start() - 4)
            if pid > 0:
                servers.append((m.group(2).decode(errors="replace"), pid))
    return servers


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_dead_registrations() -> list[str]:
    """Free the registry slots of servers that died without unregistering
    (SIGKILL) by starting and stopping a server of the same name, which is
    how jackd itself reclaims a slot. Returns the names reclaimed."""
    reclaimed = []
    for name, pid in registered_servers():
        if _pid_alive(pid):
            continue
        server = JackServer(name=name)
        try:
            server.start(_reclaim=False)
            reclaimed.append(name)
        except RuntimeError:
            pass
        finally:
            server.cleanup()
    return reclaimed


def unique_name() -> str:
    """A server name no other test run uses: pid, counter, random run id."""
    return f"sdt_{os.getpid()}_{next(_counter)}_{_RUN_ID}"


class JackServer:
    """One ``jackd -d dummy`` process. Not started until :meth:`start`."""

    def __init__(
        self,
        rate: int = 44100,
        period: int = 128,
        *,
        name: str | None = None,
        channels: int = 2,
        realtime: bool = True,
        log_dir: str | os.PathLike | None = None,
    ):
        self.name = name or unique_name()
        self.rate = rate
        self.period = period
        self.channels = channels
        self.realtime = realtime
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_START_SERVER="1")
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="stemdeck-jack-"))
        self.log_path = self.log_dir / f"jackd-{self.name}.log"
        self.process: subprocess.Popen | None = None
        self._clients: list[subprocess.Popen] = []
        self._killed = False  # SIGKILLed and not started again: still holds a registry slot

    @property
    def command(self) -> list[str]:
        cmd = ["jackd", "-n", self.name]
        if not self.realtime:
            cmd.append("--no-realtime")
        cmd += ["-d", "dummy", "-r", str(self.rate), "-p", str(self.period)]
        cmd += ["-C", str(self.channels), "-P", str(self.channels)]
        return cmd

    # --- lifecycle ---

    def start(self, timeout: float = 10.0, *, _reclaim: bool = True) -> JackServer:
        """Start jackd (again, after :meth:`kill` or :meth:`stop`) and wait until
        clients can connect. Raises RuntimeError with the log if it fails."""
        if self.is_alive():
            return self
        if self.is_running():
            raise RuntimeError(f"a JACK server named {self.name} is already running (not started by this helper)")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:  # append: xruns() counts across restarts
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        self._killed = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log()[log_start:]
                if "Too many servers already active" in output:
                    if _reclaim and reclaim_dead_registrations():
                        return self.start(timeout, _reclaim=False)
                    raise RuntimeError(
                        "JACK's server registry (8 slots, /dev/shm/jack-shm-registry) is full: "
                        f"registered {registered_servers()}. A server killed with SIGKILL keeps its slot "
                        "until a server of the same name starts again; stop the live ones, or start and "
                        "stop (SIGTERM) one per stale name to free its slot."
                    )
                raise RuntimeError(
                    f"{' '.join(self.command)} exited with status {self.process.returncode}:\n{output[-2000:]}"
                )
            if self.is_running():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"JACK server {self.name} not ready after {timeout} s:\n{self.log()[-2000:]}")

    def is_alive(self) -> bool:
        """The jackd process this helper started is still running."""
        return self.process is not None and self.process.poll() is None

    def is_running(self) -> bool:
        """A server with this name accepts clients (asks it with jack_wait)."""
        try:
            result = subprocess.run(
                ["jack_wait", "-c", "-s", self.name],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except subprocess.TimeoutExpired:      # it did not accept a client in 10 s
            return False
        return result.stdout.strip() == "running"

    def kill(self) -> None:
        """SIGKILL jackd, as a crash would, and remove the files it leaves.

        Clients (the stemdeck under test) see the server vanish. :meth:`start`
        may be called again to bring it back under the same name.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)  # reaped: a zombie would look alive to the registry
            self._killed = True
        self._remove_leftovers()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop clients started with :meth:`spawn_client`, then jackd (SIGTERM,
        SIGKILL if it hangs). Safe to call twice."""
        for client in self._clients:
            if client.poll() is None:
                client.terminate()
        for client in self._clients:
            try:
                client.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait(timeout=timeout)
        self._clients.clear()
        if self._killed:
            # Free the registry slot the killed jackd still holds: start it
            # once more under the same name, then stop it properly below.
            try:
                self.start(_reclaim=False)
            except RuntimeError:
                pass
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._remove_leftovers()

    def cleanup(self) -> None:
        """:meth:`stop`, then delete the log folder if this helper made it."""
        self.stop()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        # Only this server's files: jack_<name>_<uid>_<n> sockets and
        # jack_sem.<uid>_<name>_<client> semaphores.
        if not JACK_TMP_DIR.is_dir():
            return
        pattern = re.compile(rf"jack_{re.escape(self.name)}_\d+_\d+|jack_sem\.\d+_{re.escape(self.name)}_.+")
        for path in JACK_TMP_DIR.iterdir():
            if pattern.fullmatch(path.name):
                try:
                    path.unlink()
                except OSError:
                    pass

    def __enter__(self) -> JackServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    # --- observing ---

    def log(self) -> str:
        """jackd's output so far (all starts of this server)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def xruns(self) -> int:
        """XRun lines jackd has logged so far: one per late client cycle."""
        return sum(1 for line in self.log().splitlines() if "XRun" in line)

    def xrun_blames(self) -> list[tuple[str | None, str]]:
        """Every XRun line so far as (client, state); client None for the
        dummy driver's own timer (``JackTimedDriver::Process XRun``).

        At each cycle that starts before the last one finished, jackd names
        every client not yet finished, with its state then: ``Triggered``
        (woken, but the kernel had not run its thread yet), ``Running`` (it
        was inside its cycle: its callback, or its JACK library's code
        around it), or ``Finished late``. Which client a machine stall
        hits depends on which CPU the kernel woke it on (see
        docs/tuning.md, "The busy-machine check")."""
        blames: list[tuple[str | None, str]] = []
        for line in self.log().splitlines():
            if "XRun" not in line:
                continue
            m = _XRUN_BLAME.search(line)
            if m is None:
                blames.append((None, "driver"))
            elif m.group("client"):
                blames.append((m.group("client"), m.group("state")))
            else:
                blames.append((m.group("late"), "Finished late"))
        return blames

    def xruns_by_client(self, ours: str = "PortAudio", witness: str = "witness") -> tuple[int, int, int]:
        """XRun lines so far, split three ways: blamed on client ``ours``
        (stemdeck's PortAudio client), on the ``witness`` client (a
        jack_metro run beside it, to tell the machine's stalls from ours),
        and the rest (the dummy driver's own timer)."""
        counts = [0, 0, 0]
        for client, _state in self.xrun_blames():
            counts[0 if client == ours else 1 if client == witness else 2] += 1
        return tuple(counts)

    def xruns_by_state(self, client: str = "PortAudio") -> dict[str, int]:
        """XRun lines so far that blame ``client``, counted by its state then
        (``Triggered``, ``Running``, ``Finished late``; see :meth:`xrun_blames`)."""
        counts: dict[str, int] = {}
        for name, state in self.xrun_blames():
            if name == client:
                counts[state] = counts.get(state, 0) + 1
        return counts

    def ports(self, timeout: float = 10.0) -> list[str]:
        """Port names on the server (``jack_lsp``); [] if it cannot say in ``timeout``."""
        try:
            result = subprocess.run(["jack_lsp"], env=self.env, capture_output=True, text=True, timeout=timeout,
                                    check=False)
        except subprocess.TimeoutExpired:
            # seen in CI under load: jack_lsp's client open waited on another
            # client starting up; run() has killed it, ask again
            return []
        return result.stdout.split("\n")[:-1] if result.returncode == 0 else []

    def wait_for_port(self, name: str, timeout: float = 30.0) -> None:
        """Wait until a port whose name contains ``name`` exists."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(name in port for port in self.ports(timeout=max(1.0, min(5.0, deadline - time.monotonic())))):
                return
            time.sleep(0.05)
        raise TimeoutError(f"no JACK port matching {name!r} after {timeout} s; ports: {self.ports()}")

    # --- other clients ---

    def spawn_client(self, *argv: str, wait_for_port: str | None = None) -> subprocess.Popen:
        """Start a JACK client (``jack_metro``, ``jack_rec``, a stemdeck) against
        this server; it is stopped by :meth:`stop`. Its output goes to a log
        file beside jackd's. With ``wait_for_port``, return once that port
        exists."""
        log_path = self.log_dir / f"client-{len(self._clients)}-{Path(argv[0]).name}.log"
        with open(log_path, "ab") as log:
            client = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        self._clients.append(client)
        if wait_for_port is not None:
            try:
                self.wait_for_port(wait_for_port)
            except TimeoutError:
                raise TimeoutError(
                    f"{' '.join(argv)} made no port {wait_for_port!r}; its output:\n{log_path.read_text(errors='replace')}"
                ) from None
        return client

    def record(self, path: str | os.PathLike, ports: list[str], seconds: int) -> subprocess.Popen:
        """Record ``ports`` (output ports, e.g. ``PortAudio:out_0``) to a WAV
        with ``jack_rec`` for whole ``seconds`` (jack_rec takes no fractions);
        ``wait()`` on the result, then read the file (jack_rec writes a usable
        file only when it ends by itself, not when killed)."""
        if int(seconds) != seconds or seconds < 1:
            raise ValueError(f"jack_rec records whole seconds, not {seconds!r}")
        return self.spawn_client("jack_rec", "-f", str(path), "-d", str(int(seconds)), *ports)

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else "stopped"
        return f"<JackServer {self.name} {self.rate} Hz, period {self.period}, {state}>"
