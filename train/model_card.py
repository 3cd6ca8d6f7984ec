"""MODEL_CARD.md of an artifact, written from the files the artifact folder holds.

Those are config.json, metrics.json and, when present, experiments.json (the recipes tried
on the way to it).
"""

from __future__ import annotations

import json
from pathlib import Path

from ser_stream.labels import LABELS

__all__ = ["SCREEN_FOLDS", "headline", "write_model_card"]

SCREEN_FOLDS = (1, 4)
"""The folds quick comparisons of recipes run (``--folds 1,4``); every run reports their mean."""

_LICENSES = """\
- RAVDESS (speech, actors 01-20): CC BY-NC-SA 4.0. Livingstone S. R., Russo F. A. (2018) The
  Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS). PLoS ONE 13(5):
  e0196391. doi:10.5281/zenodo.1188976
- TESS: CC BY-NC-ND 4.0. Dupuis K., Pichora-Fuller M. K. (2010) Toronto Emotional Speech Set
  (TESS). University of Toronto. doi:10.5683/SP2/E8H2MF

The weights are derived from these corpora: use them under the terms of both licenses
(non-commercial use, with attribution)."""

_CONDITION_TEXT = {
    "telephone": "telephone band 300-3400 Hz + 8 kHz mu-law",
    "laptop": "laptop microphone EQ (200 Hz low cut, +8 dB at 3 kHz)",
    "reverb": "room reverberation, RT60 0.3-0.8 s (image-source rooms)",
    "noise": "room noise at 10 dB SNR (babble, rumble, hum)",
    "gain": "-20 dB gain",
}


def headline(metrics: dict) -> dict:
    """The figures a recipe is judged on, from an evaluation's ``metrics.json``.

    Missing protocols give ``None``.
    """
    speaker = metrics.get("speaker")
    cross = metrics.get("cross")
    channel = metrics.get("channel")
    seed = metrics.get("seed")

    def cross_ua(direction: str) -> float | None:
        return cross[direction]["strict"]["unweighted_accuracy"] if cross else None

    return {
        "seed_test_accuracy": seed["test"]["accuracy"] if seed else None,
        "speaker_mean_ua": speaker["mean_unweighted_accuracy"] if speaker else None,
        "speaker_folds": speaker.get("only_folds") if speaker else None,
        "speaker_screen_ua": _screen_ua(speaker),
        "ravdess_to_tess_ua": cross_ua("ravdess_to_tess"),
        "tess_to_ravdess_ua": cross_ua("tess_to_ravdess"),
        "channel_worst_loss": max(c["loss_vs_clean"] for c in channel["conditions"].values())
        if channel
        else None,
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
    lines += ["## Evaluation", ""]
    recipe = metrics.get("recipe", {}).get("name")
    if not any(k in metrics for k in ("seed", "speaker", "cross", "channel")):
        lines += ["Not evaluated yet: run `ser-stream evaluate --out <this folder>`.", ""]
    elif recipe:
        lines += [
            f"Each protocol trains fresh models with recipe `{recipe}` on its training side. "
            "Figures are per clip, each clip judged alone as `ser-stream predict` judges a file.",
            "",
        ]
    lines += _seed_section(metrics.get("seed"))
    lines += _speaker_section(metrics.get("speaker"))
    lines += _cross_section(metrics.get("cross"))
    lines += _channel_section(metrics.get("channel"))
    lines += _calibration_section(config, metrics)
    lines += _experiments_section(experiments)
    lines += [
        "## Limits",
        "",
        "- Acted emotion from 22 North-American English speakers; expect lower accuracy on "
        "spontaneous speech, other languages, children, and far-field or noisy microphones.",
        "- `calm` exists only in RAVDESS (160 clips); TESS has none.",
        "- The channel conditions are simulations (no recorded rooms or telephone lines are "
        "available here); real devices add effects none of them has.",
    ]
    if "speaker" in metrics:
        recalls = _recalls(metrics["speaker"]["pooled"])
        ranked = ", ".join(f"{label} {share:.0%}" for label, share in recalls)
        lines.append(f"- Recall per label on unseen speakers (pooled folds): {ranked}.")
    lines += ["", "## Data licenses", "", _LICENSES, ""]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def _input_section(config: dict) -> list[str]:
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
    return [
        "## Input and features",
        "",
        f"- {features['sample_rate']} Hz mono audio; WebRTC VAD (aggressiveness "
        f"{analysis['vad']['aggressiveness']}) cuts speech into windows of "
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
    lines += [
        f"- {model.get('layers')} x {'bidirectional ' if model.get('bidirectional') else ''}"
        f"LSTM({model.get('units')}), attention pooling over time, dense "
        f"{model.get('dense_units')}, softmax over 8 labels.",
        f"- trained on {data.get('clips')} clips of {data.get('speakers')} speakers "
        f"({', '.join(data.get('corpora', []))}: RAVDESS actors 01-20 and both TESS "
        f"speakers{held}), {data.get('windows')} windows including augmented copies.",
        f"- augmentation: {json.dumps(training.get('augmentation'))}",
        f"- optimizer: {json.dumps(training.get('optimizer'))}",
        f"- machine: {training.get('machine')}; {training.get('seconds')} s.",
        f"- ONNX export differs from Keras by at most "
        f"{config.get('onnx', {}).get('max_abs_difference_from_keras', float('nan')):.1e}.",
        "",
    ]
    return lines


def _seed_section(seed: dict | None) -> list[str]:
    if not seed:
        return []
    return [
        "### Seed protocol (speakers mixed: comparable to the original system only)",
        "",
        seed["description"] + ".",
        "",
        "| split | accuracy | unweighted accuracy | macro-F1 |",
        "|---|---|---|---|",
        _row("test", seed["test"]),
        _row("validation", seed["validation"]),
        "",
        f"Confusion matrix (test): `confusion_seed.png`. Reproduce: `{seed.get('command')}`.",
        "",
    ]


def _speaker_section(spk: dict | None) -> list[str]:
    if not spk:
        return []
    lines = [
        "### Speaker-independent (no speaker on both sides)",
        "",
        spk["description"] + ".",
        "",
        "| fold | test actors | accuracy | unweighted accuracy | macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for fold in spk["folds"]:
        actors = ", ".join(f"{a:02d}" for a in fold["test_actors"])
        lines.append(
            f"| {fold.get('fold', '')} | {actors} | {fold['accuracy']:.1%} "
            f"| {fold['unweighted_accuracy']:.1%} | {fold['macro_f1']:.1%} |"
        )
    only = spk.get("only_folds")
    mean = "**mean**" if not only else f"**mean of folds {', '.join(map(str, only))}**"
    lines += [
        f"| {mean} | | **{spk['mean_accuracy']:.1%}** | "
        f"**{spk['mean_unweighted_accuracy']:.1%}** | **{spk['mean_macro_f1']:.1%}** |",
        "",
    ]
    if "session_mean_unweighted_accuracy" in spk:
        lines += [
            f"Heard live instead ({spk['session_description']}): mean UA "
            f"**{spk['session_mean_unweighted_accuracy']:.1%}**.",
            "",
        ]
    lines += [
        "Confusion matrix (all folds' test clips): `confusion_speaker.png`. Reproduce: "
        f"`{spk.get('command')}`.",
        "",
    ]
    return lines


def _cross_section(cross: dict | None) -> list[str]:
    if not cross:
        return []
    lines = [
        "### Cross-corpus (a corpus the model never heard)",
        "",
        cross["description"] + ".",
        "",
        "| direction | trained on | clips | accuracy | UA | UA, calm as neutral | UA heard live |",
        "|---|---|---|---|---|---|---|",
    ]
    for direction, title in (
        ("ravdess_to_tess", "RAVDESS -> TESS"),
        ("tess_to_ravdess", "TESS -> RAVDESS"),
    ):
        entry = cross[direction]
        strict, merged = entry["strict"], entry["calm_as_neutral"]
        live = entry.get("session", {}).get("strict", {}).get("unweighted_accuracy")
        lines.append(
            f"| {title} | {entry['trained_on']} | {strict['n']} | {strict['accuracy']:.1%} "
            f"| {strict['unweighted_accuracy']:.1%} | {merged['unweighted_accuracy']:.1%} "
            f"| {_pct(live)} |"
        )
    lines += [
        "",
        "Confusion matrix (TESS -> RAVDESS, calm as neutral): `confusion_cross.png`. "
        f"Reproduce: `{cross.get('command')}`.",
        "",
    ]
    return lines


def _channel_section(channel: dict | None) -> list[str]:
    if not channel:
        return []
    clean = channel["clean_mean_unweighted_accuracy"]
    lines = [
        "### Channel shift (the unseen speakers through real-world channels)",
        "",
        channel["description"] + ".",
        "",
        "| condition | mean UA | change vs clean (points) |",
        "|---|---|---|",
        f"| clean | {clean:.1%} | |",
    ]
    for name, entry in channel["conditions"].items():
        lines.append(
            f"| {_CONDITION_TEXT.get(name, name)} | {entry['mean_unweighted_accuracy']:.1%} "
            f"| {-100 * entry['loss_vs_clean']:+.1f} |"
        )
    lines += [
        "",
        "Confusion matrix (room noise, pooled folds): `confusion_channel.png`. Reproduce: "
        f"`{channel.get('command')}`.",
        "",
    ]
    return lines


def _calibration_section(config: dict, metrics: dict) -> list[str]:
    calibration = config.get("calibration", {})
    speaker = metrics.get("speaker", {}).get("calibration")
    if not speaker and "fitted_on" not in calibration:
        return []
    lines = ["### Calibration", ""]
    if "fitted_on" in calibration:
        lines.append(
            f"The shipped model divides its logits by a temperature of "
            f"{calibration['temperature']:.3f}, fitted on {calibration['fitted_on']}."
        )
        if "validation_window_ece_after" in calibration:
            actors = ", ".join(f"{a:02d}" for a in calibration.get("validation_actors", []))
            lines.append(
                f"On its own held-out actors {actors}, the window ECE is "
                f"{calibration['validation_window_ece_before']:.3f} before and "
                f"{calibration['validation_window_ece_after']:.3f} after."
            )
        lines.append("")
    if speaker:
        method = speaker.get("method", "each fold's temperature fitted on its validation actors")
        lines += [
            "Expected calibration error (15 bins, top label) on the speaker-independent folds' "
            f"test clips; {method}:",
            "",
            "| level | before | after temperature scaling |",
            "|---|---|---|",
            f"| window (live display) | {speaker['window_ece_before']:.3f} | "
            f"{speaker['window_ece_after']:.3f} |",
            f"| clip (`predict`) | {speaker['clip_ece_before']:.3f} | "
            f"{speaker['clip_ece_after']:.3f} |",
        ]
        if "validation_clip_ece_after" in speaker:
            lines += [
                "",
                "Fitted instead on each fold's two validation actors, the clip ECE after "
                f"calibration is {speaker['validation_clip_ece_after']:.3f}: two speakers are "
                "too few to fit a temperature well.",
            ]
    return [*lines, ""]


def _experiments_section(experiments: dict) -> list[str]:
    entries = experiments.get("entries", [])
    if not entries:
        return []
    lines = [
        "## What was tried",
        "",
        experiments.get("intro", ""),
        "",
        "| recipe | change | SI mean UA | SI UA, folds "
        + "+".join(map(str, SCREEN_FOLDS))
        + " | RAVDESS->TESS UA | TESS->RAVDESS UA "
        "| worst channel loss (points) | clip ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in entries:
        figures = entry["figures"]
        lines.append(
            f"| `{entry['recipe']}` | {entry['change']} | {_pct(figures['speaker_mean_ua'])}"
            f"{_folds(figures.get('speaker_folds'))} | {_pct(figures.get('speaker_screen_ua'))} "
            f"| {_pct(figures['ravdess_to_tess_ua'])} "
            f"| {_pct(figures['tess_to_ravdess_ua'])} | {_points(figures['channel_worst_loss'])} "
            f"| {_num(figures['clip_ece'])} |"
        )
    return [*lines, "", *(f"- {note}" for note in experiments.get("notes", [])), ""]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _folds(folds: list[int] | None) -> str:
    return f" (folds {','.join(map(str, folds))})" if folds else ""


def _recalls(metrics: dict) -> list[tuple[str, float]]:
    rows = zip(metrics["labels"], metrics["confusion"], strict=True)
    shares = [(label, row[i] / sum(row)) for i, (label, row) in enumerate(rows) if sum(row)]
    return sorted(shares, key=lambda item: item[1])


def _row(name: str, m: dict) -> str:
    return (
        f"| {name} ({m['n']} clips) | {m['accuracy']:.2%} | {m['unweighted_accuracy']:.2%} "
        f"| {m['macro_f1']:.2%} |"
    )


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
