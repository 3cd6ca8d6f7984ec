"""Serving imports only what serves: no numba, LLVM, TensorFlow, librosa or scipy in any stage
process, in ``predict``, or in the live pipeline.

Those libraries are for training (and, librosa and noisereduce, the references the parity
tests hold the serving code to); loaded in a serving process they cost memory, start-up
time and, on a fresh install, a compile step.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ser_stream.audio import bundled_sample
from ser_stream.testing import children, finish, start_up, wait_ready

HEAVY = (
    "librosa", "numba", "llvmlite", "tensorflow", "keras", "scipy", "noisereduce", "sklearn",
    "ray",
)  # fmt: skip
"""Top-level packages no serving process may import (Ray: only ``up --engine ray`` itself)."""

HEAVY_LIBRARIES = (
    "/numba/", "/llvmlite/", "/tensorflow/", "/scipy/", "/sklearn/", "/scipy.libs/", "/ray/",
)  # fmt: skip
"""Folders of their compiled parts, as they show in a process's memory maps."""

IN_PROCESS = """
import json, sys
import numpy as np
from ser_stream.artifact import load_artifact
from ser_stream.messages import Audio
from ser_stream.predict import Predictor, with_vad_engine
from ser_stream.stage import StageContext
from ser_stream.stages import STAGES

artifact = with_vad_engine(load_artifact(), sys.argv[2])
result = Predictor(artifact).predict_file(sys.argv[1])
assert result.error is None and result.windows, result
for spec in STAGES.values():
    context = StageContext(spec.name, artifact=artifact)
    if spec.warm_up is not None:
        spec.warm_up(context)
    spec.build(context)
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[3])))
print(json.dumps(heavy))
"""


def _heavy_modules(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-P", "-c", IN_PROCESS, *args, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("engine", ["silero", "webrtc"])
def test_predict_and_every_stage_core_import_no_heavy_library(engine):
    """``predict`` on the bundled sample, then every stage warmed up and built, in one process."""
    assert _heavy_modules(str(bundled_sample()), engine) == []


def test_no_live_stage_process_maps_a_heavy_library(tmp_path: Path):
    """Every process of a running ``ser-stream up``, once ready, maps none of their binaries."""
    up = start_up("--source", f"file:{bundled_sample()}", jsonl=tmp_path / "s.jsonl")
    try:
        wait_ready(up)
        processes = children(up.pid)
        assert len(processes) >= 5, processes
        found = {}
        for pid, command in [(up.pid, ["supervisor"]), *processes.items()]:
            maps = Path(f"/proc/{pid}/maps").read_text()
            heavy = sorted({part for part in HEAVY_LIBRARIES if part in maps})
            if heavy:
                found[" ".join(part for part in command if part)] = heavy
        assert found == {}
    finally:
        up.send_signal(signal.SIGINT)
        finish(up)


WITHOUT_LIBRARY = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == sys.argv[1]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from ser_stream.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("library", ["librosa", "tensorflow"])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_training_without_its_extra_says_what_to_install(command, library, tmp_path: Path):
    """A plain install serves; ``train`` and ``evaluate`` say at once what they need."""
    done = subprocess.run(
        [sys.executable, "-P", "-c", WITHOUT_LIBRARY, library, command, "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and library in lines[0], done.stderr
    assert "pip install 'ser-stream[train]'" in lines[0]
