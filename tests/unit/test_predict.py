"""Unit tests of batch prediction: one result per file, in order, however the batch runs."""

from __future__ import annotations

import numpy as np
import soundfile

from ser_stream.predict import predict_files
from ser_stream.testing import noise, voiced


def _clips(folder, count: int) -> list[str]:
    paths = []
    for i in range(count):
        audio = np.concatenate(
            [noise(0.4, seed=i), voiced(1.5, f0=120 + 30 * i, seed=i), noise(0.4, seed=i + 7)]
        )
        path = folder / f"clip{i}.wav"
        soundfile.write(path, audio, 16_000, subtype="PCM_16")
        paths.append(str(path))
    return paths


class TestPredictFiles:
    def test_no_files_give_no_results(self):
        """An empty batch yields nothing."""
        assert list(predict_files([])) == []

    def test_worker_processes_give_the_same_results_in_order(self, tmp_path):
        """Workers forked after the first file give exactly the one-process results."""
        paths = _clips(tmp_path, 4) + [str(tmp_path / "missing.wav")]
        serial = [r.to_json() for r in predict_files(paths, workers=1)]
        parallel = [r.to_json() for r in predict_files(paths, workers=2)]
        assert [r["file"] for r in serial] == paths
        assert parallel == serial
        assert "no such file" in serial[-1]["error"]

    def test_a_file_alone_gives_its_batch_result(self, tmp_path):
        """A file's result does not depend on the files predicted before it."""
        paths = _clips(tmp_path, 3)
        [alone] = predict_files(paths[2:])
        batch = list(predict_files(paths, workers=1))
        assert alone.to_json() == batch[2].to_json()


class TestVadEngine:
    def test_a_named_engine_replaces_the_artifacts_and_none_keeps_it(self):
        """predict --vad ENGINE hears with that engine; without it, with the model's."""
        from ser_stream.artifact import load_artifact
        from ser_stream.predict import with_vad_engine

        artifact = load_artifact()
        other = "webrtc" if artifact.analysis.vad.engine == "silero" else "silero"
        assert with_vad_engine(artifact, None) is artifact
        changed = with_vad_engine(artifact, other)
        assert changed.analysis.vad.engine == other
        assert changed.analysis.vad.aggressiveness == artifact.analysis.vad.aggressiveness
        assert changed.analysis.features == artifact.analysis.features
