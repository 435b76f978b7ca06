"""``python -m planar3d <command>``: the door to :func:`planar3d.cli.command.main`."""

import sys

from planar3d.cli.command import main

if __name__ == "__main__":
    sys.exit(main())
