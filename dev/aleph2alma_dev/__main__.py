"""``python -m aleph2alma_dev``: the same as the ``aleph2alma-dev`` command."""

import sys

from aleph2alma_dev.cli import main

sys.exit(main())
