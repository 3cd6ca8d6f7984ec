"""The record of recipes tried on the way to a model, from their evaluation folders.

Run: ``python -m ser_stream.train.experiments MODEL_DIR RUN_DIR=CHANGE [...] [--note TEXT]``

Each ``RUN_DIR`` is an ``ser-stream evaluate --out`` folder; ``CHANGE`` says in a few words
what its recipe changed. The headline figures are read from each run's ``metrics.json``
and written, in the order given, to ``MODEL_DIR/experiments.json``; the model card is then
rewritten, so every figure in its "What was tried" table comes from an evaluation run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ser_stream.train.model_card import headline, write_model_card

__all__ = ["record_experiments"]

INTRO = (
    "Each row is one `ser-stream evaluate --recipe NAME` run on this 2-core CPU machine. "
    "SI mean UA: speaker-independent folds (protocol `speaker`), mean UA over the EmoBox "
    "folds named (all six unless stated), over every speaker of every corpus in newer runs "
    "and over RAVDESS actors only in older ones; EmoBox RAVDESS UA: the RAVDESS test actors "
    "alone in the same folds; LOCO: leave one corpus out (protocol `corpus`), strict UA, mean "
    "and lowest over the held-out corpora; RAVDESS->TESS and TESS->RAVDESS: the old `cross` "
    "protocol, strict UA; worst channel loss: the largest loss of a channel condition "
    "against the same clips clean (protocol `channel`); room loss: sessions in a room "
    "against the same clips alone (protocol `room`); ECE is per clip after calibration. A "
    "column none of the runs measured is left out. Folds differ by several points between "
    "runs of the same recipe, so differences under ~3 points on two folds are not evidence."
)


def record_experiments(
    model_dir: Path, runs: list[tuple[Path, str]], notes: list[str] | None = None
) -> Path:
    """Write ``model_dir/experiments.json`` from ``(run folder, change)`` pairs and the card.

    ``notes`` are printed under the table: what a reader needs to weigh the rows.
    """
    entries = []
    for run, change in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        entries.append(
            {
                "recipe": metrics.get("recipe", {}).get("name", run.name),
                "run": run.name,
                "change": change,
                "figures": headline(metrics),
            }
        )
    path = model_dir / "experiments.json"
    record = {"intro": INTRO, "entries": entries, "notes": list(notes or [])}
    path.write_text(json.dumps(record, indent=2) + "\n")
    write_model_card(model_dir)
    return path


def main(argv: list[str] | None = None) -> None:
    """Command line: ``MODEL_DIR RUN_DIR=CHANGE ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR=CHANGE")
    parser.add_argument("--note", action="append", default=[], help="a line under the table")
    args = parser.parse_args(argv)
    runs = []
    for item in args.runs:
        folder, sep, change = item.partition("=")
        if not sep:
            parser.error(f"{item!r} is not RUN_DIR=CHANGE")
        runs.append((Path(folder), change))
    print(record_experiments(args.model_dir, runs, args.note))


if __name__ == "__main__":
    main()
