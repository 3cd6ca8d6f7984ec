"""How well the model judges a clip from its early, short windows: speaker-independent.

The live pipeline starts each utterance with short windows: once 0.8 s of speech was heard
the VAD emits a first window of that length, then 1.6 s, then the usual 3.0 s windows every
1.5 s (``first_window_s`` of the VAD). The model was trained on 3.0 s windows (shorter audio
is repeated to fill one, see :func:`~ser_stream.stages.features.fit_length`). This module
measures, under the **speaker-independent** protocol of ``ser-stream evaluate --protocol
speaker`` (EmoBox actor folds over RAVDESS actors 01-20, TESS on every training side), how
accurate each fold model is on the test clips of its fold when it hears:

- ``all_windows``: every window of the clip, the clip's label the mean of its windows'
  calibrated probabilities (the protocol's figure);
- ``first_0.8s``, ``first_1.0s``, ``first_1.6s``, ``first_2.0s``: only that much of the
  clip's first speech window (:data:`SHORT_LENGTHS_S`);
- ``first_window``: the first window whole (3.0 s, or the utterance when shorter).

The fold models are trained exactly as the protocol trains them (:func:`train_split` on the
splits of :func:`speaker_splits`, from the shared feature cache) and ``all_windows`` is scored
by the protocol's own :func:`score_clips`. The other views run the serving cores on the clip's
audio as a live stream would: the VAD core (:class:`~ser_stream.stages.vad.VADCore`) cuts the
first speech window, which is cut to its first seconds *before* the denoise core (fed the
noise the VAD handed over before that window, as live) and the features core with the fold
model's stream normalization (its training prior). Each of these windows is heard by a
fresh stream normalizer, as the first window of a stream; in a live stream the 1.6 s
window comes after the 0.8 s one, and a speaker's later utterances meet warmed-up
statistics. Calibration is the protocol's: each fold's temperature is fitted on the other
requested folds' test windows (a lone fold keeps its validation temperature); for one
window per clip it cannot change the predicted label.

Run ``python -m benchmarks.short_windows --folds 1,4 --out runs/short-windows``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ser_stream.analysis import SILENCE_DBFS, AnalysisConfig
from ser_stream.audio import load_audio, peak_dbfs
from ser_stream.errors import InputError
from ser_stream.labels import label_index
from ser_stream.logs import configure_logging, get_logger
from ser_stream.messages import Noise, Window
from ser_stream.stages.denoise import DenoiseCore
from ser_stream.stages.features import FeaturesCore
from ser_stream.stages.vad import VADCore, sliding_spans
from ser_stream.train.cross_fit import cross_fitted_temperatures
from ser_stream.train.datasets import Clip
from ser_stream.train.evaluate import TrainedSplit, score_clips, train_split
from ser_stream.train.folds import EMOBOX_FOLDS, speaker_splits
from ser_stream.train.recipe import DEFAULT_RECIPE, Recipe, get_recipe
from ser_stream.train.scores import ClipScores, classification_metrics

__all__ = [
    "SHORT_LENGTHS_S",
    "VIEWS",
    "FirstWindow",
    "first_speech_window",
    "first_window_rows",
    "format_table",
    "live_matrix",
    "main",
    "run",
    "single_window_scores",
    "summarize",
    "truncate_window",
]

SHORT_LENGTHS_S: tuple[float, ...] = (0.8, 1.0, 1.6, 2.0)
"""Lengths of early windows measured, in seconds: the live ones (0.8, 1.6) and round ones."""

VIEWS: tuple[str, ...] = (
    "all_windows",
    *(f"first_{seconds:.1f}s" for seconds in SHORT_LENGTHS_S),
    "first_window",
)
"""What the model hears of each test clip, in report order."""

METRICS: tuple[str, ...] = ("accuracy", "unweighted_accuracy", "macro_f1")
"""Figures reported per view."""

log = get_logger(component="short-windows")


@dataclass(frozen=True)
class FirstWindow:
    """The first speech window of a recording, with what a live denoiser knew before it.

    Attributes:
        window: the raw (not yet denoised) window, as the VAD emitted it.
        noise: the non-speech audio the VAD handed downstream before the window.
        vad: ``True`` if the VAD found speech; ``False`` for the whole-file fallback of
            :func:`~ser_stream.analysis.speech_windows` (no speech the VAD trusts: the
            recording's first span, normalized but not denoised).
    """

    window: Window
    noise: tuple[Noise, ...]
    vad: bool


def truncate_window(window: Window, seconds: float | None, sample_rate: int) -> Window:
    """The window cut to its first ``seconds`` (``None``, or a shorter window: unchanged).

    The end time moves with the cut, so stream normalization counts only the audio kept.
    """
    if seconds is None:
        return window
    keep = round(seconds * sample_rate)
    if window.samples.size <= keep:
        return window
    return replace(
        window,
        samples=window.samples[:keep],
        t_end=window.t_start + keep / sample_rate,
        final=False,
    )


def first_speech_window(samples: np.ndarray, config: AnalysisConfig) -> FirstWindow:
    """Run the VAD core over a recording and return its first window.

    Mirrors :func:`~ser_stream.analysis.speech_windows` up to its first window.

    Raises:
        InputError: the recording is digital silence.
    """
    rate = config.features.sample_rate
    if peak_dbfs(samples) < SILENCE_DBFS:
        raise InputError(f"no sound: the audio peaks below {SILENCE_DBFS:.0f} dBFS")
    vad = VADCore(config.vad_with_windowing(), rate)
    noise: list[Noise] = []
    for item in vad.push(samples) + vad.flush():
        if isinstance(item, Noise):
            noise.append(item)
        elif isinstance(item, Window):
            return FirstWindow(item, tuple(noise), vad=True)
    hop = round(config.features.hop_s * rate)
    spans = sliding_spans(samples.size, config.features.window_samples, hop)
    start, end = spans[0]
    window = Window(samples[start:end], start / rate, end / rate, 0, 0, final=len(spans) == 1)
    return FirstWindow(window, (), vad=False)


def live_matrix(first: FirstWindow, config: AnalysisConfig, seconds: float | None) -> np.ndarray:
    """The stream-normalized feature matrix of ``first`` cut to ``seconds``, as live makes it.

    The window is cut before denoising (the VAD emits the short window), denoised with the
    noise heard before it, and normalized by a fresh stream normalizer carrying
    ``config.normalize`` (with the fold's training prior).
    """
    rate = config.features.sample_rate
    window = truncate_window(first.window, seconds, rate)
    denoise_config = config.denoise if first.vad else replace(config.denoise, enabled=False)
    denoise = DenoiseCore(denoise_config, rate)
    for chunk in first.noise:
        denoise.push_noise(chunk)
    features = FeaturesCore(config.features, config.normalize)
    return features.push(denoise.push(window)).matrix


def first_window_rows(window_clip: np.ndarray) -> np.ndarray:
    """Row of each clip's first window, for windows stored in stream order per clip."""
    _, rows = np.unique(np.asarray(window_clip), return_index=True)
    return np.sort(rows)


def single_window_scores(
    window_raw: np.ndarray, clip_ids: np.ndarray, labels: np.ndarray, temperature: float
) -> ClipScores:
    """Scores of clips each judged by one window (``window_raw[i]`` judges ``clip_ids[i]``)."""
    raw = np.asarray(window_raw, dtype=np.float64)
    ids = np.asarray(clip_ids, dtype=np.int64)
    truth = np.asarray(labels, dtype=np.int64)
    uncalibrated = ClipScores(ids, truth, raw, raw, truth, raw, raw, ids)
    return uncalibrated.recalibrated(temperature)


def summarize(folds: Sequence[dict]) -> dict:
    """Mean of every view's figures over ``folds`` (each ``{"views": {view: metrics}}``)."""
    return {
        view: {
            metric: float(np.mean([fold["views"][view][metric] for fold in folds]))
            for metric in METRICS
        }
        for view in VIEWS
        if all(view in fold["views"] for fold in folds)
    }


def format_table(report: dict) -> str:
    """A plain-text table of accuracy, UA and macro-F1 of every view.

    Per view: the mean over folds, the pooled clips (when the report has them), each fold;
    then (when the report has them) the pooled clips each cut actually shortened.
    """
    header = f"{'view':<14}{'fold':>7}{'n':>6}{'acc':>8}{'UA':>8}{'F1':>8}"
    lines = [header, "-" * len(header)]
    for view in VIEWS:
        if view not in report["mean"]:
            continue
        n = sum(fold["views"][view]["n"] for fold in report["folds"])
        lines.append(_row(view, "mean", n, report["mean"][view]))
        if "pooled" in report:
            lines.append(_row("", "pooled", n, report["pooled"][view]))
        for fold in report["folds"]:
            lines.append(_row("", str(fold["fold"]), fold["views"][view]["n"], fold["views"][view]))
    for cut, views in report.get("pooled_cut_only", {}).items():
        lines.append(f"clips whose first window is at least {cut.split('_')[1]} (pooled):")
        lines.extend(_row(f"  {view}", "pooled", m["n"], m) for view, m in views.items())
    return "\n".join(lines)


def _row(view: str, fold: str, n: int, figures: dict) -> str:
    values = "".join(f"{100 * figures[m]:>7.1f}%" for m in METRICS)
    return f"{view:<14}{fold:>7}{n:>6}{values}"


@dataclass(frozen=True)
class _FoldScores:
    """One fold model's raw window probabilities for every view of its test clips."""

    fold: int
    test_actors: tuple[int, ...]
    validation_temperature: float
    all_windows: ClipScores
    first: dict[str, tuple[np.ndarray, np.ndarray]]
    durations: dict[int, float]
    stats: dict
    seconds: float


def _score_first_windows(
    split: TrainedSplit, clips: list[Clip], test: np.ndarray
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[int, float], dict]:
    """The first-window views for the clips of ``test``.

    Returns:
        ``({view: (clip_ids, raw probabilities)}, {clip: first window seconds}, stats)``.
    """
    config = split.recipe.analysis
    rate = config.features.sample_rate
    lengths: dict[str, float | None] = {f"first_{s:.1f}s": s for s in SHORT_LENGTHS_S}
    lengths["first_window"] = None
    matrices: dict[str, list[np.ndarray]] = {view: [] for view in lengths}
    ids: list[int] = []
    durations: list[float] = []
    fallback = skipped = 0
    for i in test:
        try:
            first = first_speech_window(load_audio(clips[i].path, target_rate=rate), config)
        except InputError as exc:
            log.warning("clip skipped", path=str(clips[i].path), reason=str(exc))
            skipped += 1
            continue
        ids.append(int(i))
        durations.append(first.window.samples.size / rate)
        fallback += not first.vad
        for view, seconds in lengths.items():
            matrices[view].append(live_matrix(first, config, seconds))
    result = {}
    for view, stack in matrices.items():
        x = split.normalizer.apply(np.stack(stack))
        probs = np.asarray(split.model.predict(x, batch_size=256, verbose=0), dtype=np.float64)
        result[view] = (np.asarray(ids, dtype=np.int64), probs)
    seconds = np.asarray(durations)
    stats = {
        "clips": len(ids),
        "skipped": skipped,
        "vad_fallback": fallback,
        "first_window_s": {
            "min": round(float(seconds.min()), 3),
            "median": round(float(np.median(seconds)), 3),
            "max": round(float(seconds.max()), 3),
        },
        "first_window_shorter_than": {
            f"{s:.1f}s": int(np.sum(seconds < s - 1e-9)) for s in SHORT_LENGTHS_S
        },
    }
    return result, dict(zip(ids, durations, strict=True)), stats


def _cache_consistency(scores: ClipScores, live: tuple[np.ndarray, np.ndarray]) -> dict:
    """Compare first_window computed live with the first cached window, which must agree."""
    rows = first_window_rows(scores.window_clip)
    cached = dict(zip(scores.window_clip[rows].tolist(), scores.window_raw[rows], strict=True))
    ids, probs = live
    common = [k for k, c in enumerate(ids.tolist()) if c in cached]
    if not common:
        return {"clips_compared": 0}
    live_probs = probs[common]
    cached_probs = np.stack([cached[int(ids[k])] for k in common])
    return {
        "clips_compared": len(common),
        "same_label": float(np.mean(live_probs.argmax(1) == cached_probs.argmax(1))),
        "max_probability_difference": float(np.abs(live_probs - cached_probs).max()),
    }


def run(
    folds: Sequence[int],
    *,
    recipe: Recipe,
    out: Path,
    data: str | None = None,
    cache: str | None = None,
    workers: int | None = None,
) -> dict:
    """Train the requested speaker-protocol folds, score every view, write ``metrics.json``."""
    from ser_stream.train.pipeline import _clips, _windows

    started = time.time()
    clips = _clips(data, recipe)
    windows = _windows(clips, recipe, cache, workers)
    labels = np.array([label_index(c.label) for c in clips])
    log.info("features ready", windows=len(windows.clip_index), seconds=time.time() - started)
    runs: list[_FoldScores] = []
    consistency = {}
    for k, test_actors, train, val, test in speaker_splits(clips, EMOBOX_FOLDS):
        if k not in folds:
            continue
        fold_started = time.time()
        log.info("fold", fold=k, test_actors=test_actors, train_clips=len(train))
        split = train_split(clips, windows, train, val, recipe, progress=True)
        scores = score_clips(split, clips, windows, test)
        first, durations, stats = _score_first_windows(split, clips, test)
        consistency[k] = _cache_consistency(scores, first["first_window"])
        seconds = time.time() - fold_started
        log.info("fold scored", fold=k, seconds=round(seconds, 1), **consistency[k])
        runs.append(
            _FoldScores(k, test_actors, split.temperature, scores, first, durations, stats, seconds)
        )
    temperatures = cross_fitted_temperatures(
        [r.all_windows.window_raw for r in runs],
        [r.all_windows.window_true for r in runs],
        [r.validation_temperature for r in runs],
    )
    per_fold, predictions = [], []
    for fold_run, temperature in zip(runs, temperatures, strict=True):
        clean = fold_run.all_windows.recalibrated(temperature)
        fold_predictions = {"all_windows": (clean.clip_ids, clean.y_true, clean.y_pred)}
        for view, (ids, probs) in fold_run.first.items():
            scored = single_window_scores(probs, ids, labels[ids], temperature)
            fold_predictions[view] = (scored.clip_ids, scored.y_true, scored.y_pred)
        predictions.append(fold_predictions)
        per_fold.append(
            {
                "fold": fold_run.fold,
                "test_actors": list(fold_run.test_actors),
                "temperature": round(temperature, 4),
                "validation_temperature": round(fold_run.validation_temperature, 4),
                "seconds": round(fold_run.seconds, 1),
                "first_windows": fold_run.stats,
                "cache_consistency": consistency[fold_run.fold],
                "views": _view_metrics(fold_predictions),
                "cut_only": _cut_only(fold_predictions, fold_run.durations),
            }
        )
    pooled = {
        view: tuple(np.concatenate([p[view][n] for p in predictions]) for n in range(3))
        for view in VIEWS
    }
    durations = {c: s for fold_run in runs for c, s in fold_run.durations.items()}
    report = {
        "protocol": "speaker-independent",
        "description": "EmoBox actor-disjoint folds over RAVDESS actors 01-20, TESS on every "
        "training side; each fold model scored on its RAVDESS test actors: all_windows: every "
        "window of the clip, clip label = mean of calibrated window probabilities (the "
        "speaker protocol's figure); first_<S>s: only the first S seconds of the VAD's first "
        "speech window; first_window: that window whole",
        "processing": "first_* views run the serving cores on the clip audio: VAD core -> cut -> "
        "denoise core (noise heard before the window) -> features core; every such window is "
        "heard by a fresh stream normalizer with the fold's training prior (the first window "
        "of a stream); all_windows uses the cached windows normalized per clip, as the "
        "protocol does",
        "calibration": "each fold's temperature fitted on the other requested folds' test "
        "windows (a lone fold keeps its validation temperature), as the speaker protocol "
        "does; with one window per clip it does not change the label",
        "views": list(VIEWS),
        "recipe": recipe.to_dict(),
        "folds_requested": sorted(folds),
        "mean": summarize(per_fold),
        "pooled": _view_metrics(pooled),
        "cut_only_description": "pooled over the folds, only the clips whose first speech "
        "window is at least as long as the cut (elsewhere the cut keeps the whole, shorter "
        "window, and live would send no early window of that length): the cut, the whole "
        "first window and all windows of the same clips",
        "pooled_cut_only": _cut_only(pooled, durations),
        "folds": per_fold,
        "seconds": round(time.time() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "command": "python -m benchmarks.short_windows " + " ".join(sys.argv[1:]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


_Predictions = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Per view: ``(clip_ids, y_true, y_pred)``."""


def _view_metrics(predictions: _Predictions) -> dict:
    return {
        view: classification_metrics(y_true, y_pred)
        for view, (_, y_true, y_pred) in predictions.items()
    }


def _cut_only(predictions: _Predictions, durations: dict[int, float]) -> dict:
    """Per cut length, the views on the clips whose first window is at least that long."""
    report = {}
    for seconds in SHORT_LENGTHS_S:
        cut = f"first_{seconds:.1f}s"
        keep = {c for c, s in durations.items() if s >= seconds - 1e-9}
        subset = {}
        for view in ("all_windows", cut, "first_window"):
            ids, y_true, y_pred = predictions[view]
            mask = np.isin(ids, list(keep))
            subset[view] = (ids[mask], y_true[mask], y_pred[mask])
        report[cut] = _view_metrics(subset)
    return report


def _parse_folds(text: str) -> list[int]:
    try:
        folds = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise InputError(f"--folds {text!r} is not a comma-separated list of 1-6") from exc
    if not folds or any(not 1 <= k <= len(EMOBOX_FOLDS) for k in folds):
        raise InputError(f"--folds {text!r}: EmoBox folds are numbered 1-{len(EMOBOX_FOLDS)}")
    return folds


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.short_windows --folds 1,4 --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.short_windows",
        description="Speaker-independent accuracy of early short windows "
        f"({', '.join(f'{s:g} s' for s in SHORT_LENGTHS_S)}) against all windows and the "
        "first full window.",
    )
    parser.add_argument("--folds", default="1,2,3,4,5,6", help="EmoBox folds, e.g. 1,4")
    parser.add_argument("--out", default="runs/short-windows", help="folder for metrics.json")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="training recipe")
    parser.add_argument("--epochs", type=int, help="training epochs per fold")
    parser.add_argument("--data", help="folder with ravdess/ and tess/")
    parser.add_argument("--cache", help="feature cache (default: ~/.cache/ser-stream)")
    parser.add_argument("--workers", type=int, help="feature worker processes")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        report = run(
            _parse_folds(args.folds),
            recipe=get_recipe(args.recipe).with_epochs(args.epochs),
            out=Path(args.out),
            data=args.data,
            cache=args.cache,
            workers=args.workers,
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"metrics written to {Path(args.out) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
