"""Entry point of `make demo`; see aleph2alma_dev.demo.runner."""

import sys

from aleph2alma_dev.demo.runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
