"""``ser-stream bench --engine ray``: live streams with the model on 1, 2 and 3 Ray nodes.

Each node count is a simulated Ray cluster on this machine (a head and workers, one CPU
each, as the cluster tests run it), with one model replica per node (``--place
model=model``); the local ``up`` runs the same sweep in the same run. The engine's own
cost: the time a cluster takes to start, the time a session takes to be ready, and the
memory of Ray's processes (GCS, raylets and their agents, idle; the actors that host the
stage processes, during the session). On one machine the nodes share its cores: what this
shows is the engine's overhead and that the placement works, not the capacity of a real
cluster.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ser_stream.bench.streams import measure_streams
from ser_stream.supervisor.usage import usage
from ser_stream.testing.procs import children, status_mb

__all__ = ["NODE_COUNTS", "engine_rss_mb", "measure_cluster", "markdown"]

NODE_COUNTS = (1, 2, 3)
STORE_BYTES = 80 * 2**20
"""Each simulated node's object store (the pipeline moves no data through it)."""
WEBRTC = {"vad": {"engine": "webrtc"}}
"""The sweeps' VAD: WebRTC, the lighter engine, so the stream counts show the engine."""


def _start_cluster(nodes: int):
    """A simulated cluster of ``nodes`` nodes, each with one CPU and the ``model`` resource."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "resources": {"model": 1}, "object_store_memory": STORE_BYTES}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    return cluster


def engine_rss_mb() -> dict[str, float]:
    """Resident memory of the Ray processes this process started, by kind (MB).

    ``gcs``: the global control store; ``raylets``: one per node; ``daemons``: the agents
    and monitors Ray starts beside them; ``workers``: Ray's Python workers (the actors).
    Stage processes (``-m ser_stream``) are the pipeline's, not the engine's; another Ray
    on the machine is not counted.
    """
    kinds: dict[str, float] = {}
    waiting = list(children(os.getpid()).items())
    while waiting:
        pid, cmdline = waiting.pop()
        waiting += children(pid).items()
        command = " ".join(cmdline)
        if "-m ser_stream" in command:
            continue
        if "gcs_server" in command:
            kind = "gcs"
        elif cmdline[0].endswith("/raylet"):
            kind = "raylets"
        elif "default_worker.py" in command or (
            command.startswith("ray::") and "Agent" not in command
        ):
            kind = "workers"
        else:
            kind = "daemons"
        kinds[kind] = kinds.get(kind, 0.0) + (status_mb(pid) or 0.0)
    found = {kind: round(mb, 1) for kind, mb in sorted(kinds.items())}
    found["total"] = round(sum(kinds.values()), 1)
    return found


def measure_cluster(counts: list[int], seconds: float, folder: Path, nodes=NODE_COUNTS) -> dict:
    """The streams sweep, locally and with the model on each number of simulated nodes."""
    result: dict = {"vad": "webrtc", "stream_s": seconds}
    local = measure_streams(counts, seconds, folder, stages=WEBRTC)
    result["local"] = {"streams": local, "max_streams": _max_ok(local)}
    for count in nodes:
        began = time.monotonic()
        cluster = _start_cluster(count)
        start_s = round(time.monotonic() - began, 2)
        idle = engine_rss_mb()
        try:
            rows = measure_streams(
                counts, seconds, folder, stages=WEBRTC, engine="ray",
                address=cluster.address, place={"model": "model"}, replicas={"model": count},
            )  # fmt: skip
        finally:
            cluster.shutdown()
        result[f"ray, {count} node{'s' if count > 1 else ''}"] = {
            "nodes": count,
            "cluster_start_s": start_s,
            "engine_rss_mb_idle": idle,
            "streams": rows,
            "max_streams": _max_ok(rows),
        }
    result["driver_rss_mb"] = round(usage({"bench": os.getpid()})["peak_rss_mb"]["bench"], 1)
    return result


def _host_mb(configs: dict) -> str:
    """The hosts' share of the pipeline's memory, in words."""
    hosts = [
        mb
        for config in configs.values()
        if "cluster_start_s" in config
        for row in config["streams"][:1]
        for label, mb in row["rss_mb"].items()
        if label.endswith(".host")
    ]
    if not hosts:
        return "none measured"
    return f"{min(hosts):.0f}-{max(hosts):.0f} MB each"


def _max_ok(rows: list[dict]) -> int:
    return max((row["streams"] for row in rows if row["ok"]), default=0)


def markdown(result: dict) -> str:
    """The report: one row per configuration and stream count, then the engine's cost."""
    lines = [
        "# Streams on a simulated Ray cluster, beside the local `up`",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
        f"`{result['command']}`. Every node runs on this machine and shares its cores.",
        f"{result['stream_s']:g} s of live audio per stream, {result['vad']} VAD; the model "
        "has one replica per node (`--place model=model`).",
        "",
        "| engine | streams | p50 ms | p95 ms | p99 ms | lost | ready s | RSS MB (pipeline) | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    configs = {name: value for name, value in result.items() if isinstance(value, dict)}
    for name, config in configs.items():
        if "streams" not in config:
            continue
        for row in config["streams"]:
            latency = {k: f"{v:.1f}" for k, v in row["latency_ms"].items()}
            lost = (
                row["dropped_windows"] + max(0, row["dropped_frames"]) + row["streams_unfinished"]
            )
            lines.append(
                f"| {name} | {row['streams']} | {latency.get('p50', '-')} | "
                f"{latency.get('p95', '-')} | {latency.get('p99', '-')} | {lost} | "
                f"{row.get('ready_s', '-')} | {row['rss_mb']['total']} | "
                f"{'yes' if row['ok'] else 'no'} |"
            )
    lines += [
        "",
        "Most live streams at p95 ≤ 100 ms with nothing lost: "
        + "; ".join(
            f"{name}: {config['max_streams']}"
            for name, config in configs.items()
            if "max_streams" in config
        )  # fmt: skip
        + ".",
        "",
        "## The engine's own cost",
        "",
        "| cluster | start s | GCS MB | raylets MB | daemons MB | workers MB | total MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, config in configs.items():
        if "cluster_start_s" not in config:
            continue
        idle = config["engine_rss_mb_idle"]
        lines.append(
            f"| {name} | {config['cluster_start_s']} | {idle.get('gcs', 0)} | "
            f"{idle.get('raylets', 0)} | {idle.get('daemons', 0)} | {idle.get('workers', 0)} | "
            f"{idle['total']} |"
        )
    lines += [
        "",
        "Memory of Ray's own processes with the cluster idle, before the session. The "
        "pipeline's RSS above includes, with Ray, the actor that hosts each stage process "
        f"(`NAME.host`): {_host_mb(configs)}. `ready s`: from the session's start to every "
        "stage up.",
        "",
    ]
    return "\n".join(lines)
