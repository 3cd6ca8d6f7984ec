"""The HTTP API of a real `ser-stream serve` on loopback: predictions, errors, token, metrics."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from ser_stream.artifact import load_artifact
from ser_stream.audio import bundled_sample
from ser_stream.predict import Predictor
from ser_stream.supervisor.wiring import CHAIN
from ser_stream.web import app as app_module
from tests.web.conftest import TOKEN, stream_through, utterances

STAGES = CHAIN


def post_file(service, path: Path, *, headers=None, name: str | None = None) -> httpx.Response:
    headers = service.auth if headers is None else headers
    with path.open("rb") as handle:
        files = {"file": (name or path.name, handle, "application/octet-stream")}
        return httpx.post(f"{service.url}/v1/predict", files=files, headers=headers, timeout=60)


def test_health_needs_no_token(service):
    response = httpx.get(f"{service.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "streams": 0}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "not-bearer"],
)
def test_every_other_route_needs_the_token(service, headers):
    for method, route in [("GET", "/"), ("GET", "/metrics"), ("GET", "/openapi.json"),
                          ("POST", "/v1/predict")]:  # fmt: skip
        response = httpx.request(method, f"{service.url}{route}", headers=headers)
        assert response.status_code == 401, route
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["error"]


def test_upload_gives_what_predict_json_gives(service, tmp_path):
    sample = bundled_sample()
    response = post_file(service, Path(sample))
    assert response.status_code == 200, response.text
    expected = Predictor(load_artifact(None)).predict_file(str(sample)).to_json()
    body = response.json()
    assert body["file"] == Path(sample).name
    assert body["label"] == expected["label"]
    assert body["windows"] == expected["windows"]
    assert body["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert body["confident"] == expected["confident"]


def test_token_in_the_query_works_too(service):
    response = httpx.get(f"{service.url}/metrics?token={TOKEN}")
    assert response.status_code == 200


def test_any_rate_and_channels(service, tmp_path):
    audio = utterances(1).astype(np.float32) / 32768
    stereo = np.stack([audio, audio * 0.5], axis=1)
    import soxr

    path = tmp_path / "stereo-44k.wav"
    soundfile.write(path, soxr.resample(stereo, 16_000, 44_100), 44_100)
    response = post_file(service, path)
    assert response.status_code == 200, response.text
    assert response.json()["windows"]


def test_not_audio_is_a_422_in_predicts_shape(service, tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples")
    response = post_file(service, path)
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"file", "error"}
    assert body["file"] == "notes.wav"
    assert body["error"].startswith("notes.wav:")
    assert str(tmp_path) not in body["error"] and "/tmp" not in body["error"]


def test_silence_is_a_422(service, tmp_path):
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(16_000 * 2, np.float32), 16_000)
    response = post_file(service, path)
    assert response.status_code == 422
    assert "no sound" in response.json()["error"]


def test_empty_upload_and_missing_field_are_400(service, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    response = post_file(service, empty)
    assert response.status_code == 400
    assert "empty" in response.json()["error"]
    response = httpx.post(f"{service.url}/v1/predict", headers=service.auth, data={"audio": "x"})
    assert response.status_code == 400
    assert "multipart field 'file'" in response.json()["error"]
    response = httpx.post(f"{service.url}/v1/predict", headers=service.auth, data={"file": "x"})
    assert response.status_code == 400


def test_oversized_upload_is_a_413_before_it_is_read(service, tmp_path):
    big = tmp_path / "big.wav"
    soundfile.write(big, np.zeros(16_000 * 70, np.int16), 16_000)  # 2.2 MB > 2 MB
    response = post_file(service, big)
    assert response.status_code == 413
    assert "larger than 2 MB" in response.json()["error"]


def test_oversized_upload_without_a_length_is_cut_off(service):
    """Chunked transfer announces no size: the body is counted as it streams in."""
    url = urlsplit(service.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            "filename=\"big.raw\"\r\n\r\n").encode()  # fmt: skip

    def body():
        yield head
        for _ in range(40):  # 40 x 64 KiB = 2.5 MiB
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", **service.auth}
    connection.request("POST", "/v1/predict", body=body(), headers=headers, encode_chunked=True)
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 413, body
    assert "larger than" in body["error"]


def test_a_foreign_host_header_is_refused(service):
    """Loopback by default, so a page of another site that resolves to 127.0.0.1 is refused."""
    response = httpx.get(f"{service.url}/metrics", headers={**service.auth, "Host": "evil.example"})
    assert response.status_code == 400


def test_openapi_describes_every_answer_given(service, tmp_path):
    spec = httpx.get(f"{service.url}/openapi.json", headers=service.auth).json()
    assert {"/v1/predict", "/healthz", "/metrics", "/"} <= set(spec["paths"])
    operation = spec["paths"]["/v1/predict"]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    form = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    assert "file" in form["properties"]
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    answers = [
        post_file(service, Path(bundled_sample())),
        post_file(service, bad),
        post_file(service, empty),
        post_file(service, bad, headers={}),
    ]
    for response in answers:
        documented = operation["responses"][str(response.status_code)]
        ref = documented["content"]["application/json"]["schema"]["$ref"]
        model = getattr(app_module, ref.rsplit("/", 1)[1])
        model.model_validate(response.json())  # the body is what the description says
    health = spec["paths"]["/healthz"]["get"]["responses"]
    assert {"200", "503"} <= set(health)


def test_metrics_in_prometheus_format(service):
    records, _ = stream_through(f"{service.ws_url}?token={TOKEN}", utterances(2, seed=5), speed=4)
    predicted = sum(1 for record in records if record["kind"] == "prediction")
    assert predicted
    response = httpx.get(f"{service.url}/metrics", headers=service.auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    value = {name: family.samples for name, family in families.items()}
    assert value["ser_stream_ready"][0].value == 1
    assert value["ser_stream_predictions"][0].value >= predicted
    assert value["ser_stream_windows"][0].value >= predicted
    latency = {s.labels.get("le"): s.value for s in value["ser_stream_latency_seconds"]
               if s.name.endswith("_bucket")}  # fmt: skip
    assert latency["+Inf"] >= predicted
    depths = {s.labels["process"] for s in value["ser_stream_stage_queue_depth"]}
    assert set(STAGES) <= depths
    restarts = {s.labels["process"]: s.value for s in value["ser_stream_stage_restarts"]}
    assert set(STAGES) <= set(restarts) and not any(restarts.values())
    assert "ser_stream_windows_dropped" in families
    assert "ser_stream_websocket_streams" in families
