"""``python -m planar3d.train``: the door to :func:`planar3d.cli.train.main`."""

import sys

from planar3d.cli.train import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
