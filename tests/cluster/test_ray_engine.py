"""``ser-stream up --engine ray`` on a simulated three-node cluster (see ``conftest.py``).

A stream flows from a capture on node A through the stages to model replicas on nodes B
and C and predicts what the local ``up`` predicts; a worker node that dies mid-stream has
its stages brought back on a living node, with the ledger balanced and the loss counted;
a stranger without the session's keys gets nothing from and puts nothing into any endpoint.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import zmq

from ser_stream.audio import bundled_sample
from ser_stream.testing import finish, records, run_up, talk, wait_for_records
from ser_stream.transport import ack_endpoint
from tests.cluster.conftest import SimulatedCluster
from tests.faults.helpers import STRANGERS, assert_ledger_holds, start_up, stranger_socket

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

PLACED = ("--place", "capture=node_a", "--place", "model=model", "--replicas", "model=2")
"""The capture on node A, the two model replicas on nodes B and C."""


def on_ray(cluster: SimulatedCluster) -> tuple[str, ...]:
    return ("--engine", "ray", "--address", cluster.address, *PLACED)


def placements(lines: list[str] | str) -> dict[str, str]:
    """The node each process was last placed on, by label, from ``up``'s log lines."""
    placed = {}
    for line in lines.splitlines() if isinstance(lines, str) else lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line Ray prefixed: a stage's own, forwarded
        if isinstance(record, dict) and record.get("event") == "stage placed":
            placed[record["stage"]] = record["node"]
    return placed


def read_until_placed(up: subprocess.Popen, labels: set[str], lines: list[str]) -> dict[str, str]:
    """Read ``up``'s stderr into ``lines`` until every process in ``labels`` was placed."""
    while not labels <= set(placements(lines)):
        line = up.stderr.readline()
        if not line:
            raise AssertionError(f"up ended before placing {labels}: {''.join(lines)[-3000:]}")
        lines.append(line)
    return placements(lines)


def predictions(jsonl) -> list[tuple]:
    return [
        (r["stream"], r["t_start"], r["t_end"], r["probabilities"])
        for r in records(jsonl, "prediction")
    ]


@pytest.mark.timeout(300)
def test_a_stream_flows_across_nodes_and_predicts_as_the_local_pipeline(three_nodes, tmp_path):
    source = ("--source", f"file:{bundled_sample()}", "--fast")
    local = run_up(*source, jsonl=tmp_path / "local.jsonl")
    assert local.returncode == 0, local.stderr
    spread = run_up(*on_ray(three_nodes), *source, jsonl=tmp_path / "ray.jsonl", log_level="info")
    assert spread.returncode == 0, spread.stderr[-3000:]

    placed = placements(spread.stderr)
    assert placed["capture.0"] == three_nodes.node_id("a")
    assert {placed["model.0"], placed["model.1"]} == {
        three_nodes.node_id("b"),
        three_nodes.node_id("c"),
    }
    expected, got = predictions(tmp_path / "local.jsonl"), predictions(tmp_path / "ray.jsonl")
    assert expected and [p[:3] for p in got] == [p[:3] for p in expected]  # the same windows
    for (*_, want), (*_, have) in zip(expected, got, strict=True):
        # The model's replicas batch what queued differently from one process: the last
        # printed digit may differ, never the emotion.
        assert max(want, key=want.get) == max(have, key=have.get)
        assert all(abs(have[label] - want[label]) <= 1e-5 for label in want), (want, have)
    summary = records(tmp_path / "ray.jsonl")[-1]["summary"]
    assert summary["ledger"] == "balanced" and summary["predicted"] == len(expected)


@pytest.mark.timeout(300)
def test_a_worker_node_dies_mid_stream_and_its_stages_come_back(own_three_nodes, tmp_path):
    cluster = own_three_nodes
    source, jsonl = talk(tmp_path / "talk.wav", 10), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl, *on_ray(cluster))
    lines: list[str] = []
    try:
        first = read_until_placed(up, {"capture.0", "vad", "denoise", "features", "model.0",
                                       "model.1"}, lines)  # fmt: skip
        doomed = next(name for name in ("b", "c") if cluster.node_id(name) == first["model.0"])
        living = {cluster.node_id(name) for name in "abc" if name != doomed}
        moved = {label for label, node in first.items() if node == cluster.node_id(doomed)}
        wait_for_records(jsonl, kind="prediction", timeout_s=120)
        cluster.cluster.remove_node(cluster.nodes[doomed])
        # Read on until each of its processes is placed on a living node.
        while not all(placements(lines)[label] in living for label in moved):
            lines.append(up.stderr.readline() or "")
            assert up.poll() is None or lines[-1], "up ended first"
        stderr = finish(up, 240)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr[-3000:]
    session = records(jsonl)
    summary = session[-1]["summary"]
    assert "model.0" in moved
    assert all(summary["restarts"].get(label, 0) >= 1 for label in moved), (moved, summary)
    assert_ledger_holds(summary, [r for r in session if r["kind"] == "prediction"])
    assert summary["windows"] == 10, summary  # every utterance was windowed; none vanished


@pytest.mark.timeout(300)
def test_a_stranger_without_the_keys_gets_nothing_and_puts_nothing(three_nodes, tmp_path):
    source, jsonl = talk(tmp_path / "talk.wav", 5), tmp_path / "s.jsonl"
    up = start_up(f"file:{source}", jsonl, *on_ray(three_nodes))
    context = zmq.Context()
    context.setsockopt(zmq.LINGER, 0)
    ray.init(address=three_nodes.address, namespace="ser-stream", log_to_driver=False)
    try:
        wait_for_records(jsonl, kind="prediction", timeout_s=120)
        (name,) = [
            actor["name"]
            for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["name"].startswith("registry-")
        ]
        endpoints = ray.get(ray.get_actor(name, namespace="ser-stream").all.remote())
        outputs = [e for key, e in endpoints.items() if key not in ("control", "results")]
        inboxes = [endpoints["control"], endpoints["results"], *map(ack_endpoint, outputs)]
        thieves = [stranger_socket(context, zmq.PULL, k, e) for k in STRANGERS for e in outputs]
        forgers = [stranger_socket(context, zmq.PUSH, k, e) for k in STRANGERS for e in inboxes]
        forged = json.dumps(
            {
                "v": 1,
                "kind": "error",
                "stream": "stream-1",
                "seq": 0,
                "ts": {},
                "reason": "INJECTED",
                "stage": "model",
            }  # fmt: skip
        ).encode()
        stolen = 0
        while up.poll() is None:  # they try for the whole session
            for forger in forgers:
                try:
                    forger.send_multipart([forged], zmq.NOBLOCK)
                except zmq.Again:
                    pass  # no handshake completed: nothing can leave
            for thief in thieves:
                if thief.poll(20):
                    thief.recv_multipart()
                    stolen += 1
        stderr = finish(up, 120)
    finally:
        ray.shutdown()
        context.destroy(linger=0)
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, stderr[-3000:]
    assert stolen == 0
    session = records(jsonl)
    assert not [r for r in session if "INJECTED" in json.dumps(r)]
    summary = session[-1]["summary"]
    assert summary["ledger"] == "balanced" and summary["windows"] == 5 == summary["predicted"]
    assert {r["stream"] for r in session if "stream" in r} == {"stream-1"}


@pytest.mark.timeout(120)
def test_a_place_no_node_has_is_refused_at_once_in_one_line(three_nodes, tmp_path):
    result = run_up(
        "--engine", "ray", "--address", three_nodes.address, "--place", "model=tpu",
        "--source", f"file:{bundled_sample()}", "--fast",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "no node of the Ray cluster has the resource tpu" in last
