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
"""

from __future__ import annotations

import hashlib
import os
import shutil
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
