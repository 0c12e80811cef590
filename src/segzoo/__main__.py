"""`python -m segzoo` runs the CLI."""

import sys

from segzoo.cli import main

sys.exit(main())
