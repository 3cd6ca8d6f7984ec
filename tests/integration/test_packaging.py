"""A plain (non-editable) install carries the model and the sample and works from anywhere."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "ser_stream" / "samples" / "sample_speech.flac"


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
    # Every module of the source folders, subpackages included, is in the wheel (the package
    # list in pyproject.toml is explicit: a new subpackage left out of it would be missing).
    folders = {
        "ser_stream": "ser_stream",
        "stages": "ser_stream/stages",
        "train": "ser_stream/train",
        "models": "ser_stream/models",
    }
    for folder, installed in folders.items():
        for module in (ROOT / folder).rglob("*.py"):
            path = f"{installed}/{module.relative_to(ROOT / folder).as_posix()}"
            assert path in names, f"{path} is not in the wheel: list its package in pyproject.toml"
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


@dataclass
class Installed:
    """A plain install of the wheel and an interpreter that sees it, not the checkout."""

    python: Path
    site: Path

    def command(self, *args: str) -> list[str]:
        return [str(self.python), "-P", "-m", "ser_stream", *args]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.site)}


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Installed:
    """``pip install --no-deps --target`` of the wheel, run by an interpreter of its own.

    The dependencies are the development environment's, reached through a path file; its
    editable finder (which maps ``ser_stream.stages`` to the checkout's ``stages/``) is not
    loaded, in this interpreter or in the stage processes it starts. A process that imported
    ``ser_stream`` from the checkout's folder would therefore fail on ``ser_stream.stages``.
    """
    folder = tmp_path_factory.mktemp("installed")
    site = folder / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    venv = folder / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    # A path line only: the .pth files in that folder (the editable finder's) are not run.
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return Installed(python, site)


def _run_up(installed: Installed, cwd: Path, source: str, out: Path) -> None:
    result = subprocess.run(
        installed.command(
            "up", "--fast", "--source", f"file:{source}", "--sink", f"jsonl:{out / 'up.jsonl'}",
            "--publish", f"ipc://{out}/publish",
        ),
        cwd=cwd, env=installed.env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert "ModuleNotFoundError" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "up.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "prediction" for r in records), records
    assert records[-1]["kind"] == "session_end", records[-1]


def test_installed_up_works_from_the_checkout_root(installed, tmp_path):
    """The README's own command, run where the README runs it: the checkout's folder."""
    _run_up(installed, ROOT, "ser_stream/samples/sample_speech.flac", tmp_path)


def test_installed_up_works_from_another_folder(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run_up(installed, elsewhere, str(SAMPLE), tmp_path)


def _serve_and_use(installed: Installed, cwd: Path) -> None:
    import httpx
    import numpy as np
    import soundfile
    from websockets.sync.client import connect

    process = subprocess.Popen(
        installed.command("serve", "--port", "0", "--max-speed", "1000"),  # sent at once
        cwd=cwd, env=installed.env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "ready:" in line or "ModuleNotFoundError" in line:
                ready.set()
        ready.set()  # it exited

    threading.Thread(target=read, daemon=True).start()
    try:
        ready.wait(240)
        log = "".join(lines)
        assert "ModuleNotFoundError" not in log, log[-3000:]
        assert "ready:" in log, log[-3000:]
        url = re.search(r"ready: open (http://\S+?)/ ", log).group(1)  # type: ignore[union-attr]
        with SAMPLE.open("rb") as handle:
            answer = httpx.post(f"{url}/v1/predict", files={"file": handle}, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["windows"], answer.json()
        # A live stream goes through the stage processes.
        audio, rate = soundfile.read(SAMPLE, dtype="int16")
        records = []
        with connect(url.replace("http://", "ws://") + "/v1/stream", open_timeout=30) as socket:
            socket.send(json.dumps({"sample_rate": rate}))
            for start in range(0, audio.size, rate // 10):
                socket.send(np.ascontiguousarray(audio[start : start + rate // 10]).tobytes())
            socket.send(json.dumps({"type": "end"}))
            while not records or records[-1]["kind"] != "session_end":
                records.append(json.loads(socket.recv(timeout=120)))
        assert any(r["kind"] == "prediction" for r in records), records
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        status = process.wait(60)
    assert status == 0, "".join(lines)[-3000:]


def test_installed_serve_works_from_the_checkout_root(installed):
    _serve_and_use(installed, ROOT)


def test_installed_serve_works_from_another_folder(installed, tmp_path):
    _serve_and_use(installed, tmp_path)
