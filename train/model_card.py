"""MODEL_CARD.md of an artifact, written from the files the artifact folder holds.

Those are config.json, metrics.json and, when present, experiments.json (the recipes tried
on the way to it). Every protocol of ``metrics.json`` gets its own section, named by the
protocol (``ser-stream evaluate --protocol NAME``) that produced it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ser_stream.labels import LABELS

__all__ = [
    "CORPUS_TARGET_EACH",
    "CORPUS_TARGET_MEAN",
    "SCREEN_FOLDS",
    "headline",
    "write_model_card",
]

SCREEN_FOLDS = (1, 4)
"""The folds quick comparisons of recipes run (``--folds 1,4``); every run reports their mean."""

CORPUS_TARGET_MEAN = 0.45
"""Target of the leave-one-corpus-out protocol: mean strict UA over the held-out corpora."""

CORPUS_TARGET_EACH = 0.35
"""Target of the leave-one-corpus-out protocol: strict UA of every held-out corpus."""

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

_CONDITION_TEXT = {
    "telephone": "telephone band 300-3400 Hz + 8 kHz mu-law",
    "laptop": "laptop microphone EQ (200 Hz low cut, +8 dB at 3 kHz)",
    "reverb": "room reverberation, RT60 0.3-0.8 s (image-source rooms)",
    "noise": "room noise at 10 dB SNR (babble, rumble, hum)",
    "gain": "-20 dB gain",
}
"""Descriptions of the old (simulated) channel conditions, whose metrics carry none."""

_CORPUS_NAMES = {"ravdess": "RAVDESS", "tess": "TESS", "savee": "SAVEE"}

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
    lines += _seed_section(metrics.get("seed"))
    lines += _speaker_section(metrics.get("speaker"))
    lines += _corpus_section(metrics.get("corpus"))
    lines += _cross_section(metrics.get("cross"))
    lines += _channel_section(metrics.get("channel"))
    lines += _room_section(metrics.get("room"))
    lines += _baseline_section(metrics.get("baseline"))
    lines += _calibration_section(config, metrics)
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


def _seed_section(seed: dict | None) -> list[str]:
    """Protocol ``seed``: a random split of clips, speakers on both sides."""
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
        "Confusion matrix (test): `confusion_seed.png`." + _reproduce(seed),
        "",
    ]


def _speaker_section(spk: dict | None) -> list[str]:
    """Protocol ``speaker``: speaker-disjoint folds (all speakers, or RAVDESS actors only)."""
    if not spk:
        return []
    who = "all speakers" if spk.get("all_speakers") else "RAVDESS actors"
    only = spk.get("only_folds")
    over = "the folds" if not only else f"folds {', '.join(map(str, only))}"
    lines = [
        f"### Speaker-independent, {who} (protocol `speaker`: no speaker on both sides)",
        "",
        spk["description"] + ".",
        "",
        f"- Mean UA over {over}: **{spk['mean_unweighted_accuracy']:.1%}** (accuracy "
        f"{spk['mean_accuracy']:.1%}, macro-F1 {spk['mean_macro_f1']:.1%}).",
    ]
    if spk.get("speaker_mean_unweighted_accuracy") is not None:
        count = len(spk.get("speakers", {}))
        lines.append(
            f"- Mean UA over the {f'{count} ' if count else ''}tested speakers: "
            f"**{spk['speaker_mean_unweighted_accuracy']:.1%}**."
        )
    if spk.get("emobox_ravdess_mean_unweighted_accuracy") is not None:
        lines.append(
            "- EmoBox RAVDESS: the RAVDESS test actors alone, mean UA over the folds "
            f"**{spk['emobox_ravdess_mean_unweighted_accuracy']:.1%}**: comparable to EmoBox's "
            "actor folds (same test actors), but these models also trained on the other "
            "corpora."
        )
    if spk.get("corpora"):
        pooled = "; ".join(
            f"{_corpus_name(name)} {m['unweighted_accuracy']:.1%} ({m['n']} clips)"
            for name, m in spk["corpora"].items()
        )
        lines.append(f"- UA per corpus, test clips of all folds pooled: {pooled}.")
    lines += ["", *_fold_table(spk), ""]
    if "session_mean_unweighted_accuracy" in spk:
        lines += [
            f"Heard live instead ({spk['session_description']}): mean UA "
            f"**{spk['session_mean_unweighted_accuracy']:.1%}**.",
            "",
        ]
    lines += _abstention_lines(spk.get("calibration", {}).get("abstention"))
    lines += [
        "Confusion matrix (all folds' test clips): `confusion_speaker.png`." + _reproduce(spk),
        "",
    ]
    return lines


def _fold_table(spk: dict) -> list[str]:
    """One row per speaker fold: its test speakers, UA, RAVDESS UA and session UA."""
    lines = [
        "| fold | test speakers | UA | RAVDESS UA | session UA |",
        "|---|---|---|---|---|",
    ]
    for fold in spk["folds"]:
        speakers = fold.get("test_speakers") or [
            f"ravdess-{a:02d}" for a in fold.get("test_actors", [])
        ]
        ravdess = fold.get("ravdess")
        session = fold.get("session")
        lines.append(
            f"| {fold.get('fold', '')} | {', '.join(speakers)} | "
            f"{fold['unweighted_accuracy']:.1%} "
            f"| {_pct(ravdess['unweighted_accuracy'] if ravdess and ravdess['n'] else None)} "
            f"| {_pct(session['unweighted_accuracy'] if session else None)} |"
        )
    lines.append(
        f"| **mean** | | **{spk['mean_unweighted_accuracy']:.1%}** "
        f"| {_bold(spk.get('emobox_ravdess_mean_unweighted_accuracy'))} "
        f"| {_bold(spk.get('session_mean_unweighted_accuracy'))} |"
    )
    return lines


def _abstention_lines(abstention: dict | None) -> list[str]:
    """How often the fold models would show "uncertain", clips and windows."""
    if not abstention:
        return []
    lines = [
        'Abstention (the label shown as "uncertain" below a confidence threshold; '
        f"{abstention.get('method', 'threshold fitted on other speakers')}):",
        "",
        "| level | confident (coverage) | accuracy when confident | accuracy of all |",
        "|---|---|---|---|",
    ]
    for level in ("clips", "windows"):
        entry = abstention.get(level)
        if entry:
            lines.append(
                f"| {level} ({entry['n']}) | {_pct(entry['coverage'])} "
                f"| {_pct(entry['accuracy_confident'])} | {_pct(entry.get('accuracy_all'))} |"
            )
    return [*lines, ""]


def _corpus_section(corpus: dict | None) -> list[str]:
    """Protocol ``corpus``: leave one corpus out, with its targets."""
    if not corpus or not corpus.get("held_out"):
        return []
    lines = [
        "### Leave one corpus out (protocol `corpus`: a corpus the model never heard)",
        "",
        corpus["description"] + ".",
        "",
        "| held out | trained on | clips | strict UA | UA, calm as neutral | session strict UA "
        "| confident clips / accuracy | confident windows / accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in corpus["held_out"].items():
        strict, merged = entry["strict"], entry["calm_as_neutral"]
        live = entry.get("session", {}).get("strict", {}).get("unweighted_accuracy")
        abstention = entry.get("abstention", {})
        lines.append(
            f"| {_corpus_name(name)} | {', '.join(map(_corpus_name, entry['trained_on']))} "
            f"| {strict['n']} | {strict['unweighted_accuracy']:.1%} "
            f"| {merged['unweighted_accuracy']:.1%} | {_pct(live)} "
            f"| {_confident(abstention.get('clips'))} | {_confident(abstention.get('windows'))} |"
        )
    for stat in ("mean", "min"):
        lines.append(
            f"| **{stat}** | | | {_bold(corpus.get(f'{stat}_strict_unweighted_accuracy'))} "
            f"| {_bold(corpus.get(f'{stat}_calm_as_neutral_unweighted_accuracy'))} | | | |"
        )
    held = "; ".join(
        f"{_corpus_name(name)} held out: {', '.join(entry.get('validation_speakers', []))}"
        for name, entry in corpus["held_out"].items()
    )
    pictures = ", ".join(f"`confusion_corpus_{name}.png`" for name in corpus["held_out"])
    return [
        *lines,
        "",
        *_corpus_targets(corpus),
        "",
        f"Early stopping, calibration and the confidence threshold use training-side "
        f"speakers held out of training ({held}).",
        "",
        f"Confusion matrices (calm as neutral): {pictures}." + _reproduce(corpus),
        "",
    ]


def _corpus_targets(corpus: dict) -> list[str]:
    """Whether the leave-one-corpus-out targets were reached (strict UA)."""
    mean = corpus.get("mean_strict_unweighted_accuracy")
    held = corpus["held_out"]
    worst = min(held, key=lambda name: held[name]["strict"]["unweighted_accuracy"])
    lowest = held[worst]["strict"]["unweighted_accuracy"]
    return [
        f"Targets (strict UA): mean >= {CORPUS_TARGET_MEAN:.0%}: "
        f"**{_reached(mean, CORPUS_TARGET_MEAN)}** ({_pct(mean)}); every held-out corpus >= "
        f"{CORPUS_TARGET_EACH:.0%}: **{_reached(lowest, CORPUS_TARGET_EACH)}** (lowest "
        f"{_corpus_name(worst)}, {lowest:.1%})."
    ]


def _cross_section(cross: dict | None) -> list[str]:
    """Old protocol ``cross`` (RAVDESS <-> TESS), still in older artifacts' metrics."""
    if not cross:
        return []
    lines = [
        "### Cross-corpus RAVDESS <-> TESS (old protocol `cross`, replaced by `corpus`)",
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
        "Confusion matrix (TESS -> RAVDESS, calm as neutral): `confusion_cross.png`."
        + _reproduce(cross),
        "",
    ]
    return lines


def _channel_section(channel: dict | None) -> list[str]:
    """Protocol ``channel``: the speaker folds' models on their test clips through channels."""
    if not channel:
        return []
    conditions = channel["conditions"]
    new = any("description" in entry for entry in conditions.values())
    lines = [
        "### Channel shift (protocol `channel`: the unseen speakers through real-world channels)",
        "",
        channel["description"] + ".",
        "",
        f"The same clips clean: mean UA **{channel['clean_mean_unweighted_accuracy']:.1%}**. "
        + (
            "Telephone and VoIP lines are real codecs run through ffmpeg; rooms, reverberation "
            "and noise are simulations made apart from training augmentation."
            if new
            else "Every condition is a simulation."
        ),
        "",
        "| condition | what | mean UA | loss vs clean (points) | shared with training |",
        "|---|---|---|---|---|",
    ]
    for name, entry in conditions.items():
        shared = (entry.get("shared_with_training") or "no") if new else "-"
        lines.append(
            f"| `{name}` | {entry.get('description') or _CONDITION_TEXT.get(name, name)} "
            f"| {entry['mean_unweighted_accuracy']:.1%} | {_points(entry['loss_vs_clean'])} "
            f"| {shared} |"
        )
    pictures = (
        "one per condition, `confusion_channel_<condition>.png`"
        if new
        else "room noise, `confusion_channel.png`"
    )
    lines += [
        "",
        f"Confusion matrices (pooled folds): {pictures}." + _reproduce(channel),
        "",
    ]
    return lines


def _room_section(room: dict | None) -> list[str]:
    """Protocol ``room``: the speaker folds' test speakers heard as sessions in a room."""
    if not room:
        return []
    levels = room.get("levels_dbfs")
    lines = [
        "### Sessions in a room (protocol `room`: heard the way `up` hears a stream)",
        "",
        room["description"] + ".",
        "",
        f"In a room: mean UA **{room['mean_unweighted_accuracy']:.1%}**; the same clips alone: "
        f"**{room['alone_mean_unweighted_accuracy']:.1%}**; loss "
        f"**{_points(room['loss_vs_alone'])}** points. {room['clips']} clips, "
        f"{room['missed']} never heard (counted wrong)"
        + (f"; room levels {levels[0]:.1f} to {levels[1]:.1f} dBFS." if levels else "."),
        "",
        "| fold | clips | room UA | alone UA | missed |",
        "|---|---|---|---|---|",
    ]
    for fold in room.get("folds", []):
        lines.append(
            f"| {fold['fold']} | {fold['room']['n']} | {fold['room']['unweighted_accuracy']:.1%} "
            f"| {fold['alone']['unweighted_accuracy']:.1%} | {fold['missed']} |"
        )
    lines.append("")
    first = room.get("first_look")
    if first:
        lines += [
            f"First look ({room.get('first_look_description', 'each clip by its first window')}):"
            f" UA **{first['unweighted_accuracy']:.1%}** over {first['n']} clips.",
            "",
        ]
    lines += [
        "Confusion matrix (pooled): `confusion_room.png`." + _reproduce(room),
        "",
    ]
    return lines


def _baseline_section(baseline: dict | None) -> list[str]:
    """Key ``baseline``: the previous shipped model scored on corpora it never trained on."""
    if not baseline:
        return []
    judged = baseline.get("judged_on") or baseline.get("corpora")
    unseen = ", ".join(map(_corpus_name, judged)) if judged else "corpora it never saw"
    trained = ", ".join(map(_corpus_name, baseline.get("trained_on", []))) or "?"
    clean = baseline["clean"]
    lines = [
        "### Baseline (the previous shipped model, scored only)",
        "",
        f"The previous shipped model (trained on {trained}, VAD {baseline.get('vad', '?')}) "
        f"judged on {unseen}, every clip through `ser-stream predict`'s own path.",
        "",
        "| heard | clips | strict UA | UA, calm as neutral | loss (points) |",
        "|---|---|---|---|---|",
        _baseline_row("clean", clean),
    ]
    if "channel_clean" in baseline:
        lines.append(_baseline_row("clean, channel clips", baseline["channel_clean"]))
    for name, entry in baseline.get("conditions", {}).items():
        lines.append(_baseline_row(f"`{name}`", entry, entry.get("loss_vs_clean")))
    room = baseline.get("room")
    if room:
        lines.append(_baseline_row("alone, room clips", room["alone"]))
        lines.append(_baseline_row("in a room", room, room.get("loss_vs_alone")))
        if "first_look" in room:
            lines.append(_baseline_row("in a room, first window only", room["first_look"]))
    lines.append("")
    abstention = clean.get("abstention")
    if abstention:
        lines += [
            f'Below its confidence threshold ({abstention["threshold"]:.3f}) it says "uncertain":'
            f" {_pct(abstention['coverage'])} of the clean clips are confident, "
            f"{_pct(abstention['accuracy_confident'])} of those right.",
            "",
        ]
    heard = (
        f" In the room {room['missed']} of {room['clips']} clips were never heard (counted wrong)."
        if room and "missed" in room
        else ""
    )
    return [
        *lines,
        "Conditions lose against the clean channel clips, the room against the same clips "
        f"alone.{heard}" + _reproduce(baseline),
        "",
    ]


def _baseline_row(name: str, entry: dict, loss: float | None = None) -> str:
    """A row of the baseline table: strict and calm-as-neutral UA, and a loss."""
    strict, merged = entry["strict"], entry["calm_as_neutral"]
    return (
        f"| {name} | {strict['n']} | {strict['unweighted_accuracy']:.1%} "
        f"| {merged['unweighted_accuracy']:.1%} | {_points(loss)} |"
    )


def _calibration_section(config: dict, metrics: dict) -> list[str]:
    """Temperature, ECE and the shipped confidence threshold."""
    calibration = config.get("calibration", {})
    speaker = (metrics.get("speaker") or {}).get("calibration")
    threshold = calibration.get("confidence_threshold")
    if not speaker and "fitted_on" not in calibration and threshold is None:
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
    if threshold is not None:
        fitted_on = calibration.get("confidence_threshold_fitted_on")
        lines += [
            f"Confidence threshold: {threshold:.3f}"
            + (f", fitted on {fitted_on}" if fitted_on else "")
            + '. Below it the display shows "uncertain" instead of a label.',
            "",
        ]
    if speaker:
        lines += _ece_lines(speaker)
    return [*lines, ""]


def _ece_lines(speaker: dict) -> list[str]:
    """ECE before and after temperature scaling on the speaker folds' test clips."""
    method = speaker.get("method", "each fold's temperature fitted on its validation actors")
    lines = [
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
            lambda f: _pct(f["speaker_mean_ua"]) + _folds(f.get("speaker_folds")),
            None,
        ),
        (f"SI UA, folds {screen}", lambda f: _pct(f.get("speaker_screen_ua")), None),
        ("EmoBox RAVDESS UA", lambda f: _pct(f.get("emobox_ravdess_ua")), "emobox_ravdess_ua"),
        ("LOCO mean UA", lambda f: _pct(f.get("corpus_mean_ua")), "corpus_mean_ua"),
        ("LOCO min UA", lambda f: _pct(f.get("corpus_min_ua")), "corpus_min_ua"),
        ("RAVDESS->TESS UA", lambda f: _pct(f.get("ravdess_to_tess_ua")), "ravdess_to_tess_ua"),
        ("TESS->RAVDESS UA", lambda f: _pct(f.get("tess_to_ravdess_ua")), "tess_to_ravdess_ua"),
        (
            "worst channel loss (points)",
            lambda f: _points(f.get("channel_worst_loss")),
            None,
        ),
        ("room loss (points)", lambda f: _points(f.get("room_loss")), "room_loss"),
        ("clip ECE", lambda f: _num(f.get("clip_ece")), None),
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


def _reproduce(report: dict) -> str:
    """`` Reproduce: `COMMAND`.`` for a report that names its command, else nothing."""
    command = report.get("command")
    return f" Reproduce: `{command}`." if command else ""


def _corpus_name(name: str) -> str:
    return _CORPUS_NAMES.get(name, name)


def _reached(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "reached" if value >= target else "not reached"


def _confident(entry: dict | None) -> str:
    """``coverage / accuracy when confident`` of an abstention entry."""
    if not entry:
        return "-"
    return f"{_pct(entry['coverage'])} / {_pct(entry['accuracy_confident'])}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _bold(value: float | None) -> str:
    return "-" if value is None else f"**{value:.1%}**"


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
