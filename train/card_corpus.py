"""Model card sections of the protocols that judge the model on corpora it never heard.

Protocol ``corpus`` (leave one corpus out, with its targets), the old protocol ``cross``
(RAVDESS <-> TESS, in older artifacts) and the ``baseline``: a previous shipped model judged
on corpora it never trained on.
"""

from __future__ import annotations

from ser_stream.train.card_format import bold, corpus_name, pct, points, reproduce

__all__ = [
    "CORPUS_TARGET_EACH",
    "CORPUS_TARGET_MEAN",
    "baseline_section",
    "corpus_section",
    "cross_section",
]

CORPUS_TARGET_MEAN = 0.45
"""Target of the leave-one-corpus-out protocol: mean strict UA over the held-out corpora."""

CORPUS_TARGET_EACH = 0.35
"""Target of the leave-one-corpus-out protocol: strict UA of every held-out corpus."""


def corpus_section(corpus: dict | None) -> list[str]:
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
            f"| {corpus_name(name)} | {', '.join(map(corpus_name, entry['trained_on']))} "
            f"| {strict['n']} | {strict['unweighted_accuracy']:.1%} "
            f"| {merged['unweighted_accuracy']:.1%} | {pct(live)} "
            f"| {_confident(abstention.get('clips'))} | {_confident(abstention.get('windows'))} |"
        )
    for stat in ("mean", "min"):
        lines.append(
            f"| **{stat}** | | | {bold(corpus.get(f'{stat}_strict_unweighted_accuracy'))} "
            f"| {bold(corpus.get(f'{stat}_calm_as_neutral_unweighted_accuracy'))} | | | |"
        )
    held = "; ".join(
        f"{corpus_name(name)} held out: {', '.join(entry.get('validation_speakers', []))}"
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
        f"Confusion matrices (calm as neutral): {pictures}." + reproduce(corpus),
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
        f"**{_reached(mean, CORPUS_TARGET_MEAN)}** ({pct(mean)}); every held-out corpus >= "
        f"{CORPUS_TARGET_EACH:.0%}: **{_reached(lowest, CORPUS_TARGET_EACH)}** (lowest "
        f"{corpus_name(worst)}, {lowest:.1%})."
    ]


def cross_section(cross: dict | None) -> list[str]:
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
            f"| {pct(live)} |"
        )
    lines += [
        "",
        "Confusion matrix (TESS -> RAVDESS, calm as neutral): `confusion_cross.png`."
        + reproduce(cross),
        "",
    ]
    return lines


def baseline_section(baseline: dict | None) -> list[str]:
    """Key ``baseline``: the previous shipped model scored on corpora it never trained on."""
    if not baseline:
        return []
    judged = baseline.get("judged_on") or baseline.get("corpora")
    unseen = ", ".join(map(corpus_name, judged)) if judged else "corpora it never saw"
    trained = ", ".join(map(corpus_name, baseline.get("trained_on", []))) or "?"
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
            f" {pct(abstention['coverage'])} of the clean clips are confident, "
            f"{pct(abstention['accuracy_confident'])} of those right.",
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
        f"alone.{heard}" + reproduce(baseline),
        "",
    ]


def _baseline_row(name: str, entry: dict, loss: float | None = None) -> str:
    """A row of the baseline table: strict and calm-as-neutral UA, and a loss."""
    strict, merged = entry["strict"], entry["calm_as_neutral"]
    return (
        f"| {name} | {strict['n']} | {strict['unweighted_accuracy']:.1%} "
        f"| {merged['unweighted_accuracy']:.1%} | {points(loss)} |"
    )


def _reached(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "reached" if value >= target else "not reached"


def _confident(entry: dict | None) -> str:
    """``coverage / accuracy when confident`` of an abstention entry."""
    if not entry:
        return "-"
    return f"{pct(entry['coverage'])} / {pct(entry['accuracy_confident'])}"
