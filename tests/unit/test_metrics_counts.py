"""`/metrics` counts what its names say: uploads' predictions among the predictions."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ser_stream.artifact import load_artifact
from ser_stream.audio import bundled_sample
from ser_stream.predict import Predictor
from ser_stream.supervisor.ledger import Run
from ser_stream.web.app import create_app
from ser_stream.web.gateway import Gateway
from ser_stream.web.metrics import Metrics


def scraped(client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }


@pytest.mark.slow
def test_an_upload_counts_its_windows_and_predictions(tmp_path):
    from fastapi.testclient import TestClient

    gateway = Gateway(f"ipc://{tmp_path}/capture", max_streams=4)
    metrics = Metrics(Run(), gateway)
    app = create_app(gateway, Predictor(load_artifact()), metrics)
    with TestClient(app) as client:
        before = scraped(client)
        assert before["ser_stream_predictions_total"] == 0
        with open(bundled_sample(), "rb") as sample:
            answer = client.post("/v1/predict", files={"file": ("sample.flac", sample)})
        assert answer.status_code == 200, answer.text
        windows = len(answer.json()["windows"])
        assert windows > 0
        after = scraped(client)
        assert after["ser_stream_predictions_total"] == windows
        assert after["ser_stream_windows_total"] == windows
        # A recording that cannot be used classifies nothing.
        bad = client.post("/v1/predict", files={"file": ("bad.wav", b"not audio at all")})
        assert bad.status_code == 422, bad.text
        assert scraped(client)["ser_stream_predictions_total"] == windows
