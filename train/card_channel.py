"""Model card sections of the protocols that hear the unseen speakers through channels and rooms.

Protocol ``channel`` (codecs, line filters, rooms and noise) and protocol ``room``
(sessions heard the way ``up`` hears a stream).
"""

from __future__ import annotations

from ser_stream.train.card_format import points, reproduce

__all__ = ["channel_section", "room_section"]

_CONDITION_TEXT = {
    "telephone": "telephone band 300-3400 Hz + 8 kHz mu-law",
    "laptop": "laptop microphone EQ (200 Hz low cut, +8 dB at 3 kHz)",
    "reverb": "room reverberation, RT60 0.3-0.8 s (image-source rooms)",
    "noise": "room noise at 10 dB SNR (babble, rumble, hum)",
    "gain": "-20 dB gain",
}
"""Descriptions of the old (simulated) channel conditions, whose metrics carry none."""


def channel_section(channel: dict | None) -> list[str]:
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
            f"| {entry['mean_unweighted_accuracy']:.1%} | {points(entry['loss_vs_clean'])} "
            f"| {shared} |"
        )
    pictures = (
        "one per condition, `confusion_channel_<condition>.png`"
        if new
        else "room noise, `confusion_channel.png`"
    )
    lines += [
        "",
        f"Confusion matrices (pooled folds): {pictures}." + reproduce(channel),
        "",
    ]
    return lines


def room_section(room: dict | None) -> list[str]:
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
        f"**{points(room['loss_vs_alone'])}** points. {room['clips']} clips, "
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
        "Confusion matrix (pooled): `confusion_room.png`." + reproduce(room),
        "",
    ]
    return lines
