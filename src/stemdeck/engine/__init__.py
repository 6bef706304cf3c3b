"""The real-time core: state, commands and the one render path. No I/O, no
threads of its own; see engine.py for which thread may call what.

Importing the package is free: config and the message table read the plain
facts in commands.py at start-up. Every module that compiles a kernel imports
kernel_cache first (where compiled kernels are cached); ``Engine`` loads
numba on first use.
"""

__all__ = ["Engine"]


def __getattr__(name):
    if name == "Engine":
        from stemdeck.engine.engine import Engine

        return Engine
    raise AttributeError(f"module 'stemdeck.engine' has no attribute {name!r}")
