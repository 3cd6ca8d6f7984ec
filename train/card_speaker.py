"""Model card sections of the protocols that test speakers of the training corpora.

Protocol ``seed`` (speakers mixed), protocol ``speaker`` (speaker-disjoint folds, with their
abstention) and the calibration measured on the speaker folds.
"""

from __future__ import annotations

from ser_stream.train.card_format import bold, corpus_name, pct, reproduce

__all__ = ["calibration_section", "seed_section", "speaker_section"]


def seed_section(seed: dict | None) -> list[str]:
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
        "Confusion matrix (test): `confusion_seed.png`." + reproduce(seed),
        "",
    ]


def speaker_section(spk: dict | None) -> list[str]:
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
            f"{corpus_name(name)} {m['unweighted_accuracy']:.1%} ({m['n']} clips)"
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
        "Confusion matrix (all folds' test clips): `confusion_speaker.png`." + reproduce(spk),
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
            f"| {pct(ravdess['unweighted_accuracy'] if ravdess and ravdess['n'] else None)} "
            f"| {pct(session['unweighted_accuracy'] if session else None)} |"
        )
    lines.append(
        f"| **mean** | | **{spk['mean_unweighted_accuracy']:.1%}** "
        f"| {bold(spk.get('emobox_ravdess_mean_unweighted_accuracy'))} "
        f"| {bold(spk.get('session_mean_unweighted_accuracy'))} |"
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
                f"| {level} ({entry['n']}) | {pct(entry['coverage'])} "
                f"| {pct(entry['accuracy_confident'])} | {pct(entry.get('accuracy_all'))} |"
            )
    return [*lines, ""]


def calibration_section(config: dict, metrics: dict) -> list[str]:
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


def _row(name: str, m: dict) -> str:
    return (
        f"| {name} ({m['n']} clips) | {m['accuracy']:.2%} | {m['unweighted_accuracy']:.2%} "
        f"| {m['macro_f1']:.2%} |"
    )
