"""``python -m ebjr``: the same as the ``ebjr`` command."""

import sys

from ebjr.cli.main import main

sys.exit(main())
