"""``predict``, ``train`` and ``evaluate``: the model's commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``predict``, ``train`` and ``evaluate`` to the command line."""
    predict = commands.add_parser("predict", help="classify the emotion of audio files")
    predict.add_argument("files", nargs="+", metavar="FILE", help="wav, flac, ogg or mp3 files")
    predict.add_argument("--json", action="store_true", help="one JSON object per file per line")
    predict.add_argument("--model", metavar="DIR", help="model artifact folder (default: shipped)")
    predict.add_argument("--workers", type=int, help="worker processes (default: by batch size)")
    predict.add_argument(
        "--vad",
        choices=["silero", "webrtc"],
        default=None,
        help="VAD engine (default: the model's, as every other mode)",
    )
    predict.set_defaults(run=_predict, one_thread=True)

    data_help = "folder with ravdess/ and tess/ (default: $SER_STREAM_DATA or ../shared/data)"
    recipe_help = "training recipe by name (default: the shipped model's)"
    train = commands.add_parser("train", help="train the model on RAVDESS and TESS")
    train.add_argument("--data", metavar="DIR", help=data_help)
    train.add_argument("--out", metavar="DIR", default="model", help="artifact folder to write")
    train.add_argument(
        "--cache", metavar="DIR", help="feature cache (default: ~/.cache/ser-stream)"
    )
    train.add_argument("--recipe", metavar="NAME", help=recipe_help)
    train.add_argument(
        "--calibration-from",
        metavar="METRICS.json",
        help="take the temperature from a speaker-independent evaluation of the same recipe",
    )
    train.add_argument("--epochs", type=int, help="training epochs")
    train.add_argument("--no-augment", action="store_true", help="train on clean audio only")
    train.add_argument("--workers", type=int, default=None, help="feature worker processes")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="run the evaluation protocols")
    evaluate.add_argument("--data", metavar="DIR", help=data_help)
    evaluate.add_argument(
        "--protocol",
        choices=["seed", "speaker", "corpus", "channel", "room", "all"],
        action="append",
        help="which protocol (repeatable; default all: seed, speaker, corpus, channel, room)",
    )
    evaluate.add_argument("--recipe", metavar="NAME", help=recipe_help)
    evaluate.add_argument(
        "--folds", metavar="K,K", help="speaker/channel/room: only these folds (1-6)"
    )
    evaluate.add_argument(
        "--model",
        metavar="DIR",
        help="judge this trained artifact on the corpora it never trained on, instead of "
        "training fresh models (clean, every channel condition, room sessions)",
    )
    evaluate.add_argument("--out", metavar="DIR", default="model", help="folder for the results")
    evaluate.add_argument("--cache", metavar="DIR", help="feature cache")
    evaluate.add_argument("--epochs", type=int, help="training epochs per split")
    evaluate.add_argument("--no-augment", action="store_true", help="train on clean audio only")
    evaluate.add_argument("--workers", type=int, default=None, help="feature worker processes")
    evaluate.set_defaults(run=_evaluate)


def _predict(args: argparse.Namespace) -> int:
    import gc

    from ser_stream.heap import keep_freed_buffers
    from ser_stream.predict import predict_files
    from ser_stream.sinks import verdict_text

    keep_freed_buffers()  # every file's arrays reuse the last one's (ser_stream.heap)
    failed = False
    for result in predict_files(args.files, args.model, workers=args.workers, vad_engine=args.vad):
        failed |= result.error is not None
        if args.json:
            print(json.dumps(result.to_json()), flush=True)
        elif result.error is not None:
            print(f"{result.file}: error: {result.error}", flush=True)
        else:
            top = sorted(result.probabilities.items(), key=lambda kv: -kv[1])[:3]
            shares = "  ".join(f"{label} {p:.0%}" for label, p in top)
            count = len(result.windows)
            windows = f"{count} window" + ("" if count == 1 else "s")
            label = result.label or ""
            verdict = verdict_text(label, result.probabilities.get(label, 0.0), result.confident)
            print(f"{result.file}: {verdict}  ({shares}; {windows})")
    # The process ends next: frozen objects skip the interpreter's final collection passes
    # over everything the libraries allocated.
    gc.freeze()
    return 1 if failed else 0


TRAINING_LIBRARIES = ("tensorflow", "librosa", "onnx", "tf2onnx", "sklearn", "pyroomacoustics")
"""What ``train`` and ``evaluate`` import beyond a plain install (the ``train`` extra)."""


def require_training_libraries() -> None:
    """Fail at once, with the install command, when the training extra is not installed.

    Training imports some of these only minutes in (augmentation, export); serving needs none.
    """
    import importlib.util

    from ser_stream.errors import InputError

    missing = []
    for name in TRAINING_LIBRARIES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or blocked installation
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise InputError(
            f"training needs {', '.join(missing)}, which this installation lacks; "
            "install the training extra: pip install 'ser-stream[train]'"
        )


def _recipe(args: argparse.Namespace):
    from ser_stream.train.recipe import get_recipe

    recipe = get_recipe(args.recipe).with_epochs(args.epochs)
    return recipe.without_augmentation() if args.no_augment else recipe


def _train(args: argparse.Namespace) -> int:
    require_training_libraries()
    from ser_stream.train.pipeline import train_default

    out = train_default(
        _recipe(args),
        data=args.data,
        out=Path(args.out),
        cache=args.cache,
        workers=args.workers,
        calibration_from=Path(args.calibration_from) if args.calibration_from else None,
    )
    print(f"model written to {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    require_training_libraries()
    from ser_stream.errors import InputError
    from ser_stream.train.pipeline import PROTOCOLS, evaluate_model, evaluate_protocols

    if args.model:
        report = evaluate_model(Path(args.model), data=args.data, out=Path(args.out))
        for line in _summary("baseline", report):
            print(line)
        return 0

    named = args.protocol or ["all"]
    protocols = list(PROTOCOLS) if "all" in named else [p for p in PROTOCOLS if p in named]
    try:
        folds = [int(k) for k in args.folds.split(",")] if args.folds else None
    except ValueError as exc:
        raise InputError(f"--folds {args.folds!r} is not a comma-separated list of 1-6") from exc
    if folds and not set(folds) <= set(range(1, 7)):
        raise InputError(f"--folds {args.folds!r}: the folds are numbered 1-6")
    recipe = _recipe(args)
    flags = (" --no-augment" if args.no_augment else "") + (
        f" --epochs {args.epochs}" if args.epochs else ""
    )
    command = f"ser-stream evaluate --recipe {recipe.name}{flags}"
    results = evaluate_protocols(
        protocols,
        recipe,
        data=args.data,
        out=Path(args.out),
        cache=args.cache,
        workers=args.workers,
        folds=folds,
        command=command,
    )
    for name, result in results.items():
        for line in _summary(name, result):
            print(line)
    return 0


def _summary(name: str, result: dict) -> list[str]:
    if name == "seed":
        test = result["test"]
        return [
            f"seed: test accuracy {test['accuracy']:.2%} (unweighted "
            f"{test['unweighted_accuracy']:.2%}), validation accuracy "
            f"{result['validation']['accuracy']:.2%}"
        ]
    if name == "speaker":
        calibration = result["calibration"]
        return [
            f"speaker: mean accuracy {result['mean_accuracy']:.2%}, mean unweighted accuracy "
            f"{result['mean_unweighted_accuracy']:.2%}, mean macro-F1 "
            f"{result['mean_macro_f1']:.2%}; clip ECE {calibration['clip_ece_before']:.3f} -> "
            f"{calibration['clip_ece_after']:.3f} calibrated; heard as live sessions: mean UA "
            f"{result['session_mean_unweighted_accuracy']:.2%}",
            f"speaker: mean UA over speakers {result['speaker_mean_unweighted_accuracy']:.2%}"
            + (
                f", EmoBox RAVDESS folds {result['emobox_ravdess_mean_unweighted_accuracy']:.2%}"
                if result.get("emobox_ravdess_mean_unweighted_accuracy") is not None
                else ""
            ),
        ]
    if name == "corpus":
        return [
            f"corpus {held}: strict UA {entry['strict']['unweighted_accuracy']:.2%}, calm as "
            f"neutral UA {entry['calm_as_neutral']['unweighted_accuracy']:.2%} (trained on "
            f"{', '.join(entry['trained_on'])})"
            for held, entry in result["held_out"].items()
        ] + [f"corpus: mean strict UA {result['mean_strict_unweighted_accuracy']:.2%}"]
    if name == "room":
        return [
            f"room: mean UA {result['mean_unweighted_accuracy']:.2%} against "
            f"{result['alone_mean_unweighted_accuracy']:.2%} for the same clips alone "
            f"({result['missed']} of {result['clips']} clips not heard)"
        ]
    if name == "baseline":
        clean = result["clean"]["strict"]["unweighted_accuracy"]
        lines = [f"model on {', '.join(result['judged_on'])}: strict UA {clean:.2%}"]
        lines += [
            f"  {condition}: strict UA {entry['strict']['unweighted_accuracy']:.2%} "
            f"({-100 * entry['loss_vs_clean']:+.1f} points vs the same clips clean)"
            for condition, entry in result["conditions"].items()
        ]
        if "room" in result:
            lines.append(f"  room: {-100 * result['room']['loss_vs_alone']:+.1f} points vs alone")
        return lines
    if name == "cross":
        return [
            f"cross {direction}: strict UA {result[direction]['strict']['unweighted_accuracy']:.2%}"
            f", calm as neutral UA "
            f"{result[direction]['calm_as_neutral']['unweighted_accuracy']:.2%}"
            for direction in ("ravdess_to_tess", "tess_to_ravdess")
        ]
    return [
        f"channel {condition}: mean UA {entry['mean_unweighted_accuracy']:.2%} "
        f"({-100 * entry['loss_vs_clean']:+.1f} points vs clean)"
        for condition, entry in result["conditions"].items()
    ]
