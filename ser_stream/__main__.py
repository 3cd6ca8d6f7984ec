"""``python -m ser_stream`` is the ``ser-stream`` command.

The supervisor starts every stage process this way:
``python -P -m ser_stream --log-level warning stage NAME ...``.
"""

import sys

if "stage" in sys.argv[1:4]:
    # A stage process logs JSON lines to its supervisor, so structlog's optional pretty
    # tracebacks are never used there: structlog imports rich only when it can (about 4 MB of
    # memory in each stage process).
    sys.modules.setdefault("rich", None)

from ser_stream.cli import main  # noqa: E402 - after the stage process's import choices

sys.exit(main())
