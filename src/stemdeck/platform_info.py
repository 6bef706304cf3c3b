"""What machine stemdeck runs on, and the buffer size it should start with.

Holds :func:`detect` and :class:`PlatformInfo`. Detection reads files the
kernel publishes (``/proc/device-tree/model``, ``/proc/cpuinfo``,
``/proc/meminfo``) under an overridable root directory, so tests run it on
fixture trees; on macOS it asks ``sysctl``. It never guesses a board from the
CPU architecture alone: an ARM CPU is not a Raspberry Pi, and an x86 CPU is
not a desktop.

Called from the control thread at start-up (and by ``stemdeck tune`` and the
reports); never from the audio thread. Imports only the standard library.
"""

from __future__ import annotations

import os
import platform as _platform
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Default buffer size (frames) per tier. The Pi 4 must hold the reference
# workload at 1024 (tools/workload.py); a Pi 5 and an ordinary desktop at 512; a
# strong desktop at 256. Boards older than the Pi 4 are slower than it, so
# they start larger rather than at the "other machine" 512.
TIER_BUFFER_SIZE = {
    "raspberry-pi-old": 2048,
    "raspberry-pi-4": 1024,
    "raspberry-pi-5": 512,
    "other": 512,
    "strong-desktop": 256,
}

STRONG_DESKTOP_CORES = 8

# Raspberry Pi board type from the new-style revision code (bits 4..11),
# see the Raspberry Pi documentation "Raspberry Pi revision codes".
# Value: the generation whose speed class the board belongs to.
_PI_REVISION_TYPES = {
    0x00: 1, 0x01: 1, 0x02: 1, 0x03: 1,  # A, B, A+, B+
    0x04: 2,  # 2B
    0x06: 1,  # CM1
    0x08: 3, 0x0A: 3, 0x0D: 3, 0x0E: 3, 0x10: 3,  # 3B, CM3, 3B+, 3A+, CM3+
    0x09: 1, 0x0C: 1,  # Zero, Zero W
    0x12: 3,  # Zero 2 W (the Pi 3's SoC)
    0x11: 4, 0x13: 4, 0x14: 4, 0x15: 4,  # 4B, 400, CM4, CM4S
    0x17: 5, 0x18: 5, 0x19: 5, 0x1A: 5,  # 5, CM5, 500, CM5 Lite
}

_APPLE_STRONG = re.compile(r"\bM\d+\s+(Pro|Max|Ultra)\b")


@dataclass(frozen=True)
class PlatformInfo:
    """The machine, as far as stemdeck's defaults care.

    ``tier`` is one of the keys of :data:`TIER_BUFFER_SIZE`; ``label`` says
    the tier in words ("Raspberry Pi 4", "strong desktop, 16 cores") and is
    what ``stemdeck`` prints after "platform default"; ``description`` names
    the machine itself ("Raspberry Pi 4 Model B Rev 1.4, 4 cores").
    """

    system: str  # "Linux", "Darwin", ...
    model: str | None  # board model (device tree) or Mac model, if known
    cpu: str | None  # CPU brand string, if the system gives one
    cores: int  # logical CPUs this process may use
    memory_mb: int | None
    virtual: bool  # the CPU reports running under a hypervisor
    tier: str
    label: str
    default_buffer_size: int

    @property
    def description(self) -> str:
        if self.system == "Darwin":  # hw.model ("Mac14,9") says less than the chip
            name = self.cpu or self.model
        else:  # a board model ("Raspberry Pi 4 ...") says more than its CPU
            name = self.model or self.cpu
        name = name or f"unknown {self.system} machine"
        if self.virtual:
            name += " (virtual machine)"
        cores = f"{self.cores} core" + ("" if self.cores == 1 else "s")
        return f"{name}, {cores}"

    def default_cache_mb(self) -> int:
        """A quarter of RAM for the decoded-sample cache, 256..2048 MB.

        A quarter leaves room for the OS, the page cache that memory-mapped
        stems rely on, and the rest of the process on a 2 GB Pi 4.
        """
        if not self.memory_mb:
            return 1024
        return max(256, min(2048, self.memory_mb // 4 // 64 * 64))


def _read_text(path: Path) -> str | None:
    try:
        # device-tree strings end in NUL; some files are not valid UTF-8.
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _cpuinfo_fields(text: str) -> tuple[dict[str, str], int]:
    """First value of each field in /proc/cpuinfo, and the processor count."""
    fields: dict[str, str] = {}
    processors = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            processors += 1
        fields.setdefault(key, value.strip())
    return fields, processors


def _meminfo_mb(text: str | None) -> int | None:
    if not text:
        return None
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) // 1024 if m else None


def raspberry_pi_generation(model: str | None, revision: str | None) -> int | None:
    """1..5 for a Raspberry Pi (by speed class), None for anything else.

    The model string is authoritative ("Raspberry Pi 4 Model B Rev 1.4",
    "Raspberry Pi 400 Rev 1.0", "Raspberry Pi Compute Module 5 Rev 1.0",
    "Raspberry Pi Zero 2 W Rev 1.0"); the revision code is the fallback for
    kernels that publish no model.
    """
    if model and model.startswith("Raspberry Pi"):
        rest = model[len("Raspberry Pi"):]
        if re.match(r"\s+Zero 2\b", rest):
            return 3
        if re.match(r"\s+Zero\b", rest) or re.match(r"\s+(Model\s+)?[AB]\b", rest):
            return 1
        m = re.match(r"\s+(?:Compute Module\s+)?(\d+)", rest)
        if m:
            number = int(m.group(1))
            return number // 100 if number >= 100 else number  # 400 -> 4, 500 -> 5
        return 1
    if revision:
        try:
            code = int(revision, 16)
        except ValueError:
            return None
        if code & (1 << 23):  # new-style revision code
            return _PI_REVISION_TYPES.get((code >> 4) & 0xFF)
    return None


def _run_sysctl(name: str) -> str | None:
    try:
        result = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = result.stdout.strip()
    return value if result.returncode == 0 and value else None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset/cgroup cpusets
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def detect(
    root: str | os.PathLike = "/",
    *,
    system: str | None = None,
    cores: int | None = None,
    sysctl: Mapping[str, str] | Callable[[str], str | None] | None = None,
) -> PlatformInfo:
    """Detect the machine.

    ``root``: where ``proc/`` lives (a fixture tree in tests). With the real
    root the core count is the CPUs this process may use; under another root
    it is the processor count in that tree's ``proc/cpuinfo``. ``system``
    overrides ``platform.system()``. ``cores`` overrides the core count.
    ``sysctl`` (macOS) maps sysctl names to values, or is a function doing
    that; by default the ``sysctl`` command is run.
    """
    root = Path(root)
    system = system or _platform.system()
    real_root = root.resolve() == Path("/").resolve()
    model = cpu = None
    memory_mb = None
    virtual = False
    generation = None
    detected_cores = None

    if system == "Darwin":
        lookup = sysctl.get if isinstance(sysctl, Mapping) else (sysctl or _run_sysctl)
        cpu = lookup("machdep.cpu.brand_string")
        model = lookup("hw.model")
        ncpu = lookup("hw.logicalcpu") or lookup("hw.ncpu")
        detected_cores = int(ncpu) if ncpu and ncpu.isdigit() else None
        memsize = lookup("hw.memsize")
        memory_mb = int(memsize) // (1024 * 1024) if memsize and memsize.isdigit() else None
        virtual = (lookup("kern.hv_vmm_present") or "0").strip() == "1"
    else:
        model = _read_text(root / "proc/device-tree/model") or None
        cpuinfo = _read_text(root / "proc/cpuinfo") or ""
        fields, processors = _cpuinfo_fields(cpuinfo)
        # Raspberry Pi kernels repeat the board model in cpuinfo ("Model").
        model = model or fields.get("Model") or None
        cpu = fields.get("model name") or fields.get("Hardware") or None
        virtual = "hypervisor" in fields.get("flags", "").split()
        generation = raspberry_pi_generation(model, fields.get("Revision"))
        memory_mb = _meminfo_mb(_read_text(root / "proc/meminfo"))
        if processors:
            detected_cores = processors

    if cores is None:
        if system == "Darwin" or not real_root:
            cores = detected_cores or (_usable_cpus() if real_root else 1)
        else:
            # The CPUs this process may use: a container limited to two
            # cores of a 32-core host is a two-core machine for us.
            cores = _usable_cpus()

    if generation is not None:
        if generation >= 5:
            tier, label = "raspberry-pi-5", "Raspberry Pi 5"
        elif generation == 4:
            tier, label = "raspberry-pi-4", "Raspberry Pi 4"
        else:
            tier, label = "raspberry-pi-old", f"Raspberry Pi {generation} class, slower than a Pi 4"
    elif cores >= STRONG_DESKTOP_CORES:
        tier, label = "strong-desktop", f"strong desktop, {cores} cores"
    elif any(_APPLE_STRONG.search(s) for s in (cpu, model) if s):
        tier, label = "strong-desktop", f"strong desktop, {cpu or model}"
    else:
        tier, label = "other", f"ordinary machine, {cores} core{'' if cores == 1 else 's'}"

    return PlatformInfo(
        system=system,
        model=model,
        cpu=cpu,
        cores=cores,
        memory_mb=memory_mb,
        virtual=virtual,
        tier=tier,
        label=label,
        default_buffer_size=TIER_BUFFER_SIZE[tier],
    )
