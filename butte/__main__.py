"""``python -m butte``: the same as the ``butte`` command."""

import sys

from butte.cli.main import main

sys.exit(main())
