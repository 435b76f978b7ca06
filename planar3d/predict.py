"""``python -m planar3d.predict``: the door to :func:`planar3d.cli.predict.main`."""

import sys

from planar3d.cli.predict import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
