"""``python -m planar3d.bids``: the door to :func:`planar3d.cli.bids.main`."""

import sys

from planar3d.cli.bids import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
