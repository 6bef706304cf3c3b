"""``python -m stemdeck``: the same as the ``stemdeck`` console script."""
import sys

from stemdeck.cli import main

sys.exit(main())
