"""deploy/k8s: every manifest valid for Kubernetes, and wired as the stages actually run.

The schemas are those `kubernetes-validate` bundles; the wiring is read from the containers'
arguments with ser-stream's own parser: what a stage binds, a Service exposes; what it
connects to, exists; its probes read the health file it writes; its keys come from Secrets.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest

from ser_stream.cli.parser import build_parser
from ser_stream.supervisor.wiring import CHAIN, STATELESS
from ser_stream.transport import RuntimeSettings, ack_endpoint

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.30"
"""The oldest Kubernetes release still maintained when the manifests were written."""
STAGES = ("capture", *CHAIN)
SECRET_MOUNT_ENV = "SER_STREAM_CURVE_SECRET"
KEYS_DIR_ENV = "SER_STREAM_CURVE_DIR"


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def documents() -> list[dict]:
    """Every object the kustomization applies, in its order."""
    found = []
    for name in kustomization()["resources"]:
        found += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return found


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def command_line(deployment: dict):
    """The container's arguments as the entrypoint hands them to ser-stream, parsed."""
    args = container(deployment)["args"]
    part, rest = args[0], args[1:]
    argv = ["stage", part, *rest] if part in STAGES else [part, *rest]
    if any(env["name"] == SECRET_MOUNT_ENV for env in container(deployment).get("env", [])):
        argv += ["--curve", env_value(deployment, KEYS_DIR_ENV)]
    return build_parser().parse_args(argv)


def named_ports(deployment: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(deployment).get("ports", [])}


def probe_args(deployment: dict, probe: str):
    return build_parser().parse_args(container(deployment)[probe]["exec"]["command"][1:])


def env_value(deployment: dict, name: str) -> str:
    return next(e["value"] for e in container(deployment)["env"] if e["name"] == name)


def tcp_port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def bound_ports(deployment: dict) -> set[int]:
    """The tcp ports the container's process binds (data and acknowledgement channels)."""
    args = command_line(deployment)
    if args.run.__name__ == "_collect":
        return {tcp_port(e) for e in (args.results, args.control, args.publish)}
    ports = set()
    if not args.collect:  # a collected stage connects its output
        for out in args.outputs:
            ports |= {tcp_port(out), tcp_port(ack_endpoint(out))}
    if args.source and args.source.startswith("zmq:"):
        ports.add(tcp_port(args.source))
    return ports


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def test_the_kustomization_lists_every_manifest():
    listed = kustomization()["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)


@pytest.mark.parametrize("index", range(len(documents())))
def test_every_manifest_validates_against_the_kubernetes_schemas(index):
    doc = documents()[index]
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_validation_catches_a_wrong_field():
    """Strict: an unknown field fails (the schemas would otherwise pass anything)."""
    deployment = copy.deepcopy(by_kind("Deployment")["ser-stream-vad"])
    container(deployment)["livenesProbe"] = container(deployment).pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_every_object_is_in_the_namespace_and_selects_its_own_pods():
    for doc in documents():
        if doc["kind"] == "Namespace":
            continue
        assert doc["metadata"]["namespace"] == "ser-stream", doc["metadata"]["name"]
    for name, deployment in by_kind("Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name


def test_every_stage_has_a_deployment_and_its_headless_service_exposes_what_it_binds():
    deployments, services = by_kind("Deployment"), by_kind("Service")
    assert {f"ser-stream-{name}" for name in (*STAGES, "collect", "serve")} == set(deployments)
    for name in STAGES:
        deployment = deployments[f"ser-stream-{name}"]
        assert container(deployment)["args"][0] == name
        binds = bound_ports(deployment)
        assert {p["containerPort"] for p in container(deployment).get("ports", [])} == binds
        if name == CHAIN[-1]:  # the model binds nothing: it connects to every features pod
            assert binds == set() and command_line(deployment).collect
            continue
        service = services[f"ser-stream-{name}"]
        assert service["spec"]["clusterIP"] == "None", f"{name}: a headless Service"
        assert service["spec"]["selector"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        data = {tcp_port(out) for out in command_line(deployment).outputs}
        exposed = {p["port"] for p in service["spec"]["ports"]}
        assert exposed == data | {tcp_port(ack_endpoint(f"tcp://h:{p}")) for p in data}


def test_each_stage_connects_to_every_pod_of_the_one_before():
    """``dns:SERVICE:PORT``: the previous stage's headless Service, on the port it binds."""
    deployments, services = by_kind("Deployment"), by_kind("Service")
    for before, name in zip(STAGES, CHAIN, strict=False):
        (endpoint,) = command_line(deployments[f"ser-stream-{name}"]).inputs
        scheme, host, port = endpoint.split(":")
        assert (scheme, host) == ("dns", f"ser-stream-{before}"), name
        outputs = command_line(deployments[f"ser-stream-{before}"]).outputs
        assert int(port) in {tcp_port(out) for out in outputs}
        assert services[host]["spec"]["clusterIP"] == "None"


def test_the_collector_is_reached_where_it_binds():
    deployments, services = by_kind("Deployment"), by_kind("Service")
    collect = command_line(deployments["ser-stream-collect"])
    service = services["ser-stream-collect"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    named = {
        p["name"]: p["containerPort"] for p in container(deployments["ser-stream-collect"])["ports"]
    }
    for role, endpoint in (("results", collect.results), ("control", collect.control),
                           ("publish", collect.publish)):  # fmt: skip
        assert named[ports[role]["targetPort"]] == tcp_port(endpoint) == ports[role]["port"]
    model = command_line(deployments[f"ser-stream-{CHAIN[-1]}"])
    assert model.outputs == [f"tcp://ser-stream-collect:{ports['results']['port']}"]
    for name in STAGES:
        control = command_line(deployments[f"ser-stream-{name}"]).control
        assert control == f"tcp://ser-stream-collect:{ports['control']['port']}", name


def test_producers_reach_the_capture_through_a_service():
    deployments, services = by_kind("Deployment"), by_kind("Service")
    source = command_line(deployments["ser-stream-capture"]).source
    ingest = services["ser-stream-ingest"]["spec"]
    (port,) = ingest["ports"]
    named = {
        p["name"]: p["containerPort"] for p in container(deployments["ser-stream-capture"])["ports"]
    }
    assert named[port["targetPort"]] == tcp_port(source)
    assert ingest["selector"]["app.kubernetes.io/component"] == "capture"


def test_probes_run_ser_stream_health_on_the_file_the_process_writes():
    for name in (*STAGES, "collect"):
        deployment = by_kind("Deployment")[f"ser-stream-{name}"]
        health_file = command_line(deployment).health_file
        assert health_file and health_file.startswith(mount_of(deployment, "run"))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = container(deployment)[probe]["exec"]["command"]
            assert command[:2] == ["ser-stream", "health"], (name, probe)
            args = build_parser().parse_args(command[1:])
            assert args.path == health_file, (name, probe)
        liveness = build_parser().parse_args(
            container(deployment)["livenessProbe"]["exec"]["command"][1:]
        )
        readiness = build_parser().parse_args(
            container(deployment)["readinessProbe"]["exec"]["command"][1:]
        )
        # liveness is the more patient: a process is restarted only after it was taken
        # out of service
        assert liveness.max_age >= readiness.max_age and liveness.max_stall >= readiness.max_stall


def mount_of(deployment: dict, volume: str) -> str:
    return next(
        m["mountPath"] for m in container(deployment)["volumeMounts"] if m["name"] == volume
    )


def test_curve_keys_come_from_the_secret_into_a_private_memory_folder():
    for name in (*STAGES, "collect"):
        deployment = by_kind("Deployment")[f"ser-stream-{name}"]
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        mounts = {m["mountPath"]: m for m in container(deployment)["volumeMounts"]}
        secret_mount = mounts[env_value(deployment, SECRET_MOUNT_ENV)]
        assert secret_mount.get("readOnly") is True
        secret = volumes[secret_mount["name"]]["secret"]
        assert secret["secretName"] == "ser-stream-curve"
        assert secret["defaultMode"] & 0o007 == 0, "the keys are no other user's to read"
        keys_dir = env_value(deployment, KEYS_DIR_ENV)
        parent = next(path for path in mounts if keys_dir.startswith(path + "/"))
        assert volumes[mounts[parent]["name"]]["emptyDir"]["medium"] == "Memory"
        assert command_line(deployment).curve == keys_dir


def test_the_service_token_comes_from_a_secret():
    serve = by_kind("Deployment")["ser-stream-serve"]
    (token,) = [e for e in container(serve)["env"] if e["name"] == "SER_STREAM_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "ser-stream-token", "key": "token"}
    assert command_line(serve).token is None, "never on the command line (ps shows it)"
    http = named_ports(serve)["http"]
    assert command_line(serve).port == http and command_line(serve).host == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container(serve)[probe]["httpGet"]["path"] == "/healthz"  # needs no token
    service = by_kind("Service")["ser-stream-serve"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_the_autoscaler_scales_the_stateless_model_on_cpu():
    (hpa,) = by_kind("HorizontalPodAutoscaler").values()
    model = f"ser-stream-{CHAIN[-1]}"
    assert CHAIN[-1] in STATELESS
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": model,
    }  # fmt: skip
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    deployment = by_kind("Deployment")[model]
    assert "replicas" not in deployment["spec"], "the autoscaler's to set"
    assert container(deployment)["resources"]["requests"]["cpu"], "utilization needs a request"


def test_stateful_stages_never_run_two_replicas():
    """A stateful stage (and the collector) has one replica, never two during an update."""
    for name in (*(n for n in CHAIN if n not in STATELESS), "collect"):
        spec = by_kind("Deployment")[f"ser-stream-{name}"]["spec"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", name


def test_the_grace_period_outlasts_the_drain():
    """A stage gives up on a gone receiver ``ack_timeout_s`` after SIGTERM, then waits as
    long again for its ends of stream to be acknowledged, then its sockets linger."""
    settings = RuntimeSettings()
    drain_s = 2 * settings.ack_timeout_s + settings.linger_ms / 1000
    for name in STAGES:
        deployment = by_kind("Deployment")[f"ser-stream-{name}"]
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > drain_s, name
    collect = by_kind("Deployment")["ser-stream-collect"]
    wait = container(collect)["lifecycle"]["preStop"]["exec"]["command"]
    assert wait[0] == "sleep" and float(wait[1]) > drain_s, "the collector outlives the drains"
    assert pod_spec(collect)["terminationGracePeriodSeconds"] > float(wait[1])


def test_every_pod_runs_as_a_user_without_privileges():
    user = dockerfile_instructions("USER")[-1].split(":")[0]
    for name, deployment in by_kind("Deployment").items():
        pod = pod_spec(deployment)["securityContext"]
        assert pod["runAsNonRoot"] is True and str(pod["runAsUser"]) == user, name
        own = container(deployment)["securityContext"]
        assert own["allowPrivilegeEscalation"] is False and own["readOnlyRootFilesystem"]


def dockerfile_instructions(keyword: str) -> list[str]:
    text = (K8S / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(keyword + " ")]


def test_the_dockerfile_copies_what_exists_and_starts_the_tested_entrypoint():
    assert dockerfile_instructions("FROM") == ["python:3.11-slim"]
    ignored = (K8S / "Dockerfile.dockerignore").read_text().splitlines()
    sent = {line[1:] for line in ignored if line.startswith("!")}
    destinations = {}
    for copied in dockerfile_instructions("COPY"):
        *sources, destination = [w for w in shlex.split(copied) if not w.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source in sent, f"{source} is not in the build context"
            destinations[source] = destination
    entrypoint = destinations["deploy/k8s/entrypoint.sh"]
    assert dockerfile_instructions("ENTRYPOINT") == [f'["{entrypoint}"]']
    assert (K8S / "entrypoint.sh").stat().st_mode & 0o111


def test_the_image_installs_the_runtime_packages_of_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    runtime = re.search(r"^RUNTIME_DEBS\s*:=\s*(.+)$", makefile, re.MULTILINE).group(1).split()
    (install,) = [run for run in dockerfile_instructions("RUN") if "apt-get install" in run]
    words = install.split("apt-get install", 1)[1].split("&&")[0].split()
    assert [w for w in words if not w.startswith("-")] == runtime
    (pip,) = [run for run in dockerfile_instructions("RUN") if "pip install" in run]
    assert "-c constraints.txt ." in pip and "[" not in pip, "a plain install, pinned"


def write_state(path: Path, **changes: float) -> Path:
    """A health file as a stage writes it (``transport.write_health``)."""
    import json
    import time

    from ser_stream.messages import Heartbeat
    from ser_stream.transport import write_health

    write_health(str(path), Heartbeat("model.0", stalled_s=changes.pop("stalled_s", 0.0)))
    state = json.loads(path.read_text())
    state["at"] = time.time() - changes.pop("age_s", 0.0)
    path.write_text(json.dumps(state))
    return path


@pytest.mark.parametrize(
    ("state", "flags", "said"),
    [
        ({}, [], None),
        (None, [], "missing: not ready yet"),
        ({"age_s": 6.0}, [], "stale: written 6.0 s ago"),
        ({"age_s": 6.0}, ["--max-age", "10"], None),
        ({"stalled_s": 31.0}, [], "stalled: work held without progress for 31.0 s"),
        ({"stalled_s": 31.0}, ["--max-stall", "60"], None),
    ],
)
def test_the_probe_says_in_one_line_why_a_process_is_unhealthy(
    tmp_path, capsys, state, flags, said
):
    from ser_stream.cli import main

    path = tmp_path / "health.json"
    if state is not None:
        write_state(path, **state)
    code = main(["health", str(path), *flags])
    err = capsys.readouterr().err
    if said is None:
        assert code == 0 and err == ""
    else:
        assert code == 1 and said in err and len(err.strip().splitlines()) == 1


def test_the_probe_refuses_a_file_that_is_not_a_health_file(tmp_path, capsys):
    from ser_stream.cli import main

    path = tmp_path / "health.json"
    path.write_text('{"stage": "vad"')
    assert main(["health", str(path)]) == 1
    assert "unreadable" in capsys.readouterr().err


def test_kustomize_renders_the_manifests_with_the_image_named():
    """`kubectl kustomize` (the renderer of `kubectl apply -k`) gives the files' objects."""
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl here to render the kustomization with")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    objects = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered)}
    assert set(objects) == {(d["kind"], d["metadata"]["name"]) for d in documents()}
    (image,) = kustomization()["images"]
    for name in by_kind("Deployment"):
        rendered_container = container(objects[("Deployment", name)])
        assert rendered_container["image"] == f"{image['newName']}:{image['newTag']}"
        assert rendered_container["args"] == container(by_kind("Deployment")[name])["args"]
    for doc in objects.values():
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
