"""The deployment manifests, validated offline:

* Kubernetes: ``kubectl kustomize`` renders the base and the tracing overlay; every object is valid
  against the Kubernetes schemas (``kubernetes-validate``, strict); each actor has a Deployment and a
  Service, runs non-root with a read-only root file system and resource limits, and is probed by native
  gRPC probes on its health-only listener; its configuration is what its settings class reads.
* Compose: valid against the compose-spec schema (vendored: deploy/compose/compose-spec.schema.json), and
  consistent with the services' settings and with itself (targets, databases, mounted certificates).

``kubectl`` comes with this project's machine image (Debian package kubectl); its absence fails the run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from mycarenet_cluster.secrets import CALLERS
from sqlalchemy.engine import make_url

from hub.__main__ import parse_targets
from mycarenet_core.telemetry import KEY_FILE_VARIABLE
from tests.deploy.deploy_support import DEPLOY, INSURERS, SETTINGS, check_settings, interpolate, port_of

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.32"  # the oldest Kubernetes the manifests target (gRPC probes: GA in 1.27)
ACTORS = ("ehealth", "hub", *(f"oa-{code}" for code in INSURERS))


def render(kustomization: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the kustomizations (Debian package kubectl)"
    done = subprocess.run(
        [kubectl, "kustomize", str(kustomization)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=["base", "overlays/tracing"])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / request.param)


def _by(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_rendered_object_is_valid_against_the_kubernetes_schemas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert obj["metadata"].get("namespace", "mycarenet") == "mycarenet" or obj["kind"] == "Namespace"


def test_a_deployment_and_a_service_per_actor_secure_and_probed(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    name, objects = rendered
    deployments, services, config = (
        _by(objects, "Deployment"),
        _by(objects, "Service"),
        _by(objects, "ConfigMap"),
    )
    assert set(ACTORS) <= set(deployments)
    assert set(ACTORS) <= set(services)
    settings: dict[str, Any] = {}
    for actor in ACTORS:
        pod = deployments[actor]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        # The environment: the ConfigMap it loads, plus the values from Secrets (stand-ins here).
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env |= config[source["configMapRef"]["name"]]["data"]
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                assert ref["name"] == f"mycarenet-db-{actor}", ref
                env[item["name"]] = "postgresql://mycarenet:secret@db.example:5432/mycarenet"
        (command,) = container["command"]
        got = check_settings(command, env, tmp_path / actor)
        settings[actor] = got
        # Native gRPC probes on the plaintext health-only listener; the service port is the mTLS one.
        assert got.health_bind is not None
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["grpc"]["port"] == port_of(got.health_bind), (actor, probe)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == port_of(got.bind)
        ca = next(v for k, v in env.items() if k.endswith("_TLS_CA"))
        tls_mounts = [m for m in container["volumeMounts"] if ca.startswith(m["mountPath"] + "/")]
        assert tls_mounts, f"{actor}: certificates not mounted"
        volume = next(v for v in pod["volumes"] if v["name"] == tls_mounts[0]["name"])
        assert volume["secret"]["secretName"] == f"mycarenet-tls-{actor}"
        if command == "mycarenet-oa":
            assert got.insurer_code == actor.removeprefix("oa-")  # type: ignore[attr-defined]
        service = services[actor]
        assert (
            service["spec"]["selector"].items()
            <= deployments[actor]["spec"]["selector"]["matchLabels"].items()
        )
        assert service["spec"]["ports"][0]["targetPort"] == "grpc"
        if name == "overlays/tracing":
            assert "OTEL_EXPORTER_OTLP_ENDPOINT" in {e["name"] for e in container["env"]}
            # ... with this deployment's own pseudonymisation key, from its Secret (no default key).
            key_file = env[KEY_FILE_VARIABLE]
            mount = next(m for m in container["volumeMounts"] if key_file.startswith(m["mountPath"] + "/"))
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            assert volume["secret"]["secretName"] == "mycarenet-telemetry-key"
        else:
            assert KEY_FILE_VARIABLE not in env
    # The actors find one another by Service name and port.
    hub = settings["hub"]
    assert parse_targets(hub.oa_targets) == {
        code: f"oa-{code}:{services[f'oa-{code}']['spec']['ports'][0]['port']}" for code in INSURERS
    }
    assert hub.ehealth_target == f"ehealth:{services['ehealth']['spec']['ports'][0]['port']}"
    # eHealth follows every insurer's holder-change feed, at the addresses the hub uses.
    assert settings["ehealth"].insurer_targets == parse_targets(hub.oa_targets)  # type: ignore[attr-defined]
    for code in INSURERS:
        oa = settings[f"oa-{code}"]
        assert oa.hub_intake_target == f"hub:{services['hub']['spec']['ports'][0]['port']}"  # type: ignore[attr-defined]
        # Every insurer follows eHealth's cadastre.
        assert oa.ehealth_target == f"ehealth:{services['ehealth']['spec']['ports'][0]['port']}"  # type: ignore[attr-defined]
    # The callers' certificates (provider software, back office, administrator) are in no server's pod.
    for deployment in deployments.values():
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            secret = volume.get("secret", {}).get("secretName", "")
            owner = deployment["metadata"]["name"]
            assert secret not in {f"mycarenet-tls-{c}" for c in CALLERS}, (owner, secret)
    if name == "overlays/tracing":
        assert {"otel-collector", "jaeger"} <= set(deployments) & set(services)
    else:
        assert "otel-collector" not in deployments, "tracing is opt-in"


# --- compose ---------------------------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose" / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_file_is_valid_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads((DEPLOY / "compose" / "compose-spec.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose)


def test_compose_services_agree_with_the_settings_and_with_each_other(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    mesh = {n: s for n, s in services.items() if s.get("command", [None])[0] in SETTINGS}
    assert set(mesh) == set(ACTORS)
    settings = {}
    for name, service in mesh.items():
        env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
        settings[name] = got = check_settings(service["command"][0], env, tmp_path / name)
        assert env.get("OTEL_SERVICE_NAME") == name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].split("//")[1].split(":")[0] in services
        # Certificates: mounted read-only from secrets/<name>, where the settings look for them.
        mounts = [v.split(":") for v in service["volumes"]]
        ca = next(v for k, v in env.items() if k.endswith("_TLS_CA"))
        tls = [m for m in mounts if ca.startswith(m[1] + "/")]
        assert tls, f"{name}: certificates not mounted"
        assert tls[0] == [f"./secrets/{name}", "/etc/mycarenet/tls", "ro"]
        # The deployment's own pseudonymisation key (python -m mycarenet_cluster.secrets writes it).
        assert ["./secrets/telemetry.key", env[KEY_FILE_VARIABLE], "ro"] in mounts
        # Its own PostgreSQL, which it waits for.
        db = make_url(got.database_url).host
        assert db == f"{name}-db"
        assert services[db]["image"].startswith("postgres:")
        assert service["depends_on"][db]["condition"] == "service_healthy"
        assert service["user"] != "0"
        assert service["read_only"] is True
        for dependency in service.get("depends_on", {}):
            assert dependency in services
    hub = settings["hub"]
    assert parse_targets(hub.oa_targets) == {
        code: f"oa-{code}:{port_of(settings[f'oa-{code}'].bind)}" for code in INSURERS
    }
    assert hub.ehealth_target == f"ehealth:{port_of(settings['ehealth'].bind)}"
    assert settings["ehealth"].insurer_targets == parse_targets(hub.oa_targets)  # type: ignore[attr-defined]
    for code in INSURERS:
        oa = settings[f"oa-{code}"]
        assert oa.insurer_code == code  # type: ignore[attr-defined]
        assert oa.hub_intake_target == f"hub:{port_of(hub.bind)}"  # type: ignore[attr-defined]
        assert oa.ehealth_target == f"ehealth:{port_of(settings['ehealth'].bind)}"  # type: ignore[attr-defined]
    # The callers' certificates (provider software, back office, administrator) are in no container.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            assert source not in {f"./secrets/{c}" for c in CALLERS}, (name, volume)
    assert {"otel-collector", "jaeger"} <= set(services)
    for config in compose.get("configs", {}).values():
        assert (COMPOSE.parent / config["file"]).is_file()
    assert len({make_url(s.database_url).host for s in settings.values()}) == len(ACTORS)
