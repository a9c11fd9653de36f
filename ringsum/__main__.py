"""``python -m ringsum``: the ``ringsum`` command, for when the scripts directory is not on PATH."""

import sys

from .serving.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m ringsum"))
