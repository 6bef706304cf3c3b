"""``--realtime``: real-time scheduling for the audio thread, and why it was refused.

Holds :func:`prepare_portaudio` (before a PortAudio stream starts),
:func:`report_portaudio` (after: which threads really run real-time),
:func:`make_current_thread_realtime` (the null backend's clock thread),
:func:`raise_process_priority` (the fallback), :func:`check_permission`,
:func:`explain_refusal`, and the memory and kernel side: :func:`prefault`
(every server start, with :func:`keep_pages_in_place`), :func:`lock_memory`
(``--realtime``) and :func:`kernel_hint` (a kernel that cannot preempt
kernel code).

Who owns the audio thread decides what can be done:

- JACK: the callback runs on libjack's process thread, which JACK makes
  SCHED_FIFO itself when the server runs real-time (``jackd -R``, the
  default of jackd2); stemdeck only reports what it finds.
- ALSA: PortAudio creates the thread; ``PaAlsa_EnableRealtimeScheduling``
  (not in sounddevice's declarations, so looked up in the loaded library)
  asks it to use SCHED_FIFO. PortAudio ignores a refusal silently, so the
  permission is checked first and the result is verified afterwards.
- null backend: stemdeck's own thread, which sets SCHED_FIFO on itself.
- anything else (CoreAudio, WASAPI): the host API already schedules its
  audio thread for audio; nothing to do.

When the system refuses, the message says why (``RLIMIT_RTPRIO``, which
``ulimit -r`` shows; the ``CAP_SYS_NICE`` capability; a container's
real-time budget) and how to allow it, then stemdeck raises the process's
nice priority if it may, and carries on.

Control thread only, except :func:`make_current_thread_realtime`, which the
thread to be promoted calls on itself. Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

from stemdeck.threads import thread

DEFAULT_PRIORITY = 70          # SCHED_FIFO 1..99; above IRQ threads' 50, below JACK's watchdog
CAP_SYS_NICE = 23
LIMITS_HINT = ("add your user to the 'audio' group and put the lines '@audio - rtprio 95' and "
               "'@audio - memlock unlimited' in /etc/security/limits.d/audio.conf, then log in "
               "again (check with 'ulimit -r'); for a systemd service set LimitRTPRIO=95 (or "
               "AmbientCapabilities=CAP_SYS_NICE); in Docker run with --cap-add=SYS_NICE "
               "--ulimit rtprio=95")


@dataclass(frozen=True)
class ThreadSched:
    tid: int
    name: str
    policy: str          # "SCHED_FIFO", "SCHED_RR", "SCHED_OTHER", ...
    priority: int


_POLICIES = {getattr(os, n): n for n in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE")
             if hasattr(os, n)}


def supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "sched_setscheduler")


def _rtprio_limits() -> tuple[int, int] | None:
    try:
        import resource

        return resource.getrlimit(resource.RLIMIT_RTPRIO)
    except (ImportError, AttributeError, OSError, ValueError):
        return None


def _has_cap_sys_nice() -> bool | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except OSError:
        pass
    return None


def _in_container() -> bool:
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return True
    try:
        with open("/proc/1/cgroup") as f:
            text = f.read()
        return any(k in text for k in ("docker", "kubepods", "lxc", "containerd"))
    except OSError:
        return False


def allowed_priority(wanted: int = DEFAULT_PRIORITY) -> int:
    """The highest SCHED_FIFO priority up to ``wanted`` this process may take."""
    if _has_cap_sys_nice():
        return wanted
    limits = _rtprio_limits()
    if limits is None:
        return wanted
    soft = limits[0]
    if soft < 0 or soft >= wanted:          # RLIM_INFINITY is -1
        return wanted
    return soft


def make_current_thread_realtime(priority: int = DEFAULT_PRIORITY) -> tuple[bool, str]:
    """Put the calling thread in SCHED_FIFO. Returns (ok, message)."""
    if not supported():
        return False, f"real-time scheduling from stemdeck is only supported on Linux (this is {sys.platform})"
    prio = allowed_priority(priority)
    if prio < 1:
        return False, explain_refusal("RLIMIT_RTPRIO is 0")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
    except OSError as exc:
        return False, explain_refusal(exc.strerror or str(exc))
    return True, f"SCHED_FIFO priority {prio}"


def check_permission(priority: int = DEFAULT_PRIORITY) -> tuple[bool, str]:
    """Try SCHED_FIFO on a short-lived thread (then drop it). Returns (ok, message)."""
    result: list = []

    def probe():
        ok, message = make_current_thread_realtime(priority)
        if ok:
            try:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            except OSError:
                pass
        result.append((ok, message))

    t = thread(probe, "sd-rt-probe")
    t.start()
    t.join(5.0)
    return result[0] if result else (False, "the real-time probe did not finish")


def explain_refusal(error: str) -> str:
    """Why the system refused real-time scheduling, and how to allow it."""
    reasons = []
    limits = _rtprio_limits()
    if limits is not None:
        soft, hard = (_limit_text(v) for v in limits)
        reasons.append(f"RLIMIT_RTPRIO is {soft} (hard {hard}; 'ulimit -r' shows it)")
    cap = _has_cap_sys_nice()
    if cap is False:
        reasons.append("the process lacks the CAP_SYS_NICE capability")
    elif cap:
        reasons.append("the process has CAP_SYS_NICE, so the kernel's real-time budget refused it "
                       "(a container's or cgroup's cpu.rt_runtime_us may be 0)")
    if _in_container():
        reasons.append("it runs in a container")
    why = "; ".join(reasons) if reasons else "no reason given by the system"
    return (f"real-time scheduling refused ({error}): {why}. To allow it: {LIMITS_HINT}. "
            "Carrying on without it")


def _limit_text(value: int) -> str:
    return "unlimited" if value < 0 else str(value)


def raise_process_priority(nice: int = -10) -> tuple[bool, str]:
    """Lower the process's nice value (all threads). Returns (ok, message)."""
    if not hasattr(os, "setpriority"):
        return False, "cannot change the process priority on this system"
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current <= nice:
            return True, f"process priority already nice {current}"
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        return True, f"raised the process priority to nice {nice}"
    except OSError as exc:
        return False, (f"raising the process priority was refused too ({exc.strerror}): allow it with "
                       "'@audio - nice -10' in /etc/security/limits.d/audio.conf ('ulimit -e' shows it)")


def thread_scheduling() -> list[ThreadSched]:
    """Every thread of this process with its scheduling policy (Linux)."""
    out = []
    try:
        tids = sorted(int(t) for t in os.listdir("/proc/self/task"))
    except OSError:
        return out
    for tid in tids:
        try:
            policy = os.sched_getscheduler(tid)
            prio = os.sched_getparam(tid).sched_priority
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        out.append(ThreadSched(tid, name, _POLICIES.get(policy, str(policy)), prio))
    return out


def realtime_threads() -> list[ThreadSched]:
    return [t for t in thread_scheduling() if t.policy in ("SCHED_FIFO", "SCHED_RR")]


# ---------------------------------------------------------------------------------------------
# memory and the kernel
# ---------------------------------------------------------------------------------------------

def prefault(engine) -> int:
    """Write every page of the engine's state arrays once (same values), so
    the audio thread never takes a first-touch page fault, which can wait
    behind another thread's large mmap/munmap (a file load) for
    milliseconds, and keep the pages where they are afterwards
    (:func:`keep_pages_in_place`). Call before the audio starts. Returns
    the bytes touched."""
    import numpy as np

    keep_pages_in_place()
    total = 0
    for array in engine.memory():
        if isinstance(array, np.ndarray) and array.flags.c_contiguous and array.nbytes:
            raw = array.reshape(-1).view(np.uint8)
            np.bitwise_xor(raw, 0, out=raw)          # a write to every byte, values unchanged
            total += array.nbytes
    return total


_MCL_CURRENT = 1
_PR_SET_THP_DISABLE = 41


def keep_pages_in_place() -> bool:
    """Stop the kernel from collapsing this process's pages into huge pages
    later (``prctl(PR_SET_THP_DISABLE)``; Linux 3.15+). numpy asks for
    transparent huge pages on every array of 4 MB or more (the engine's
    buses, decoded samples), so khugepaged visits the process every few
    seconds; each collapse holds the process's ``mmap_lock`` for writing
    and unmaps the 2 MB range while it copies, and an audio-thread access
    to that range faults and waits. Seen on a 2-core VM: a 3.9 ms callback
    at 128 frames (2.9 ms), the thread asleep in ``lock_mm_and_find_vma``
    while khugepaged ran. Pages already huge stay so; new memory comes in
    4 KB pages, which the engine's sequential reads do not notice.
    Returns whether the kernel accepted."""
    if not supported():
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def lock_memory() -> tuple[bool, str]:
    """``mlockall(MCL_CURRENT)``: keep what is mapped now (engine state, code,
    loaded samples) in RAM. Later allocations (new loads) are not locked."""
    if not supported():
        return False, "locking memory is only done on Linux"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(_MCL_CURRENT) == 0:
        return True, "memory locked (mlockall MCL_CURRENT)"
    err = ctypes.get_errno()
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        limit = "unlimited" if soft < 0 else f"{soft // 1024} KiB"
    except (ImportError, OSError, ValueError):
        limit = "unknown"
    return False, (f"locking memory was refused ({os.strerror(err)}; RLIMIT_MEMLOCK is {limit}, "
                   "'ulimit -l' shows it): allow it with '@audio - memlock unlimited' in "
                   "/etc/security/limits.d/audio.conf; carrying on")


def kernel_preemption() -> str | None:
    """The kernel's preemption model: "none", "voluntary", "full", "lazy",
    "rt", or None when it cannot be told."""
    try:
        with open("/sys/kernel/debug/sched/preempt") as f:    # PREEMPT_DYNAMIC: "none (voluntary) full"
            for word in f.read().split():
                if word.startswith("("):
                    return word.strip("()")
    except OSError:
        pass
    version = os.uname().version if hasattr(os, "uname") else ""
    if "PREEMPT_RT" in version:
        return "rt"
    try:
        with open("/proc/cmdline") as f:
            for word in f.read().split():
                if word.startswith("preempt="):
                    return word.split("=", 1)[1]
    except OSError:
        pass
    try:
        import gzip

        with gzip.open("/proc/config.gz", "rt") as f:
            config = f.read()
    except OSError:
        return None
    for model, key in (("rt", "CONFIG_PREEMPT_RT=y"), ("full", "CONFIG_PREEMPT=y"),
                       ("lazy", "CONFIG_PREEMPT_LAZY=y"), ("voluntary", "CONFIG_PREEMPT_VOLUNTARY=y"),
                       ("none", "CONFIG_PREEMPT_NONE=y")):
        if key in config:
            return model
    return None


def kernel_hint() -> str | None:
    """Advice when the kernel lets a real-time thread wait behind kernel work."""
    model = kernel_preemption()
    if model in ("none", "voluntary"):
        what = "preempts kernel code only voluntarily" if model == "voluntary" else "does not preempt kernel code"
        return (f"this kernel {what} (preempt={model}), so the audio thread can wait milliseconds behind other programs' "
                "system calls: boot with preempt=full (PREEMPT_DYNAMIC kernels) or use a low-latency or "
                "PREEMPT_RT kernel")
    return None


# ---------------------------------------------------------------------------------------------
# the PortAudio backend
# ---------------------------------------------------------------------------------------------

def prepare_portaudio(output, priority: int = DEFAULT_PRIORITY) -> list[str]:
    """Before the stream starts: ask PortAudio's ALSA host API for SCHED_FIFO.
    Returns lines to print."""
    hostapi = output.hostapi or ""
    if not supported():
        return [f"--realtime: {hostapi or 'this host API'} schedules its own audio thread on "
                f"{sys.platform}; nothing to change"]
    if hostapi.startswith("JACK"):
        return []      # JACK's thread; reported after start
    if hostapi == "ALSA":
        ok, message = check_permission(priority)
        if not ok:
            return [f"--realtime: {message}", "--realtime: " + raise_process_priority()[1]]
        address = output.runtime.symbol("PaAlsa_EnableRealtimeScheduling")
        if not address:
            return ["--realtime: this PortAudio has no PaAlsa_EnableRealtimeScheduling; "
                    + raise_process_priority()[1]]
        enable = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int)(address)
        sd = output.runtime.module()
        enable(int(sd._ffi.cast("uintptr_t", output.stream._ptr)), 1)
        return []
    return [f"--realtime: the {hostapi} host API schedules its own audio thread; nothing to change"]


def report_portaudio(output) -> list[str]:
    """After the stream started: which threads of this process run real-time, in words."""
    hostapi = output.hostapi or ""
    if not supported():
        return []
    rt = realtime_threads()
    shown = ", ".join(f"'{t.name}' {t.policy} {t.priority}" for t in rt)
    if hostapi.startswith("JACK"):
        if rt:
            return [f"--realtime: the audio thread is JACK's, already real-time ({shown})"]
        return ["--realtime: JACK's audio thread in this process is not real-time: start the JACK "
                "server in real-time mode (jackd -R, the default; not --no-realtime) with permission "
                f"to use it ({LIMITS_HINT})"]
    if hostapi == "ALSA":
        if rt:
            return [f"--realtime: audio thread real-time ({shown})"]
        return ["--realtime: PortAudio's ALSA thread did not become real-time; " + explain_refusal("unknown")]
    return []
