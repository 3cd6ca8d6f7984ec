"""``python -m ser_stream`` is the ``ser-stream`` command."""

import sys

from ser_stream.cli import main

sys.exit(main())
