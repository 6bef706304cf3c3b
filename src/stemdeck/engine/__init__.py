"""The real-time core: state, commands and the one render path. No I/O, no
threads of its own; see engine.py for which thread may call what."""

from stemdeck.engine import kernel_cache as _kernel_cache  # noqa: F401  (first: where kernels are cached)
from stemdeck.engine.engine import Engine

__all__ = ["Engine"]
