"""``python -m planar3d.export``: the door to :func:`planar3d.cli.export.main`."""

import sys

from planar3d.cli.export import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
