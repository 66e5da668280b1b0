"""Settings of the hostile-input suite, in a module of its own: a test module that imported
them from ``conftest`` got whichever conftest was imported first when several test folders
ran together (``pytest tests/fuzz tests/ui`` failed to collect).

``BUTTE_FUZZ_EXAMPLES`` sets the generated inputs per call type: a short run (5) in the
normal suite, ``BUTTE_FUZZ_EXAMPLES=1000`` for the long run whose figures are in
docs/reliability.md.
"""

from __future__ import annotations

import os

EXAMPLES = int(os.environ.get("BUTTE_FUZZ_EXAMPLES", "5"))
