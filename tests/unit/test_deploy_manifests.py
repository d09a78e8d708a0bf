"""The deploy manifests, checked offline: each against its vendored schema (tests/schemas/),
and against the code they run: the same entry points everywhere, probes on the health
routes, grace periods that cover the drains. Docker and Kubernetes are not run here.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from service.runtime.settings import SettingsError, load_settings
from service.web.http.middleware import OPEN_PATHS
from workers.gevent_worker import GeventWorker

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "schemas"
K8S = ROOT / "deploy" / "k8s"

WEB = ["gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"]
WORKER = ["python", "-m", "workers"]

KINDS = {
    ("apps/v1", "Deployment"): "deployment-apps-v1.json",
    ("apps/v1", "StatefulSet"): "statefulset-apps-v1.json",
    ("v1", "Service"): "service-v1.json",
    ("v1", "Secret"): "secret-v1.json",
    ("v1", "ConfigMap"): "configmap-v1.json",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscaler-autoscaling-v2.json",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudget-policy-v1.json",
}


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def validator(schema: dict[str, Any], registry: Registry | None = None) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry or Registry())


def k8s_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    definitions = load_json(SCHEMAS / "kubernetes" / "_definitions.json")
    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    return validator(load_json(SCHEMAS / "kubernetes" / KINDS[(api_version, kind)]), registry)


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name)
    return matches[0]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())


def render() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def errors(check: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in check.iter_errors(document)]


# --- schemas -----------------------------------------------------------------------------


def test_every_kubernetes_manifest_is_valid() -> None:
    docs = k8s_documents()
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret"} <= kinds
    for doc in docs:
        assert (doc["apiVersion"], doc["kind"]) in KINDS, doc["kind"]
        assert errors(k8s_validator(doc["apiVersion"], doc["kind"]), doc) == [], doc["metadata"]["name"]


def test_the_kubernetes_schema_rejects_a_typo() -> None:
    broken = copy.deepcopy(k8s_object("Deployment", "copilot-gateway-worker"))
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"] = {"httpGet": {"path": "/healthz"}}  # no port
    found = errors(k8s_validator("apps/v1", "Deployment"), broken)
    assert any("replica" in e for e in found)
    assert any("port" in e for e in found)


def test_compose_file_is_valid() -> None:
    check = validator(load_json(SCHEMAS / "compose" / "compose-spec.json"))
    assert errors(check, compose()) == []
    broken = compose()
    broken["services"]["worker"]["comand"] = WORKER
    assert errors(check, broken) != []


def test_paas_blueprints_are_valid() -> None:
    app = validator(load_json(SCHEMAS / "paas" / "app-json.schema.json"))
    assert errors(app, load_json(ROOT / "app.json")) == []
    blueprint = validator(load_json(SCHEMAS / "paas" / "render-blueprint.schema.json"))
    assert errors(blueprint, render()) == []
    broken = render()
    broken["services"][2].pop("ipAllowList")  # a Key Value instance must say who may connect
    broken["services"][0]["envVars"].append({"value": "no key"})
    assert len(errors(blueprint, broken)) >= 2


# --- the same program everywhere ---------------------------------------------------------


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: shlex.split(command) for name, command in (line.split(":", 1) for line in lines if line)}


def dockerfile() -> str:
    """The Dockerfile's instructions, without comments."""
    lines = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def test_every_manifest_runs_the_same_two_entry_points() -> None:
    assert procfile() == {"web": WEB, "worker": WORKER}
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile(), re.MULTILINE)
    assert cmd is not None and json.loads(cmd.group(1)) == WEB
    assert "ENTRYPOINT" not in dockerfile()  # `docker run IMAGE python -m workers` must just work
    services = compose()["services"]
    assert services["web"]["command"] == WEB and services["worker"]["command"] == WORKER

    def command(name: str) -> list[str]:
        return k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"][0]["command"]

    assert command("copilot-gateway-web") == WEB
    assert command("copilot-gateway-worker") == WORKER
    commands = {
        s["type"]: shlex.split(s["startCommand"]) for s in render()["services"] if "startCommand" in s
    }
    assert commands == {"web": WEB, "worker": WORKER}
    app = load_json(ROOT / "app.json")
    assert set(app["formation"]) == set(procfile())  # Heroku runs the Procfile's types
    assert app["env"]["API_KEYS"].get("required", True) is True
    assert app["env"]["SECRET_KEY"]["generator"] == "secret"


def test_the_image_is_small_non_root_and_has_what_the_entry_points_import() -> None:
    text = dockerfile()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert "requirements-dev" not in text and "pip install --require-hashes -r requirements.lock" in text
    user = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    for needed in ("wsgi.py", "service", "workers", "deploy/gunicorn.conf.py"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", text, re.MULTILINE), needed
    uid = int(user[-1])
    for name in ("copilot-gateway-web", "copilot-gateway-worker"):
        pod = k8s_object("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid


# --- probes, drains, secrets, persistence ------------------------------------------------


def test_web_probes_use_liveness_and_readiness_routes_that_need_no_key() -> None:
    container = k8s_object("Deployment", "copilot-gateway-web")["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz", "/metrics"} <= set(OPEN_PATHS)
    hpa = k8s_object("HorizontalPodAutoscaler", "copilot-gateway-web")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "copilot-gateway-web"


def seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return int(match.group(1))


def test_grace_periods_cover_the_drains() -> None:
    drain = inspect.signature(GeventWorker.__init__).parameters["shutdown_grace"].default
    config = (ROOT / "deploy" / "gunicorn.conf.py").read_text()
    setting = re.search(r"^graceful_timeout = (\d+)$", config, re.M)
    assert setting is not None
    graceful = int(setting[1])
    worker_pod = k8s_object("Deployment", "copilot-gateway-worker")["spec"]["template"]["spec"]
    web_pod = k8s_object("Deployment", "copilot-gateway-web")["spec"]["template"]["spec"]
    assert worker_pod["terminationGracePeriodSeconds"] >= drain + 5
    assert web_pod["terminationGracePeriodSeconds"] >= graceful + 5
    services = compose()["services"]
    assert seconds(services["worker"]["stop_grace_period"]) >= drain + 5
    assert seconds(services["web"]["stop_grace_period"]) >= graceful + 5
    render_worker = next(s for s in render()["services"] if s["type"] == "worker")
    assert render_worker["maxShutdownDelaySeconds"] >= drain + 5
    pdb = k8s_object("PodDisruptionBudget", "copilot-gateway-worker")
    assert pdb["spec"]["selector"] == k8s_object("Deployment", "copilot-gateway-worker")["spec"]["selector"]


def test_secrets_live_in_the_secret_and_settings_parse() -> None:
    secret = k8s_object("Secret", "copilot-gateway")["stringData"]
    assert {"API_KEYS", "SECRET_KEY", "ADMIN_KEY", "UPSTREAM_COOKIES"} <= set(secret)
    config = k8s_object("ConfigMap", "copilot-gateway")["data"]
    assert not {"API_KEYS", "SECRET_KEY", "ADMIN_KEY", "UPSTREAM_COOKIES"} & set(config)
    # Shipped empty: applied unedited, the pods refuse to start, naming what is missing.
    assert not (secret["API_KEYS"] or secret["SECRET_KEY"] or secret["ADMIN_KEY"])
    with pytest.raises(SettingsError, match="REQUIRE_AUTH is set but neither API_KEYS nor ADMIN_KEY"):
        load_settings({**config, **secret})
    filled = {**secret, "API_KEYS": "sk-" + "a1" * 12, "SECRET_KEY": "b2" * 16, "ADMIN_KEY": "c3" * 12}
    settings = load_settings({**config, **filled})  # every other value is one the gateway accepts
    assert settings.log_format == "json" and settings.worker_metrics_port == 9100
    assert settings.auth_enabled  # keyed: the web tier listens beyond loopback
    for name in ("copilot-gateway-web", "copilot-gateway-worker"):
        sources = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "copilot-gateway"}} in sources


def test_compose_scales_workers_and_persists_redis() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=3 works
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])
    statefulset = k8s_object("StatefulSet", "copilot-gateway-redis")
    assert "--appendonly" in statefulset["spec"]["template"]["spec"]["containers"][0]["command"]


@pytest.mark.parametrize("service", ["web", "worker"])
def test_compose_points_both_tiers_at_its_redis_and_requires_keys(service: str) -> None:
    environment = compose()["services"][service]["environment"]
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    # `${VAR:?message}`: compose refuses to start without them, rather than run unreachable.
    assert environment["API_KEYS"].startswith("${API_KEYS:?")
    assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert "redis" in compose()["services"][service]["depends_on"]


def _flag_value(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def test_every_shipped_redis_has_a_memory_limit_and_the_chosen_eviction_policy() -> None:
    from service.runtime.embedded_redis import EVICTION_POLICY

    compose_command = compose()["services"]["redis"]["command"]
    statefulset = k8s_object("StatefulSet", "copilot-gateway-redis")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    for command in (compose_command, container["command"]):
        assert _flag_value(command, "--maxmemory"), command
        assert _flag_value(command, "--maxmemory-policy") == EVICTION_POLICY
    limit_mi = int(container["resources"]["limits"]["memory"].removesuffix("Mi"))
    maxmemory = _flag_value(container["command"], "--maxmemory")
    assert maxmemory is not None and int(maxmemory.removesuffix("mb")) < limit_mi * 0.7
    keyvalue = next(s for s in render()["services"] if s["type"] == "keyvalue")
    assert keyvalue["maxmemoryPolicy"] == EVICTION_POLICY  # Render's plan sets the size
