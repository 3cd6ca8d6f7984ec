"""A simulated Ray cluster on this machine: a head and two worker nodes on 127.0.0.1.

Node A (the head) has the resource ``node_a``; nodes B and C have ``node_b``/``node_c`` and
both ``model``, so ``--place model=model`` puts the model's replicas on B and C and a
replica whose node dies has somewhere to come back. Each node gets one CPU and a small
object store; usage statistics stay off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

ray = pytest.importorskip("ray", reason="the cluster tests need the [ray] extra")
from ray.cluster_utils import Cluster  # noqa: E402

STORE_BYTES = 80 * 2**20


@dataclass
class SimulatedCluster:
    cluster: Cluster
    nodes: dict[str, object]  # "a", "b", "c": the node objects

    @property
    def address(self) -> str:
        return self.cluster.address

    def node_id(self, name: str) -> str:
        return self.nodes[name].node_id


def start_cluster() -> SimulatedCluster:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"node_a": 1},
            "object_store_memory": STORE_BYTES,
            "include_dashboard": False,
        },
    )
    nodes = {"a": cluster.head_node}
    for name in ("b", "c"):
        nodes[name] = cluster.add_node(
            num_cpus=1, resources={f"node_{name}": 1, "model": 1}, object_store_memory=STORE_BYTES
        )
    cluster.wait_for_nodes()
    return SimulatedCluster(cluster, nodes)


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[SimulatedCluster]:
    """One cluster for the tests of a module that leave its nodes as they found them."""
    simulated = start_cluster()
    yield simulated
    simulated.cluster.shutdown()


@pytest.fixture
def own_three_nodes() -> Iterator[SimulatedCluster]:
    """A cluster of the test's own: it may lose a node."""
    simulated = start_cluster()
    yield simulated
    simulated.cluster.shutdown()
