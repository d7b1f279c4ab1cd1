"""``python -m hyperclone``: the ``hyperclone`` command line."""

import sys

from hyperclone.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
