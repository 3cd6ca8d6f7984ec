"""The supervisor's wiring of replicas, its settings and its per-stream accounting."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ser_stream.cli import common
from ser_stream.errors import InputError, SupervisionError
from ser_stream.labels import LABELS
from ser_stream.messages import EndOfStream, ErrorMsg, Prediction
from ser_stream.settings import PipelineConfig, load_toml, with_stage_options
from ser_stream.sinks import Sink
from ser_stream.stages import STAGES
from ser_stream.supervisor.collector import Collector
from ser_stream.supervisor.folder import sweep_left_behind
from ser_stream.supervisor.ledger import Run
from ser_stream.supervisor.processes import Stages
from ser_stream.supervisor.wiring import CHAIN, STATELESS, Wiring
from ser_stream.transport import shard_of
from ser_stream.wire import Envelope, encode


def stages(tmp_path: Path, sources=2, **replicas) -> Wiring:
    config = PipelineConfig(sources=tuple(f"file:{i}.wav" for i in range(sources)),
                            replicas=replicas)  # fmt: skip
    return Wiring(config, tmp_path)


def test_the_chain_and_its_stateless_stages_come_from_the_stage_table():
    assert CHAIN == tuple(STAGES) == ("vad", "denoise", "features", "model")
    assert STATELESS == {"model"} == {name for name in CHAIN if STAGES[name].stateless}


def test_flags_go_over_a_files_stage_settings_and_leave_the_rest():
    from_file = {"vad": {"aggressiveness": 3, "engine": "silero"}, "model": {}}
    merged = with_stage_options(from_file, "vad", {"engine": "webrtc", "first_window_s": None})
    assert merged == {"vad": {"aggressiveness": 3, "engine": "webrtc"}, "model": {}}
    assert from_file["vad"]["engine"] == "silero"  # the file's own settings stay as read
    assert with_stage_options({}, "vad", {"engine": None}) == {}


@pytest.mark.parametrize("replicas", [{}, {"model": 3}, {"vad": 2, "denoise": 3, "features": 2}])
def test_every_bound_output_is_read_by_exactly_the_right_replicas(tmp_path, replicas):
    wiring = stages(tmp_path, **replicas)
    names = ("capture", *CHAIN)
    for upstream, downstream in zip(names, names[1:], strict=False):
        bound = [e for u in range(wiring.count(upstream)) for e in wiring.outputs(upstream, u)]
        assert len(bound) == len(set(bound))
        readers = Counter(
            e for d in range(wiring.count(downstream)) for e in wiring.inputs(downstream, d)
        )
        if downstream in STATELESS:  # every replica reads every upstream output
            assert readers == dict.fromkeys(bound, wiring.count(downstream))
        else:  # each shard output has exactly one reader: a stream meets one replica
            assert readers == dict.fromkeys(bound, 1)
            for d in range(wiring.count(downstream)):
                assert len(wiring.inputs(downstream, d)) == wiring.count(upstream)


def test_a_shard_output_leads_to_the_replica_of_the_same_shard(tmp_path):
    wiring = stages(tmp_path, vad=3)
    for source in range(2):
        outputs = wiring.outputs("capture", source)
        for shard, endpoint in enumerate(outputs):
            assert endpoint in wiring.inputs("vad", shard)


def test_shards_are_stable_and_spread():
    assert shard_of("stream-1", 1) == 0
    assert shard_of("abc", 4) == shard_of("abc", 4)
    assert len({shard_of(f"stream-{i}", 4) for i in range(40)}) == 4


def test_the_last_stage_pushes_to_the_collector(tmp_path):
    wiring = stages(tmp_path, model=2)
    for replica in range(2):
        command = wiring.command("model", replica)
        assert "--collect" in command
        assert command[command.index("--out") + 1] == wiring.endpoint("results")
        assert command[command.index("--replica") + 1] == str(replica)


def test_endpoints_are_stable_for_restarts(tmp_path):
    wiring = stages(tmp_path, features=2)
    assert wiring.command("features", 1) == wiring.command("features", 1)


@pytest.mark.parametrize(
    ("replicas", "message"),
    [({"capture": 2}, "no such stage"), ({"model": 0}, "1 to 32"), ({"vad": 99}, "1 to 32")],
)
def test_bad_replica_settings_are_refused_before_anything_starts(replicas, message):
    with pytest.raises(InputError, match=message):
        PipelineConfig(sources=("stdin",), replicas=replicas)


def test_replicas_flag():
    assert common.replicas(["model=2", "vad=2,features=3"]) == {
        "model": 2, "vad": 2, "features": 3
    }  # fmt: skip
    with pytest.raises(InputError, match="STAGE=N"):
        common.replicas(["model"])
    with pytest.raises(InputError, match="STAGE=N"):
        common.replicas(["model=two"])


def test_no_source_and_bad_streams_are_refused():
    with pytest.raises(InputError, match="no source"):
        PipelineConfig(sources=())
    with pytest.raises(InputError, match="positive"):
        PipelineConfig(sources=("stdin",), streams=0)


def prediction(label: int, t_start: float, t_end: float) -> Prediction:
    p = np.full(len(LABELS), 0.01, dtype=np.float32)
    p[label] = 1 - 0.01 * (len(LABELS) - 1)
    return Prediction(p, LABELS[label], t_start, t_end, 0)


class TestRun:
    def test_each_stream_is_summarized_alone_and_the_session_over_all(self):
        run = Run()
        one, two = run.session("a"), run.session("b")
        one.predictions += [prediction(0, 0, 3), prediction(0, 1.5, 4.5)]
        one.windows = 2
        two.predictions += [prediction(3, 0, 3)]
        two.windows = 2  # one window was lost
        one.reason, two.reason = "eof", "eof"
        assert one.summary(LABELS)["dominant"] == "neutral"
        assert two.summary(LABELS)["dominant"] == "angry"
        assert two.summary(LABELS)["dropped"] == 1
        total = run.summary(LABELS)
        assert (total["windows"], total["predicted"], total["dropped"]) == (4, 3, 1)
        assert total["streams"] == 2 and total["dominant"] == "neutral"
        assert run.end_reason(signalled=False) == "eof"

    @pytest.mark.parametrize(
        ("reasons", "signalled", "expected"),
        [
            (["silence"], False, "silence"),
            (["silence", "silence"], False, "silence"),
            (["eof", "error"], False, "error"),
            (["eof", "silence"], False, "eof"),
            (["eof"], True, "signal"),
            ([], False, "signal"),
        ],
    )
    def test_end_reason(self, reasons, signalled, expected):
        run = Run()
        for i, reason in enumerate(reasons):
            run.session(str(i)).reason = reason
        assert run.end_reason(signalled) == expected


class Recording(Sink):
    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def prediction(self, envelope, labels):
        self.seen.append(("prediction", envelope.stream, envelope.seq))

    def error(self, envelope):
        self.seen.append(("error", envelope.stream, envelope.seq))

    def stream_end(self, stream, reason, summary):
        self.seen.append(("end", stream, summary["predicted"]))


class TestCollector:
    def collector(self):
        import zmq

        context = zmq.Context.instance()
        publisher = context.socket(zmq.PUB)
        publisher.setsockopt(zmq.LINGER, 0)
        run, sink = Run(), Recording()
        return Collector(run, [sink], LABELS, publisher), run, sink, publisher

    def test_replicas_out_of_order_reach_the_sinks_in_order_then_the_end(self):
        collector, run, sink, publisher = self.collector()
        try:
            arrivals = [("a", 1), ("b", 0), ("a", 2), ("a", 0), ("b", 1)]
            for stream, seq in arrivals:
                collector.take(encode(Envelope(stream, seq, prediction(0, seq, seq + 3))))
            collector.take(encode(Envelope("a", 3, EndOfStream("eof"))))
        finally:
            publisher.close()
        assert [s for s in sink.seen if s[1] == "a"] == [
            ("prediction", "a", 0), ("prediction", "a", 1), ("prediction", "a", 2), ("end", "a", 3)
        ]  # fmt: skip
        assert [s for s in sink.seen if s[1] == "b"] == [("prediction", "b", 0),
                                                         ("prediction", "b", 1)]  # fmt: skip
        assert run.streams["a"].ended and not run.streams["b"].ended
        assert run.ordering["reordered"] == 2

    def test_a_report_about_an_unreadable_message_is_no_stream(self):
        collector, run, sink, publisher = self.collector()
        try:
            collector.take(encode(Envelope("-", 0, ErrorMsg("malformed message skipped", "vad"))))
            collector.take([b"not a message"])
        finally:
            publisher.close()
        assert run.streams == {} and len(run.errors) == 2
        assert sink.seen == [("error", "-", 0)]


def test_more_streams_than_file_sources_would_never_end_and_is_refused():
    with pytest.raises(InputError, match="only 1 sources"):
        PipelineConfig(sources=("file:a.wav",), streams=2)
    PipelineConfig(sources=("zmq:ipc:///tmp/x",), streams=50)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('replicas = "model=2"', "replicas must be a table"),
        ('streams = "3"', "streams must be a whole number"),
        ("source = 3", "source must be a string"),
    ],
)
def test_settings_of_the_wrong_shape_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "up.toml"
    path.write_text(text + "\n")
    with pytest.raises(InputError, match=message):
        load_toml(str(path))


def test_a_source_list_and_a_replicas_table_are_read(tmp_path):
    path = tmp_path / "up.toml"
    path.write_text('source = ["file:a.wav", "file:b.wav"]\nstreams = 2\n[replicas]\nmodel = 2\n')
    assert load_toml(str(path)) == {
        "source": ["file:a.wav", "file:b.wav"], "streams": 2, "replicas": {"model": 2}
    }  # fmt: skip


def test_the_sweep_removes_only_what_no_live_process_holds(tmp_path):
    import subprocess
    import sys

    from ser_stream.private import hold

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    left = tmp_path / f"up-{gone}-abc"  # its supervisor was killed: its lock is free
    left.mkdir()
    (left / ".lock").touch()
    (left / "vad.0").touch()
    held_elsewhere = tmp_path / f"serve-{gone}-def"  # a process of another PID namespace
    held_elsewhere.mkdir()
    keep = hold(held_elsewhere / ".lock")
    starting = tmp_path / f"up-{gone}-ghi"  # made, its lock not yet taken
    starting.mkdir()
    mine = tmp_path / f"up-{os.getpid()}-jkl"
    mine.mkdir()
    (mine / ".lock").touch()
    (tmp_path / f"pub-{gone}").touch()
    (tmp_path / f"pub-{gone}.lock").touch()
    (tmp_path / "pub.lock").touch()
    try:
        sweep_left_behind(tmp_path)
    finally:
        os.close(keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [held_elsewhere.name, starting.name, mine.name, "pub.lock"]
    )


class Crashing(Wiring):
    """Every stage process exits at once with status 70, as a stage that breaks at start."""

    def command(self, name: str, replica: int, **_) -> list[str]:
        return [sys.executable, "-c", "raise SystemExit(70)"]


def test_a_crash_loop_is_a_supervision_failure_not_an_input_error(tmp_path):
    """More failures within a minute than max_restarts allows end the session so."""
    config = PipelineConfig(sources=("file:a.wav",), max_restarts=1)
    processes = Stages(Crashing(config, tmp_path))
    processes.start_chain()
    try:
        with pytest.raises(SupervisionError, match=r"failed 2 times within 60 s \(last: exit 70\)"):
            while True:  # each round: the processes exit, then the supervisor looks
                for process in list(processes.processes.values()):
                    process.wait()
                processes.check()
    finally:
        processes.stop_all()
    assert not issubclass(SupervisionError, InputError)  # not "fix the input"


def test_a_supervision_failure_exits_with_its_own_status_and_says_what_to_do(monkeypatch, capsys):
    from ser_stream.cli import EXIT_SUPERVISION, main, tools

    def crash_loop(args):
        raise SupervisionError("stage vad failed 6 times within 60 s (last: exit 70); "
                               "the pipeline stopped")  # fmt: skip

    monkeypatch.setattr(tools, "_keys", crash_loop)
    assert main(["keys", "unused"]) == EXIT_SUPERVISION == 3
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ser-stream: supervision failure: stage vad failed 6 times")
    assert "not at fault" in line and "log lines above" in line and "--log-level debug" in line


def test_the_command_line_leaves_the_environment_alone(tmp_path):
    """Only the commands that run numeric work limit its threads (before numpy loads)."""
    from ser_stream.cli import main

    before = dict(os.environ)
    assert main(["keys", str(tmp_path / "keys")]) == 0
    assert dict(os.environ) == before
