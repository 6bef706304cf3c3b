"""Where compiled kernels are cached, keyed by the engine's own source.

Imported by every engine module that compiles a kernel, before its first
decorator runs (any thread; configured once per process).

numba keys a cached function on its own file's timestamp only, but the
render kernel compiles the functions it calls from other files into itself:
after an edit to apply.py, a cached kernel.py would keep running the old
code. So the cache folder is named by a hash of every source file of the
engine; any change starts a fresh folder, and older folders are pruned.

Base folder: ``$NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/stemdeck/kernels``
(``~/.cache/stemdeck/kernels``).

Also here: which kernels numba would have to compile (read from its cache
index: :func:`stale_kernels`) and :class:`CompileProgress`, which says so
while they compile (``stemdeck warmup``, :mod:`stemdeck.tools.warmup`, uses both).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

KEEP = 3   # folders of other source versions kept (switching branches back and forth)


def source_hash() -> str:
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("NUMBA_CACHE_DIR")
    if base:
        base = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = Path(xdg) / "stemdeck" / "kernels"
    return base / source_hash()


def configure() -> Path:
    """Point numba's cache at this source version's folder (before any kernel
    is decorated) and prune folders of other versions."""
    import numba.core.config as config

    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return path   # read-only home: numba falls back to not caching
    config.CACHE_DIR = str(path)
    others = sorted((p for p in path.parent.iterdir() if p.is_dir() and p != path),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return path


CACHE_DIR = configure()


# -- which kernels must compile, and saying so while they do ------------------------------------
#
# Any thread. numba compiles only on a cache miss, so "must compile" is read
# from numba's own cache index (absent, stale source, other machine or numba
# version), never guessed; CompileProgress reports each compile numba starts.

DEFAULT_FULL_COMPILE_S = 120.0  # every kernel from nothing: 87-170 s measured on the busy 2-core development machine
_SIDE_EFFECT_IMPORT = re.compile(r"^from stemdeck\.engine import kernel_cache\s+#\s*noqa: F401", re.M)


def _scan() -> list[tuple[Path, bool]]:
    """(path, compiles a kernel) of every source file a kernel depends on: the
    engine's (they name the cache folder) and every module that compiles a
    kernel (by convention it imports this module first, for its side effect)."""
    pkg = Path(__file__).resolve().parent.parent
    engine = Path(__file__).resolve().parent
    out = []
    for path in sorted(pkg.rglob("*.py")):
        kernels = bool(_SIDE_EFFECT_IMPORT.search(path.read_text(encoding="utf-8")))
        if kernels or engine in path.parents:
            out.append((path, kernels))
    return out


def kernel_sources() -> list[Path]:
    """The source files compiled kernels depend on (newer than the last warm-up: warm again)."""
    return [path for path, _ in _scan()]


def kernel_modules() -> list[str]:
    """The modules that compile a kernel."""
    pkg = Path(__file__).resolve().parent.parent
    return ["stemdeck." + ".".join(path.relative_to(pkg).with_suffix("").parts)
            for path, kernels in _scan() if kernels]


def cached_kernels() -> list[tuple[str, object]]:
    """(name, numba cache) of every cached kernel: the dispatchers of
    :func:`kernel_modules`, and the ``@cfunc``\\ s they build on first use
    (found in the code, not built: building one compiles it)."""
    import importlib
    import linecache
    import types

    from numba.core.caching import FunctionCache
    from numba.core.registry import CPUDispatcher

    out = []
    for name in kernel_modules():
        module = importlib.import_module(name)
        short = name.rsplit(".", 1)[1]
        for attr, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == name and isinstance(obj._cache, FunctionCache):
                out.append((f"{short}.{attr}", obj._cache))
            elif isinstance(obj, types.FunctionType) and obj.__module__ == name:
                for code in obj.__code__.co_consts:
                    if not isinstance(code, types.CodeType):
                        continue
                    decorator = linecache.getline(code.co_filename, code.co_firstlineno)
                    if "cfunc(" in decorator and "cache=True" in decorator:
                        fn = types.FunctionType(code, vars(module), code.co_name)
                        fn.__qualname__ = code.co_qualname
                        out.append((f"{short}.{code.co_name}", FunctionCache(fn)))
    return out


def stale_kernels(kernels=None) -> list[str]:
    """Names of the kernels numba's cache cannot load: no index entry for
    this machine, this numba and this code (numba compiles those)."""
    from numba.core.registry import cpu_target

    codegen = cpu_target.target_context.codegen()
    return [name for name, cache in (cached_kernels() if kernels is None else kernels)
            if not _loadable(cache, codegen)]


def _loadable(cache, codegen) -> bool:
    try:
        index = cache._cache_file._load_index()   # {} when absent, stale or another numba version
        return any(cache._index_key(key[0], codegen) == key for key in index)
    except Exception:      # numba's private layout changed: do not claim a compile we cannot see
        return True


def _record_path() -> Path:
    return cache_dir().parent / "full-compile-seconds"


def estimate_seconds(stale: int, total: int) -> float:
    """How long compiling ``stale`` of ``total`` kernels takes here: the last
    full compile on this machine, else DEFAULT_FULL_COMPILE_S, pro rata."""
    try:
        full = float(_record_path().read_text())
    except (OSError, ValueError):
        full = DEFAULT_FULL_COMPILE_S
    return full * stale / max(total, 1)


def record_full_compile(seconds: float) -> None:
    try:
        _record_path().write_text(f"{seconds:.1f}\n")
    except OSError:
        pass


class CompileProgress:
    """Says ``compiling the engine (once per install, about N s)...`` at the
    first compile (or when told, :meth:`begin`), then one line per kernel
    compiled (``k of n``). ``say`` gets each line (any thread: numba
    compiles under its global lock, so lines never interleave)."""

    def __init__(self, say, total: int, estimate: float):
        self.say = say
        self.total = total
        self.estimate = estimate
        self.done = 0                       # kernels compiled (their names in _names)
        self._names: set[str] = set()
        self.started: float | None = None

    def install(self) -> "CompileProgress":
        from numba.core import event

        progress = self

        class _Listener(event.Listener):
            def on_start(self, ev):
                if _stemdeck_kernel(ev) is not None:
                    progress.begin()

            def on_end(self, ev):
                name = _stemdeck_kernel(ev)
                if name is not None:
                    progress.step(name)

        self._listener = _Listener()
        event.register("numba:compile", self._listener)
        return self

    def uninstall(self) -> None:
        from numba.core import event

        event.unregister("numba:compile", self._listener)

    def begin(self) -> None:
        if self.started is None:
            self.started = time.monotonic()
            self.say(f"compiling the engine (once per install, about {max(self.estimate, 1):.0f} s)...")

    def step(self, name: str) -> None:
        """One compile ended (a kernel compiles once per argument types it is called with)."""
        self.begin()
        again = name in self._names
        if not again:
            self._names.add(name)
            self.done += 1
        self.say(f"  compiled {name}{' (other argument types)' if again else ''} "
                 f"({self.done} of {max(self.total, self.done)}, {time.monotonic() - self.started:.0f} s)")

    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started


def _stemdeck_kernel(ev) -> str | None:
    """``module.function`` of a stemdeck kernel's compile event, else None (numba's own)."""
    fn = getattr(ev.data.get("dispatcher"), "py_func", None)
    module = getattr(fn, "__module__", "") or ""
    if not module.startswith("stemdeck."):
        return None
    return f"{module.rsplit('.', 1)[1]}.{fn.__name__}"
