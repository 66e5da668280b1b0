"""``python -m butte.agent``: run an agent (same flags as ``butte agent``)."""

import sys

from butte.agent.main import main

sys.exit(main())
