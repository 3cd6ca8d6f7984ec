"""The ledger and the stream times it relies on: measured, never derived, and able to fail."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ser_stream.artifact import load_artifact
from ser_stream.errors import InputError
from ser_stream.labels import LABELS
from ser_stream.messages import Audio, Event, Heartbeat, Prediction
from ser_stream.runtime import window_id
from ser_stream.settings import PipelineConfig, check_stage_settings
from ser_stream.stages.vad import VADConfig, vad_stream
from ser_stream.supervisor.ledger import Run
from ser_stream.testing import noise, voiced
from ser_stream.wire import Envelope, decode, encode


def prediction(t_start: float, t_end: float) -> Prediction:
    return Prediction(np.full(len(LABELS), 1 / len(LABELS), np.float32), "calm", t_start, t_end, 0)


def session_with(emitted, predicted, *, windows=None, failed=0, restarts=None):
    run = Run(restarts=Counter(restarts or {}))
    session = run.session("s")
    session.emitted = {window_id(*span) for span in emitted}
    session.predictions = [prediction(*span) for span in predicted]
    session.windows = windows
    session.failed = failed
    return run.summary(LABELS)


def test_windows_lost_with_a_stage_are_counted_from_the_ledger():
    summary = session_with([(0, 3), (1.5, 4.5), (3, 6)], [(0, 3)], restarts={"features": 1})
    assert (summary["windows"], summary["predicted"], summary["dropped"]) == (3, 1, 2)
    assert summary["dropped_reasons"] == {"lost_in_stage_failure": 2}
    assert summary["ledger"] == "balanced"


def test_a_window_a_stage_failed_on_is_dropped_as_failed():
    summary = session_with([(0, 3), (1.5, 4.5)], [(0, 3)], failed=1)
    assert summary["dropped_reasons"] == {"failed": 1} and summary["ledger"] == "balanced"


def test_a_prediction_twice_unbalances_the_ledger():
    summary = session_with([(0, 3)], [(0, 3), (0, 3)])
    assert summary["ledger"].startswith("unbalanced") and "predicted_twice 1" in summary["ledger"]


def test_a_prediction_of_a_window_never_entered_unbalances_the_ledger():
    summary = session_with([(0, 3)], [(0, 3), (7, 10)])
    assert "never_emitted 1" in summary["ledger"]


def test_a_vad_that_counted_more_than_it_entered_unbalances_the_ledger():
    summary = session_with([(0, 3)], [(0, 3)], windows=2)
    assert "vad_counted_more 1" in summary["ledger"]


def test_without_a_ledger_the_vad_count_is_unverified():
    run = Run()
    session = run.session("s")
    session.predictions = [prediction(0, 3)]
    session.windows = 2
    summary = run.summary(LABELS)
    assert summary["ledger"] == "unverified" and summary["dropped"] == 1


def chunks(audio: np.ndarray, start_s: float = 0.0, size: int = 480):
    pcm = (audio * 32767).astype(np.int16)
    for at in range(0, pcm.size, size):
        yield Audio(pcm[at : at + size], 16_000, start_s + at / 16_000)


def vad():
    return vad_stream(VADConfig(silence_event_s=None), stop_on_silence=False)


def test_audio_that_comes_twice_is_heard_once():
    audio = np.concatenate([noise(0.5), voiced(2.0), noise(1.0)])
    once, twice = vad(), vad()
    frames = list(chunks(audio))
    out_once = [o for f in frames for o in once.push(f)] + once.flush()
    resent = frames[:40] + frames[30:]  # a restarted capture sends 10 frames again
    out_twice = [o for f in resent for o in twice.push(f)] + twice.flush()
    assert [type(o).__name__ for o in out_once] == [type(o).__name__ for o in out_twice]
    assert twice.repeated_s == pytest.approx(10 * 0.03)


def test_a_jump_forward_is_a_gap_and_later_times_stay_the_audio_s_own():
    stream = vad()
    frames = list(chunks(np.concatenate([noise(0.5), voiced(2.0), noise(1.0)])))
    out = [o for f in frames[:20] + frames[30:] for o in stream.push(f)] + stream.flush()
    gaps = [o for o in out if isinstance(o, Event) and o.name == "gap"]
    assert len(gaps) == 1 and gaps[0].data["dropped_s"] == pytest.approx(0.3)
    assert gaps[0].t == pytest.approx(0.6)
    windows = [o for o in out if type(o).__name__ == "Window"]
    assert windows and windows[-1].t_end <= 3.5 + 1e-6


def test_a_resumed_vad_counts_what_its_predecessor_never_passed_on():
    stream = vad()
    stream.resume(4.0)  # where the VAD that died had got to
    out = [o for f in chunks(noise(1.0), start_s=5.5) for o in stream.push(f)]
    (gap,) = [o for o in out if isinstance(o, Event) and o.name == "gap"]
    assert gap.t == 4.0 and gap.data["dropped_s"] == pytest.approx(1.5)
    assert stream.position_s == pytest.approx(6.5)


def test_heartbeat_positions_travel_and_must_be_numbers():
    beat = Envelope("-", 0, Heartbeat("vad.0", positions={"a": 1.5, "b": 3.0}))
    assert decode(encode(beat)).body.positions == {"a": 1.5, "b": 3.0}
    assert decode(encode(Envelope("-", 0, Heartbeat("vad.0")))).body.positions == {}
    frames = encode(beat)
    frames[0] = frames[0].replace(b'"a":1.5', b'"a":"x"')
    with pytest.raises(Exception, match="heartbeat position"):
        decode(frames)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ({"vad": {"agressiveness": 3}}, "unknown"),
        ({"vad": {"window_s": "long"}}, "wrong type"),
        ({"vad": {"aggressiveness": 7}}, "0-3"),
        ({"features": {"n_mfcc": 20}}, "takes no settings"),
        ({"mixer": {}}, "no such stage"),
    ],
)
def test_wrong_stage_settings_are_refused_before_anything_starts(stages, message):
    config = PipelineConfig(("stdin",), stages=stages)
    with pytest.raises(InputError, match=message):
        check_stage_settings(config, load_artifact())


def test_right_stage_settings_pass():
    config = PipelineConfig(("stdin",), stages={"vad": {"engine": "webrtc", "aggressiveness": 3}})
    check_stage_settings(config, load_artifact())


def test_an_ended_stream_keeps_numbers_not_records():
    run = Run()
    for k in range(3):
        session = run.session(f"s{k}")
        session.emitted = {window_id(0, 3), window_id(1.5, 4.5)}
        session.predictions = [prediction(0, 3), prediction(1.5, 4.5)]
    before = run.summary(LABELS)
    run.streams["s0"].close()
    run.streams["s1"].close()
    assert run.streams["s0"].predictions == [] and run.streams["s0"].emitted == set()
    assert run.summary(LABELS) == before
    assert run.streams["s0"].summary(LABELS)["predicted"] == 2
