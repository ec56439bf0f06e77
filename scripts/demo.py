"""Entry point of `make demo`; see aleph2alma.demo.runner."""

import sys

from aleph2alma.demo.runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
