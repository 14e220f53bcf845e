"""``python -m lobwife``: the ``lobwife`` command."""

import sys

from lobwife.cli import main

sys.exit(main())
