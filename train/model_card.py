"""MODEL_CARD.md of an artifact, written from the files the artifact folder holds.

Those are config.json, metrics.json and, when present, experiments.json (the recipes tried
on the way to it). Every protocol of ``metrics.json`` gets its own section, named by the
protocol (``ser-stream evaluate --protocol NAME``) that produced it: the sections live beside
this module (:mod:`~ser_stream.train.card_speaker`, :mod:`~ser_stream.train.card_corpus`,
:mod:`~ser_stream.train.card_channel`); this one writes the card around them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ser_stream.labels import LABELS
from ser_stream.train.card_channel import channel_section, room_section
from ser_stream.train.card_corpus import baseline_section, corpus_section, cross_section
from ser_stream.train.card_format import num, pct, points
from ser_stream.train.card_speaker import calibration_section, seed_section, speaker_section

__all__ = [
    "SCREEN_FOLDS",
    "headline",
    "write_model_card",
]

SCREEN_FOLDS = (1, 4)
"""The folds quick comparisons of recipes run (``--folds 1,4``); every run reports their mean."""

PROTOCOL_KEYS = ("seed", "speaker", "corpus", "cross", "channel", "room", "baseline")
"""The ``metrics.json`` keys the card reports, in report order (``cross``: old artifacts)."""

_LICENSES = """\
- RAVDESS (speech, actors 01-20): CC BY-NC-SA 4.0. Livingstone S. R., Russo F. A. (2018) The
  Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS). PLoS ONE 13(5):
  e0196391. doi:10.5281/zenodo.1188976
- TESS: CC BY-NC-ND 4.0. Dupuis K., Pichora-Fuller M. K. (2010) Toronto Emotional Speech Set
  (TESS). University of Toronto. doi:10.5683/SP2/E8H2MF
- SAVEE: free for research use. Haq S., Jackson P. J. B. (2009) Speaker-dependent
  audio-visual emotion recognition. Proc. AVSP 2009, 53-58; the SAVEE database, University of
  Surrey.

The weights are derived from the corpora the model trained on (see Model and training): use
them under the terms of all their licenses (non-commercial research use, with attribution)."""

_TRAINING_SPEAKERS = {
    "ravdess": "RAVDESS actors 01-20",
    "tess": "both TESS speakers",
    "savee": "the four SAVEE speakers",
}


def headline(metrics: dict) -> dict:
    """The figures a recipe is judged on, from an evaluation's ``metrics.json``.

    Missing protocols (and figures older evaluations did not report) give ``None``.

    Returns:
        ``seed_test_accuracy``; ``speaker_mean_ua`` (mean UA over the speaker folds run),
        ``speaker_folds`` (the folds, when not all), ``speaker_screen_ua`` (mean over
        :data:`SCREEN_FOLDS`), ``speaker_all_ua`` (mean UA over the folds when they tested
        every speaker of every corpus), ``speaker_per_speaker_ua`` (mean UA over speakers),
        ``emobox_ravdess_ua`` (the RAVDESS actors' mean UA over folds); ``corpus_mean_ua`` and
        ``corpus_min_ua`` (strict, leave one corpus out); ``ravdess_to_tess_ua`` and
        ``tess_to_ravdess_ua`` (the old ``cross`` protocol); ``channel_worst_loss`` (largest
        loss of a channel condition against clean); ``room_loss`` (sessions in a room against
        the same clips alone); ``clip_ece`` (after calibration, speaker folds).
    """
    speaker = metrics.get("speaker") or {}
    cross = metrics.get("cross")
    channel = metrics.get("channel")
    seed = metrics.get("seed")
    corpus = metrics.get("corpus") or {}
    room = metrics.get("room")

    def cross_ua(direction: str) -> float | None:
        return cross[direction]["strict"]["unweighted_accuracy"] if cross else None

    return {
        "seed_test_accuracy": seed["test"]["accuracy"] if seed else None,
        "speaker_mean_ua": speaker.get("mean_unweighted_accuracy"),
        "speaker_folds": speaker.get("only_folds"),
        "speaker_screen_ua": _screen_ua(speaker),
        "speaker_all_ua": speaker["mean_unweighted_accuracy"]
        if speaker.get("all_speakers")
        else None,
        "speaker_per_speaker_ua": speaker.get("speaker_mean_unweighted_accuracy"),
        "emobox_ravdess_ua": speaker.get("emobox_ravdess_mean_unweighted_accuracy"),
        "corpus_mean_ua": corpus.get("mean_strict_unweighted_accuracy"),
        "corpus_min_ua": corpus.get("min_strict_unweighted_accuracy"),
        "ravdess_to_tess_ua": cross_ua("ravdess_to_tess"),
        "tess_to_ravdess_ua": cross_ua("tess_to_ravdess"),
        "channel_worst_loss": max(c["loss_vs_clean"] for c in channel["conditions"].values())
        if channel and channel.get("conditions")
        else None,
        "room_loss": room["loss_vs_alone"] if room else None,
        "clip_ece": speaker["calibration"]["clip_ece_after"] if speaker else None,
    }


def _screen_ua(speaker: dict | None) -> float | None:
    """Mean UA over :data:`SCREEN_FOLDS`, so quick screens and full runs compare."""
    if not speaker:
        return None
    by_fold = {f["fold"]: f["unweighted_accuracy"] for f in speaker["folds"]}
    if not all(fold in by_fold for fold in SCREEN_FOLDS):
        return None
    return sum(by_fold[fold] for fold in SCREEN_FOLDS) / len(SCREEN_FOLDS)


def write_model_card(folder: Path) -> Path:
    """(Re)write ``folder/MODEL_CARD.md`` from what the folder holds."""
    config = _read(folder / "config.json")
    metrics = _read(folder / "metrics.json")
    experiments = _read(folder / "experiments.json")
    lines = ["# ser-stream emotion model", ""]
    lines += [
        "A Keras LSTM classifier of 8 emotions (" + ", ".join(config.get("labels", LABELS)) + ") ",
        "over speech windows, served through its ONNX export (onnxruntime).",
        "",
    ]
    lines += _input_section(config)
    lines += _training_section(config)
    lines += _evaluation_intro(metrics)
    lines += seed_section(metrics.get("seed"))
    lines += speaker_section(metrics.get("speaker"))
    lines += corpus_section(metrics.get("corpus"))
    lines += cross_section(metrics.get("cross"))
    lines += channel_section(metrics.get("channel"))
    lines += room_section(metrics.get("room"))
    lines += baseline_section(metrics.get("baseline"))
    lines += calibration_section(config, metrics)
    lines += _experiments_section(experiments)
    lines += _limits_section(config, metrics)
    lines += ["## Data licenses", "", _LICENSES, ""]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def _evaluation_intro(metrics: dict) -> list[str]:
    """The heading of the evaluation, and how its figures were made."""
    lines = ["## Evaluation", ""]
    recipe = metrics.get("recipe", {}).get("name")
    if not any(k in metrics for k in PROTOCOL_KEYS):
        return [*lines, "Not evaluated yet: run `ser-stream evaluate --out <this folder>`.", ""]
    if recipe:
        baseline = "baseline" in metrics
        scored = " (the baseline, a model already shipped, is only scored)" if baseline else ""
        lines += [
            f"Each protocol trains fresh models with recipe `{recipe}` on its training side"
            f"{scored}. Figures are per clip, each clip judged alone as `ser-stream predict` "
            "judges a file, unless a section says otherwise. UA is unweighted accuracy (mean "
            "recall over the labels present).",
            "",
        ]
    return lines


def _input_section(config: dict) -> list[str]:
    """How audio becomes the model's input, from ``config.json``'s analysis."""
    analysis = config.get("analysis", {})
    features = analysis.get("features", {})
    if not features:
        return []
    normalize = analysis.get("normalize", {"mode": "none"})
    if normalize.get("mode") == "stream":
        what = "mean and variance" if normalize.get("variance", True) else "mean"
        stream = (
            f"- stream normalization: each column's {what} removed with the running statistics "
            f"of the stream (`up`) or file (`predict`), the training statistics counting as "
            f"{normalize['prior_s']} s of speech and older speech fading with a "
            f"{normalize['memory_s']} s time constant; then standardized with the training "
            "set's statistics."
        )
    else:
        stream = "- no stream normalization: standardized with the training set's statistics."
    vad = analysis["vad"]
    engine = vad.get("engine", "webrtc")
    vad_text = (
        f"WebRTC VAD (aggressiveness {vad['aggressiveness']})"
        if engine == "webrtc"
        else f"Silero VAD (speech from probability {vad.get('silero_threshold', 0.5)})"
        if engine == "silero"
        else f"{engine} VAD"
    )
    return [
        "## Input and features",
        "",
        f"- {features['sample_rate']} Hz mono audio; {vad_text} cuts speech into windows of "
        f"{features['window_s']} s (hop {features['hop_s']} s during long speech; shorter "
        "speech is repeated to fill a window).",
        f"- noisereduce (stationary, noise profile from non-speech; enabled: "
        f"{analysis['denoise']['enabled']}), then peak normalization to "
        f"-{analysis['denoise']['headroom_db']} dBFS (pydub semantics).",
        f"- features: {', '.join(features['kinds'])} (n_fft {features['n_fft']}, hop "
        f"{features['hop_length']} samples, {features['n_mfcc']} MFCC over "
        f"{features['n_mels']} mel bands).",
        stream,
        "",
    ]


def _training_section(config: dict) -> list[str]:
    """The model and how it was trained, from ``config.json``'s training."""
    training = config.get("training", {})
    if not training:
        return []
    model = training.get("model", {})
    data = training.get("data", {})
    recipe = training.get("recipe", {})
    lines = ["## Model and training", ""]
    if recipe:
        lines.append(f"- recipe `{recipe['name']}`: {recipe['summary']}.")
    validation = data.get("validation_actors")
    held = (
        f"; RAVDESS actors {', '.join(f'{a:02d}' for a in validation)} held out for early "
        "stopping and calibration"
        if validation
        else ""
    )
    corpora = data.get("corpora", [])
    speakers = " and ".join(_TRAINING_SPEAKERS.get(c, c) for c in corpora)
    lines += [
        f"- {model.get('layers')} x {'bidirectional ' if model.get('bidirectional') else ''}"
        f"LSTM({model.get('units')}), attention pooling over time, dense "
        f"{model.get('dense_units')}, softmax over 8 labels.",
        f"- trained on {data.get('clips')} clips of {data.get('speakers')} speakers "
        f"({', '.join(corpora)}: {speakers}{held}), {data.get('windows')} windows including "
        "augmented copies.",
        f"- augmentation: {json.dumps(training.get('augmentation'))}",
        f"- optimizer: {json.dumps(training.get('optimizer'))}",
        f"- machine: {training.get('machine')}; {training.get('seconds')} s.",
        f"- ONNX export differs from Keras by at most "
        f"{config.get('onnx', {}).get('max_abs_difference_from_keras', float('nan')):.1e}.",
        "",
    ]
    return lines


_Column = tuple[str, Callable[[dict], str], str | None]


def _experiment_columns() -> list[_Column]:
    """The "What was tried" columns: header, cell, and the figure that must exist somewhere.

    A column whose figure no row has is left out (old protocols in old records, new ones
    in new records).
    """
    screen = "+".join(map(str, SCREEN_FOLDS))
    return [
        (
            "SI mean UA",
            lambda f: pct(f["speaker_mean_ua"]) + _folds(f.get("speaker_folds")),
            None,
        ),
        (f"SI UA, folds {screen}", lambda f: pct(f.get("speaker_screen_ua")), None),
        ("EmoBox RAVDESS UA", lambda f: pct(f.get("emobox_ravdess_ua")), "emobox_ravdess_ua"),
        ("LOCO mean UA", lambda f: pct(f.get("corpus_mean_ua")), "corpus_mean_ua"),
        ("LOCO min UA", lambda f: pct(f.get("corpus_min_ua")), "corpus_min_ua"),
        ("RAVDESS->TESS UA", lambda f: pct(f.get("ravdess_to_tess_ua")), "ravdess_to_tess_ua"),
        ("TESS->RAVDESS UA", lambda f: pct(f.get("tess_to_ravdess_ua")), "tess_to_ravdess_ua"),
        (
            "worst channel loss (points)",
            lambda f: points(f.get("channel_worst_loss")),
            None,
        ),
        ("room loss (points)", lambda f: points(f.get("room_loss")), "room_loss"),
        ("clip ECE", lambda f: num(f.get("clip_ece")), None),
    ]


def _experiments_section(experiments: dict) -> list[str]:
    """The recipes tried on the way to the model, one row each (``experiments.json``)."""
    entries = experiments.get("entries", [])
    if not entries:
        return []
    columns = [
        column
        for column in _experiment_columns()
        if column[2] is None or any(e["figures"].get(column[2]) is not None for e in entries)
    ]
    lines = [
        "## What was tried",
        "",
        experiments.get("intro", ""),
        "",
        "| recipe | change | " + " | ".join(header for header, _, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for entry in entries:
        cells = [cell(entry["figures"]) for _, cell, _ in columns]
        lines.append(f"| `{entry['recipe']}` | {entry['change']} | " + " | ".join(cells) + " |")
    return [*lines, "", *(f"- {note}" for note in experiments.get("notes", [])), ""]


def _limits_section(config: dict, metrics: dict) -> list[str]:
    """What the evaluation cannot tell."""
    corpora = set(config.get("training", {}).get("data", {}).get("corpora", []))
    corpora |= set((metrics.get("speaker") or {}).get("corpora", {}))
    corpora |= set((metrics.get("corpus") or {}).get("held_out", {}))
    speakers = (
        "26 English speakers (22 North-American, 4 British men)"
        if "savee" in corpora
        else "22 North-American English speakers"
    )
    channel = metrics.get("channel") or {}
    new_channel = any("description" in c for c in channel.get("conditions", {}).values())
    lines = [
        "## Limits",
        "",
        f"- Acted emotion from {speakers}; expect lower accuracy on spontaneous speech, other "
        "languages, children, and far-field or noisy microphones.",
        "- `calm` exists only in RAVDESS (160 clips); the other corpora have none.",
        "- The channel conditions: telephone and VoIP lines are real codecs (ffmpeg's encoders "
        "behind simulated line filters); rooms, reverberation and noise are simulations made "
        "apart from training augmentation. No recorded rooms or telephone lines are available "
        "here; real devices add effects none of them has."
        if new_channel or not channel
        else "- The channel conditions are simulations (no recorded rooms or telephone lines "
        "are available here); real devices add effects none of them has.",
    ]
    if metrics.get("speaker"):
        recalls = _recalls(metrics["speaker"]["pooled"])
        ranked = ", ".join(f"{label} {share:.0%}" for label, share in recalls)
        lines.append(f"- Recall per label on unseen speakers (pooled folds): {ranked}.")
    return [*lines, ""]


def _folds(folds: list[int] | None) -> str:
    return f" (folds {','.join(map(str, folds))})" if folds else ""


def _recalls(metrics: dict) -> list[tuple[str, float]]:
    rows = zip(metrics["labels"], metrics["confusion"], strict=True)
    shares = [(label, row[i] / sum(row)) for i, (label, row) in enumerate(rows) if sum(row)]
    return sorted(shares, key=lambda item: item[1])


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
