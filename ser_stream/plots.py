"""The session plot of ``ser-stream up --plot PATH``: mean distribution and emotion timeline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_session"]

# One colour per canonical label, stable across plots (matplotlib's tab10 order).
_COLOURS = {
    "neutral": "#7f7f7f",
    "happy": "#ffbf00",
    "sad": "#1f77b4",
    "angry": "#d62728",
    "fearful": "#9467bd",
    "disgusted": "#2ca02c",
    "surprised": "#ff7f0e",
    "calm": "#17becf",
}


def plot_session(
    path: str | Path,
    labels: Sequence[str],
    predictions: Sequence[dict],
    speech: Sequence[tuple[str, float]],
    summary: dict,
    reason: str,
) -> Path:
    """Write a PNG: the mean distribution (bars) above the timeline of every window.

    ``predictions`` are ``prediction`` records (``docs/records.md``); ``speech`` is
    ``(event name, t)`` for ``speech_start``/``speech_end``, shaded on the timeline.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = [_COLOURS.get(label, "#333333") for label in labels]
    mean = np.array([summary["mean_probabilities"].get(label, 0.0) for label in labels])
    figure, (bars, timeline) = plt.subplots(
        2, 1, figsize=(9, 6.5), gridspec_kw={"height_ratios": [1, 1.4]}
    )
    bars.bar(labels, mean, color=colours)
    bars.set_ylim(0, max(0.5, float(mean.max()) * 1.15 if mean.size else 0.5))
    bars.set_ylabel("mean probability")
    for x, value in enumerate(mean):
        bars.text(x, value + 0.01, f"{value:.0%}", ha="center", va="bottom", fontsize=9)
    dominant = summary.get("dominant") or "none"
    bars.set_title(
        f"Session: {dominant} dominant · {summary['predicted']} windows · "
        f"{summary['duration_s']:.1f} s · ended by {reason}"
    )

    if predictions:
        ends = np.array([p["t_end"] for p in predictions])
        order = np.argsort(ends, kind="stable")
        ends = ends[order]
        shares = np.array([[p["probabilities"][label] for label in labels] for p in predictions])
        timeline.stackplot(ends, shares[order].T, labels=labels, colors=colours, alpha=0.9)
        timeline.set_xlim(0, max(float(ends.max()), 1.0))
    else:
        timeline.text(0.5, 0.5, "no speech heard", ha="center", va="center",
                      transform=timeline.transAxes)  # fmt: skip
    start = None
    for name, t in speech:  # speech as a strip above the distributions
        if name == "speech_start":
            start = t
        elif start is not None:
            timeline.plot([start, t], [1.04, 1.04], color="black", lw=4, solid_capstyle="butt")
            start = None
    timeline.set_ylim(0, 1.08)
    timeline.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    timeline.set_xlabel("stream time (s) at the end of each window; black strip: speech")
    timeline.set_ylabel("probability")
    if predictions:
        timeline.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
