"""The console view (live panel and plain lines), the summary table and the session plot."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest

from ser_stream.errors import InputError
from ser_stream.labels import LABELS
from ser_stream.messages import ErrorMsg, Event, Prediction
from ser_stream.sinks import (
    ConsoleSink,
    JSONLSink,
    PlotSink,
    prediction_record,
    summary_table,
    verdict_text,
)
from ser_stream.supervisor.ledger import Session
from ser_stream.wire import Envelope


class TtyBuffer(io.StringIO):
    """A text buffer that says it is a terminal, as a real one would."""

    def isatty(self) -> bool:
        return True


def prediction(seq: int, label: str, t_start: float, t_end: float) -> Envelope:
    probabilities = np.full(len(LABELS), 0.02, dtype=np.float32)
    probabilities[LABELS.index(label)] = 1.0 - 0.02 * (len(LABELS) - 1)
    body = Prediction(probabilities, label, t_start, t_end, seq)
    return Envelope("s", seq, body, {"capture": 1_000_000, "model": 13_000_000})


def unsure(seq: int, label: str, t_start: float, t_end: float) -> Envelope:
    """A prediction of ``label`` at 31%, below the model's confidence threshold."""
    probabilities = np.full(len(LABELS), 0.69 / (len(LABELS) - 1), dtype=np.float32)
    probabilities[LABELS.index(label)] = 0.31
    body = Prediction(probabilities, label, t_start, t_end, seq, confident=False)
    return Envelope("s", seq, body, {"capture": 1_000_000, "model": 13_000_000})


def sure(seq: int, label: str, t_start: float, t_end: float) -> Envelope:
    """A prediction above the model's confidence threshold."""
    envelope = prediction(seq, label, t_start, t_end)
    return replace(envelope, body=replace(envelope.body, confident=True))


def session_of(envelopes: list[Envelope]) -> Session:
    session = Session(reason="silence", duration_s=4.2)
    session.predictions = [e.body for e in envelopes]  # type: ignore[misc]
    session.windows = len(envelopes)
    return session


RECORDS = [prediction(0, "angry", 0.5, 1.5), prediction(1, "angry", 0.5, 2.5)]
SUMMARY = session_of(RECORDS).summary(LABELS)


class TestConsoleSink:
    def test_plain_lines_when_not_a_terminal(self):
        out = io.StringIO()
        sink = ConsoleSink(out)
        sink.open(LABELS)
        sink.prediction(RECORDS[0], LABELS)
        sink.event(Envelope("s", 2, Event("gap", 1.5, {"dropped_s": 0.27})))
        sink.event(Envelope("s", 3, Event("silence", 4.5, {"duration_s": 2.0})))
        sink.error(Envelope("s", 4, ErrorMsg("producer message skipped", "capture")))
        sink.close("silence", SUMMARY)
        text = out.getvalue()
        assert "\x1b[" not in text  # no terminal control codes in a pipe
        lines = text.splitlines()
        assert lines[0].startswith("[   0.50-   1.50 s] angry")
        assert "gap: 0.27 s of audio lost" in lines[1]
        assert lines[2].endswith("silence") and lines[3] == "error: producer message skipped"
        assert "session ended (silence)" in text and "dominant   angry" in text

    def test_live_panel_redraws_in_place_on_a_terminal(self):
        out = TtyBuffer()
        sink = ConsoleSink(out)
        sink.open(LABELS)
        for record in RECORDS:
            sink.prediction(record, LABELS)
        sink.event(Envelope("s", 2, Event("speech_end", 2.6)))
        sink.close("silence", SUMMARY)
        text = out.getvalue()
        assert "\x1b[" in text  # cursor movement: the panel is redrawn, not appended
        assert "latency 12 ms" in text and "pause" in text
        assert all(label in text for label in LABELS)  # a bar per emotion
        assert "session ended (silence)" in text

    def test_summary_table_names_the_dominant_emotion_and_the_losses(self):
        summary = {**SUMMARY, "audio_dropped_s": 0.54, "dropped": 1, "windows": 3}
        rows = summary_table(summary, "silence")
        assert rows[1].split()[0] == "angry" and rows[1].endswith("<")
        assert any("dominant" in r and "angry" in r for r in rows)
        assert any("1 windows, 0.54 s of audio" in r for r in rows)
        assert any("2 predicted of 3" in r for r in rows)

    def test_summary_without_speech(self):
        summary = Session(reason="no_speech").summary(LABELS)
        assert summary["dominant"] is None
        assert any("none (no speech heard)" in r for r in summary_table(summary, "no_speech"))


class TestPlotSink:
    def test_writes_a_png_of_the_session(self, tmp_path):
        path = tmp_path / "session.png"
        sink = PlotSink(str(path))
        sink.open(LABELS)
        sink.event(Envelope("s", 0, Event("speech_start", 0.5)))
        for record in RECORDS:
            sink.prediction(record, LABELS)
        sink.event(Envelope("s", 3, Event("speech_end", 2.6)))
        sink.close("silence", SUMMARY)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000

    def test_a_session_without_speech_still_gets_its_plot(self, tmp_path):
        path = tmp_path / "empty.png"
        sink = PlotSink(str(path))
        sink.open(LABELS)
        sink.close("no_speech", Session(reason="no_speech").summary(LABELS))
        assert path.stat().st_size > 1_000

    def test_a_missing_folder_is_reported_before_the_session(self, tmp_path):
        with pytest.raises(InputError, match="no folder"):
            PlotSink(str(tmp_path / "nope" / "p.png")).open(LABELS)

    def test_a_link_at_the_path_is_refused_before_the_session(self, tmp_path):
        (tmp_path / "p.png").symlink_to(tmp_path / "precious")
        with pytest.raises(InputError, match="p.png is a symbolic link"):
            PlotSink(str(tmp_path / "p.png")).open(LABELS)

    def test_a_link_planted_during_the_session_is_never_followed(self, tmp_path):
        victim = tmp_path / "precious"
        victim.write_text("keep me")
        sink = PlotSink(str(tmp_path / "p.png"))
        sink.open(LABELS)
        (tmp_path / "p.png").symlink_to(victim)
        with pytest.raises(InputError, match="p.png is a symbolic link"):
            sink.close("no_speech", Session(reason="no_speech").summary(LABELS))
        assert victim.read_text() == "keep me"


class TestJSONLSink:
    def test_one_record_per_line_replacing_what_was_there(self, tmp_path):
        path = tmp_path / "s.jsonl"
        path.write_text("an older session\n" * 100)
        sink = JSONLSink(str(path))
        sink.open(LABELS)
        sink.prediction(RECORDS[0], LABELS)
        sink.close("silence", SUMMARY)
        kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
        assert kinds == ["prediction", "session_end"]

    def test_a_link_at_the_path_is_refused_and_its_target_untouched(self, tmp_path):
        victim = tmp_path / "precious"
        victim.write_text("keep me")
        (tmp_path / "s.jsonl").symlink_to(victim)
        with pytest.raises(InputError, match="s.jsonl is a symbolic link"):
            JSONLSink(str(tmp_path / "s.jsonl")).open(LABELS)
        assert victim.read_text() == "keep me"

    def test_a_dangling_link_creates_nothing(self, tmp_path):
        (tmp_path / "s.jsonl").symlink_to(tmp_path / "created-by-the-link")
        with pytest.raises(InputError, match="is a symbolic link"):
            JSONLSink(str(tmp_path / "s.jsonl")).open(LABELS)
        assert not (tmp_path / "created-by-the-link").exists()


class TestSessionSummary:
    def test_early_windows_answer_fast_but_the_longer_window_counts(self):
        """0.8 s and 1.6 s windows of an utterance are superseded by its 3 s window."""
        early = [prediction(0, "happy", 1.0, 1.8), prediction(1, "happy", 1.0, 2.6)]
        full = [prediction(2, "sad", 1.0, 4.0), prediction(3, "sad", 2.5, 5.5)]
        summary = session_of(early + full).summary(LABELS)
        assert summary["dominant"] == "sad"
        assert summary["mean_probabilities"]["happy"] == pytest.approx(0.02, abs=1e-6)
        assert summary["predicted"] == 4  # every window is still counted as predicted

    def test_lasting_predictions_keep_order_and_unique_starts(self):
        from ser_stream.supervisor.ledger import lasting_predictions

        bodies = [
            e.body
            for e in (
                prediction(0, "calm", 0.0, 0.8),
                prediction(1, "calm", 0.0, 1.6),
                prediction(2, "calm", 0.0, 2.1),  # the utterance's tail: the longest
                prediction(3, "angry", 3.0, 3.8),
            )
        ]
        kept = lasting_predictions(bodies)
        assert [(p.t_start, p.t_end) for p in kept] == [(0.0, 2.1), (3.0, 3.8)]


class TestUncertain:
    """A prediction below the model's confidence threshold is shown as "uncertain"."""

    def test_the_verdict_names_the_guess_quietly(self):
        """False gives ``uncertain (guess? p)``; True and unknown (None) give the label."""
        assert verdict_text("angry", 0.31, False) == "uncertain (angry? 31%)"
        assert verdict_text("angry", 0.31, True) == "angry"
        assert verdict_text("angry", 0.31, None) == "angry"

    def test_the_record_keeps_the_distribution_and_the_flag(self):
        """The JSON record has the best-guess label, every probability and ``confident``."""
        record = prediction_record(unsure(0, "angry", 0.5, 1.5), LABELS)
        assert record["confident"] is False and record["label"] == "angry"
        assert set(record["probabilities"]) == set(LABELS)
        assert prediction_record(RECORDS[0], LABELS)["confident"] is None

    def test_plain_lines_say_uncertain(self):
        """Printed as a line, an unsure window starts with ``uncertain (angry? 31%)``."""
        out = io.StringIO()
        sink = ConsoleSink(out)
        sink.open(LABELS)
        sink.prediction(unsure(0, "angry", 0.5, 1.5), LABELS)
        sink.prediction(sure(1, "sad", 1.5, 2.5), LABELS)
        first, second = out.getvalue().splitlines()
        assert first.startswith("[   0.50-   1.50 s] uncertain (angry? 31%)  angry")
        assert second.startswith("[   1.50-   2.50 s] sad") and "uncertain" not in second

    def test_the_live_panel_says_uncertain(self):
        """On a terminal the panel's title says uncertain, with the guess beside it."""
        out = TtyBuffer()
        sink = ConsoleSink(out)
        sink.open(LABELS)
        sink.prediction(unsure(0, "angry", 0.5, 1.5), LABELS)
        sink.close("silence", session_of([unsure(0, "angry", 0.5, 1.5)]).summary(LABELS))
        assert "uncertain (angry? 31%)" in out.getvalue()

    def test_the_summary_counts_confident_and_uncertain_windows(self):
        """The summary counts each window's flag once; unknown flags count in neither."""
        records = [unsure(0, "angry", 0.5, 1.5), sure(1, "sad", 1.5, 4.5), sure(1, "sad", 1.5, 4.5)]
        summary = session_of([*records, RECORDS[0]]).summary(LABELS)
        assert (summary["confident"], summary["uncertain"]) == (1, 1)
        assert any(
            "confident  1 of 2 windows (1 uncertain)" in r for r in summary_table(summary, "eof")
        )
        assert any("dominant   sad" in r for r in summary_table(summary, "eof"))

    def test_a_session_never_sure_has_an_uncertain_dominant(self):
        """When no window was confident, the dominant emotion is shown as uncertain."""
        summary = session_of([unsure(0, "angry", 0.5, 1.5)]).summary(LABELS)
        rows = summary_table(summary, "silence")
        assert any("dominant   uncertain (angry? 31%)" in r for r in rows)

    def test_a_model_without_threshold_shows_no_confidence_row(self):
        """Unknown flags: no ``confident`` row and the dominant label as before."""
        rows = summary_table(SUMMARY, "silence")
        assert not any("confident" in r or "uncertain" in r for r in rows)
        assert (SUMMARY["confident"], SUMMARY["uncertain"]) == (0, 0)
