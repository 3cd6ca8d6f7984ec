"""A plain (non-editable) install carries the model and the sample and works from anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("ser_stream-*.whl"))


def test_wheel_maps_every_folder_into_the_package(wheel):
    """stages/, train/ and models/ ship as ser_stream.*; no top-level stages or train."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"ser_stream"}
    for required in (
        "ser_stream/stages/vad.py",
        "ser_stream/train/training.py",
        "ser_stream/models/lstm.py",
        "ser_stream/models/default/model.onnx",
        "ser_stream/models/default/config.json",
        "ser_stream/models/default/MODEL_CARD.md",
        "ser_stream/samples/sample_speech.flac",
    ):
        assert required in names, required


def test_installed_wheel_predicts_the_bundled_sample_from_another_folder(wheel, tmp_path):
    """Installed into a fresh folder, `predict` finds its model and sample with no checkout."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The development install's editable finder would resolve ser_stream to the checkout.
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
        "if 'editable' not in getattr(f, '__module__', '') + repr(f)]; "
        "import json; from ser_stream.audio import bundled_sample; "
        "from ser_stream.predict import predict_files; "
        "[r] = predict_files([str(bundled_sample())]); print(json.dumps(r.to_json()))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["file"].startswith(str(target))
    assert "label" in record
