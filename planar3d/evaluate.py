"""``python -m planar3d.evaluate``: the door to :func:`planar3d.cli.evaluate.main`."""

import sys

from planar3d.cli.evaluate import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
