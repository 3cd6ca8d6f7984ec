"""deploy/k8s: the image's entrypoint runs every part of the pipeline as its Deployment does.

No cluster and no container here: each part is started through ``deploy/k8s/entrypoint.sh``
with the arguments and environment of its manifest, on loopback (a Service name becomes
127.0.0.1, each pod's port a free one of its own, each pod's volumes folders of its own),
and its CURVE keys in a folder laid out as the kubelet lays out a Secret volume (links into
``..data/``). A producer sends the bundled sample through the capture; the predictions
reach the collector's sink, every probe passes, and SIGTERM ends every part cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
import zmq.auth

from ser_stream.audio import bundled_sample, load_audio
from ser_stream.messages import Audio, EndOfStream
from ser_stream.security import create_keys
from ser_stream.supervisor.wiring import CHAIN
from ser_stream.testing import records, wait_for, wait_for_records
from ser_stream.wire import Envelope, encode

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
ENTRYPOINT = K8S / "entrypoint.sh"
PARTS = ("collect", "capture", *CHAIN)  # in the order they are started
SECRET_FILES = ("server.key", "server.key_secret", "client.key", "client.key_secret")


def deployments() -> dict[str, dict]:
    """Each part's Deployment, by its component name."""
    found = {}
    for name in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc and doc["kind"] == "Deployment":
                labels = doc["spec"]["template"]["metadata"]["labels"]
                found[labels["app.kubernetes.io/component"]] = doc
    return found


def free_pair() -> int:
    """A loopback port whose next one is free too (a data port and its acknowledgements)."""
    for _ in range(100):
        with socket.socket() as data, socket.socket() as ack:
            data.bind(("127.0.0.1", 0))
            port = data.getsockname()[1]
            try:
                ack.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free loopback ports")


def secret_volume(folder: Path, files: dict[str, Path]) -> Path:
    """``files`` as a Secret volume holds them (by key): links to ``..data/KEY``."""
    version = folder / "..2026_12_06_00_00_00.000000000"
    version.mkdir(parents=True)
    for key, path in files.items():
        (version / key).write_bytes(path.read_bytes())
        (version / key).chmod(0o440)  # defaultMode 0440, as the manifests set it
    (folder / "..data").symlink_to(version.name)
    for key in files:
        (folder / key).symlink_to(f"..data/{key}")
    return folder


class Cluster:
    """The manifests' Services and pod volumes, mapped onto loopback and folders."""

    def __init__(self, tmp_path: Path, secret: Path) -> None:
        self.tmp_path = tmp_path
        self.secret = secret
        self.deployments = deployments()
        self.services = {  # Service name -> the component whose pods it selects
            doc["metadata"]["name"]: doc["spec"]["selector"]["app.kubernetes.io/component"]
            for name in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
            for doc in yaml.safe_load_all((K8S / name).read_text())
            if doc and doc["kind"] == "Service"
        }
        self.ports: dict[tuple[str, int], int] = {}  # (component, pod port) -> loopback port
        for part, deployment in self.deployments.items():
            ports = sorted(p["containerPort"] for p in container(deployment).get("ports", []))
            for port in ports:
                if (part, port) not in self.ports:
                    local = free_pair()
                    self.ports[(part, port)] = local
                    if port + 1 in ports:  # a data port: its acknowledgements are the next
                        self.ports[(part, port + 1)] = local + 1

    def pod_path(self, part: str, path: str) -> str:
        """A pod's mount (``/run/ser-stream``, the Secret's) as a folder of the test."""
        for mount in container(self.deployments[part])["volumeMounts"]:
            if path == mount["mountPath"] or path.startswith(mount["mountPath"] + "/"):
                if mount["name"] == "curve":
                    return str(self.secret) + path[len(mount["mountPath"]) :]
                local = self.tmp_path / part / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
                return str(local) + path[len(mount["mountPath"]) :]
        return path

    def endpoint(self, part: str, value: str) -> str:
        """A pod's bind address, or a Service's name, as the loopback address standing in."""
        for prefix in ("zmq:", ""):
            if value.startswith(f"{prefix}tcp://0.0.0.0:"):
                port = int(value.rsplit(":", 1)[1])
                return f"{prefix}tcp://127.0.0.1:{self.ports[(part, port)]}"
        for scheme, form in (("dns:", "dns:127.0.0.1:{}"), ("tcp://", "tcp://127.0.0.1:{}")):
            if value.startswith(f"{scheme}ser-stream-"):
                service, port = value[len(scheme) :].rsplit(":", 1)
                return form.format(self.ports[(self.services[service], int(port))])
        return value

    def args(self, part: str) -> list[str]:
        """The container's arguments, as they read on loopback."""
        args = container(self.deployments[part])["args"]
        return [self.pod_path(part, self.endpoint(part, arg)) for arg in args]

    def command(self, part: str, extra: tuple[str, ...] = ()) -> list[str]:
        return [str(ENTRYPOINT), *self.args(part), *extra]

    def environment(self, part: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        for item in container(self.deployments[part]).get("env", []):
            env[item["name"]] = self.pod_path(part, item["value"])
        return env

    def probe(self, part: str, probe: str) -> subprocess.CompletedProcess:
        command = container(self.deployments[part])[probe]["exec"]["command"]
        local = [self.pod_path(part, word) for word in command]
        return subprocess.run(local, env=self.environment(part), capture_output=True, text=True,
                              timeout=60)  # fmt: skip


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def produce(endpoint: str, own_key: Path, server_key: Path, stream: str) -> None:
    """A producer outside the cluster, with a key pair of its own: the sample, then its end."""
    pcm = (load_audio(bundled_sample()) * 32767).astype("int16")
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.curve_publickey, push.curve_secretkey = zmq.auth.load_certificate(str(own_key))
    push.curve_serverkey, _ = zmq.auth.load_certificate(str(server_key))
    push.setsockopt(zmq.SNDTIMEO, 60_000)
    push.connect(endpoint)
    frame = 320  # 20 ms
    seq = 0
    for seq, at in enumerate(range(0, pcm.size, frame)):
        audio = Audio(pcm[at : at + frame], 16_000, at / 16_000)
        push.send_multipart(encode(Envelope(stream, seq, audio)))
    push.send_multipart(encode(Envelope(stream, seq + 1, EndOfStream("eof"))))
    push.close(linger=60_000)
    context.term()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_part_runs_through_the_entrypoint_as_its_deployment_starts_it(tmp_path):
    made = create_keys(tmp_path / "made")  # `ser-stream keys DIR`, as the docs say
    # and a producer's own key pair, let in as `authorized-alice.key` (docs/deploy.md)
    _, alice = zmq.auth.create_certificates(str(tmp_path), "alice")
    files = {name: made / name for name in SECRET_FILES}
    files["authorized-alice.key"] = tmp_path / "alice.key"
    cluster = Cluster(tmp_path / "pods", secret_volume(tmp_path / "secret", files))
    jsonl = tmp_path / "predictions.jsonl"
    processes: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    try:
        for part in PARTS:
            extra = ("--sink", f"jsonl:{jsonl}") if part == "collect" else ()
            logs[part] = tmp_path / f"{part}.log"
            with logs[part].open("w") as log:
                processes[part] = subprocess.Popen(
                    cluster.command(part, extra), env=cluster.environment(part),
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip

        def ready(part: str) -> bool:
            assert processes[part].poll() is None, logs[part].read_text()
            probes = ("startupProbe", "readinessProbe", "livenessProbe")
            return all(cluster.probe(part, probe).returncode == 0 for probe in probes)

        for part in PARTS:
            wait_for(lambda part=part: ready(part), timeout_s=120, step_s=0.2)

        # The entrypoint's copy of the keys: real files, the user's own, closed to others.
        keys = Path(cluster.environment("vad")["SER_STREAM_CURVE_DIR"])
        assert stat.S_IMODE(keys.stat().st_mode) == 0o700
        let_in = [keys / "authorized" / "client.key", keys / "authorized" / "alice.key"]
        for path in [*(keys / name for name in SECRET_FILES), *let_in]:
            info = path.lstat()
            assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077 == 0, path

        capture = cluster.args("capture")
        ingest = capture[capture.index("--source") + 1].removeprefix("zmq:")
        produce(ingest, Path(alice), made / "server.key", "caller-1")
        (end,) = wait_for_records(jsonl, kind="stream_end", timeout_s=120)
        assert end["stream"] == "caller-1" and end["reason"] == "eof"
        predictions = records(jsonl, "prediction")
        assert predictions and {p["stream"] for p in predictions} == {"caller-1"}
        assert end["summary"]["ledger"] == "balanced", end["summary"]

        for part in ("capture", *CHAIN, "collect"):  # upstream first, as docs/deploy.md says
            processes[part].send_signal(signal.SIGTERM)
            assert processes[part].wait(timeout=60) == 0, logs[part].read_text()
            missing = cluster.probe(part, "readinessProbe")
            assert missing.returncode == 1 and "missing" in missing.stderr  # removed at exit
        assert records(jsonl, "session_end")
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def run_entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENTRYPOINT), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)  # fmt: skip


def test_the_entrypoint_refuses_an_unknown_part_and_a_secret_without_keys(tmp_path):
    unknown = run_entrypoint("predict")
    assert unknown.returncode == 2 and "no part named 'predict'" in unknown.stderr
    empty = run_entrypoint(
        "vad", SER_STREAM_CURVE_SECRET=str(tmp_path), SER_STREAM_CURVE_DIR=str(tmp_path / "keys")
    )
    assert empty.returncode == 2 and "server.key is missing" in empty.stderr
