"""`python -m aleph2alma`: the command line, where no console script is installed (the image)."""

import sys

from aleph2alma.cli import main

if __name__ == "__main__":
    sys.exit(main())
