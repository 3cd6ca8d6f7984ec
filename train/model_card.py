"""MODEL_CARD.md of an artifact, written from its config.json and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_model_card"]

_LICENSES = """\
- RAVDESS (speech, actors 01-20): CC BY-NC-SA 4.0. Livingstone S. R., Russo F. A. (2018) The
  Ryerson Audio-Visual Database of Emotional Speech and Song (RAVDESS). PLoS ONE 13(5):
  e0196391. doi:10.5281/zenodo.1188976
- TESS: CC BY-NC-ND 4.0. Dupuis K., Pichora-Fuller M. K. (2010) Toronto Emotional Speech Set
  (TESS). University of Toronto. doi:10.5683/SP2/E8H2MF

The weights are derived from these corpora: use them under the terms of both licenses
(non-commercial use, with attribution)."""


def write_model_card(folder: Path) -> Path:
    """(Re)write ``folder/MODEL_CARD.md`` from what the folder holds."""
    config = _read(folder / "config.json")
    metrics = _read(folder / "metrics.json")
    lines = ["# ser-stream emotion model", ""]
    lines += [
        "A Keras LSTM classifier of 8 emotions (" + ", ".join(config.get("labels", [])) + ") ",
        "over speech windows, served through its ONNX export (onnxruntime).",
        "",
        "## Input and features",
        "",
    ]
    analysis = config.get("analysis", {})
    features = analysis.get("features", {})
    if features:
        lines += [
            f"- {features['sample_rate']} Hz mono audio; WebRTC VAD (aggressiveness "
            f"{analysis['vad']['aggressiveness']}) cuts speech into windows of "
            f"{features['window_s']} s (hop {features['hop_s']} s during long speech; shorter "
            "speech is repeated to fill a window).",
            f"- noisereduce (stationary, noise profile from non-speech; enabled: "
            f"{analysis['denoise']['enabled']}), then peak normalization to "
            f"-{analysis['denoise']['headroom_db']} dBFS (pydub semantics).",
            f"- features: {', '.join(features['kinds'])} (n_fft {features['n_fft']}, hop "
            f"{features['hop_length']} samples, {features['n_mfcc']} MFCC over "
            f"{features['n_mels']} mel bands), standardized with the training set's statistics.",
            "",
        ]
    training = config.get("training", {})
    if training:
        model = training.get("model", {})
        data = training.get("data", {})
        lines += [
            "## Model and training",
            "",
            f"- {model.get('layers')} x {'bidirectional ' if model.get('bidirectional') else ''}"
            f"LSTM({model.get('units')}), attention pooling over time, dense "
            f"{model.get('dense_units')}, softmax over 8 labels.",
            f"- trained on {data.get('clips')} clips of {data.get('speakers')} speakers "
            f"({', '.join(data.get('corpora', []))}; RAVDESS actors 01-20 and both TESS speakers),"
            f" {data.get('windows')} windows including augmented copies.",
            f"- augmentation: {json.dumps(training.get('augmentation'))}",
            f"- optimizer: {json.dumps(training.get('optimizer'))}",
            f"- machine: {training.get('machine')}; {training.get('seconds')} s.",
            f"- ONNX export differs from Keras by at most "
            f"{config.get('onnx', {}).get('max_abs_difference_from_keras', float('nan')):.1e}.",
            "",
        ]
    lines += ["## Evaluation", ""]
    if not metrics:
        lines += ["Not evaluated yet: run `ser-stream evaluate --out <this folder>`.", ""]
    if "seed" in metrics:
        seed = metrics["seed"]
        lines += [
            "### Seed protocol (speakers mixed: comparable to the original system only)",
            "",
            seed["description"] + ".",
            "",
            "| split | accuracy | unweighted accuracy | macro-F1 |",
            "|---|---|---|---|",
            _row("test", seed["test"]),
            _row("validation", seed["validation"]),
            "",
            "Confusion matrix (test): `confusion_seed.png`. Reproduce: "
            "`ser-stream evaluate --protocol seed`.",
            "",
        ]
    if "speaker" in metrics:
        spk = metrics["speaker"]
        lines += [
            "### Speaker-independent (no speaker on both sides)",
            "",
            spk["description"] + ".",
            "",
            "| fold | test actors | accuracy | unweighted accuracy | macro-F1 |",
            "|---|---|---|---|---|",
        ]
        for k, fold in enumerate(spk["folds"], 1):
            actors = ", ".join(f"{a:02d}" for a in fold["test_actors"])
            lines.append(
                f"| {k} | {actors} | {fold['accuracy']:.1%} | {fold['unweighted_accuracy']:.1%} "
                f"| {fold['macro_f1']:.1%} |"
            )
        lines += [
            f"| **mean** | | **{spk['mean_accuracy']:.1%}** | "
            f"**{spk['mean_unweighted_accuracy']:.1%}** | **{spk['mean_macro_f1']:.1%}** |",
            "",
            "Confusion matrix (all folds' test clips): `confusion_speaker.png`. Reproduce: "
            "`ser-stream evaluate --protocol speaker`.",
            "",
        ]
    lines += [
        "## Limits",
        "",
        "- Acted emotion from 22 North-American English speakers; expect lower accuracy on "
        "spontaneous speech, other languages, children, and far-field or noisy microphones.",
        "- `calm` exists only in RAVDESS (160 clips); TESS has none.",
    ]
    if "speaker" in metrics:
        recalls = _recalls(metrics["speaker"]["pooled"])
        ranked = ", ".join(f"{label} {share:.0%}" for label, share in recalls)
        lines.append(f"- Recall per label on unseen speakers (pooled folds): {ranked}.")
    lines += [
        "",
        "## Data licenses",
        "",
        _LICENSES,
        "",
    ]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


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
