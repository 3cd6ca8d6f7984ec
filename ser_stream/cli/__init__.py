"""The ``ser-stream`` command line.

==============  ==========================================================
``parser``      the global flags; gathers every command group's commands
``models``      ``predict``, ``train``, ``evaluate``
``up``          ``up`` and ``serve``: the whole pipeline
``stage``       ``stage``: one stage (or a capture) in this process
``tools``       ``keys``, ``bench``, ``devices``, ``tap``
``cluster``     ``health``, ``collect``: a pipeline without ``up`` (Kubernetes)
``common``      flag values several commands read the same way
==============  ==========================================================
"""

from __future__ import annotations

import sys

from ser_stream.errors import OutputClosed, SerStreamError, SupervisionError

__all__ = ["EXIT_ERROR", "EXIT_SUPERVISION", "main"]

EXIT_ERROR = 2
"""Exit status of a refused input or setting: fix it and start again."""
EXIT_SUPERVISION = 3
"""Exit status of a supervision failure: a stage kept failing, or never came up."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["health"]:  # a probe, every few seconds: nothing else is loaded
        from ser_stream.cli.cluster import probe

        return probe(arguments[1:])
    from ser_stream.cli.parser import build_parser

    args = build_parser().parse_args(arguments)
    if args.one_thread:  # training keeps the libraries' pools
        from ser_stream.threads import limit_numeric_threads

        # Before numpy loads: the numeric libraries read their thread counts from this
        # process's environment only then (see ser_stream.threads).
        limit_numeric_threads()
    from ser_stream.logs import configure_logging

    configure_logging(args.log_level)
    try:
        return args.run(args)
    except OutputClosed:  # `ser-stream ... | head`: the reader has what it wanted
        return 0
    except SupervisionError as exc:
        print(f"ser-stream: supervision failure: {exc}. The input is not at fault: read the "
              "stage's log lines above for why it failed; `ser-stream --log-level debug up "
              "...` shows more", file=sys.stderr)  # fmt: skip
        return EXIT_SUPERVISION
    except SerStreamError as exc:
        print(f"ser-stream: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
