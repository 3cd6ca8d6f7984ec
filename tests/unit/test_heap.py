"""The heap policies of stage processes, observed by the page faults they cause (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

FAULTS_PER_WINDOW = """
import resource, sys
from ser_stream import heap
from ser_stream.stages.features import FEATURE_KINDS, FeatureConfig, extract_features
from ser_stream.testing import voiced

policy = sys.argv[1]
if policy != "default":
    assert getattr(heap, policy)()
config, window = FeatureConfig(kinds=FEATURE_KINDS), voiced(3.0)
extract_features(window, config)  # the first window faults its buffers in under any policy
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    extract_features(window, config)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_window(policy: str) -> float:
    done = subprocess.run(
        [sys.executable, "-P", "-c", FAULTS_PER_WINDOW, policy],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return float(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
class TestHeapPolicies:
    def test_kept_buffers_are_reused_without_page_faults(self):
        """A window's arrays (some 5 MB) handed back are faulted in again by the next one."""
        assert faults_per_window("default") > 500
        assert faults_per_window("keep_freed_buffers") < 20

    def test_mapped_buffers_go_back_when_freed(self):
        assert faults_per_window("map_large_buffers") > 500
