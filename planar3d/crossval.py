"""``python -m planar3d.crossval``: the door to :func:`planar3d.cli.crossval.main`."""

import sys

from planar3d.cli.crossval import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
