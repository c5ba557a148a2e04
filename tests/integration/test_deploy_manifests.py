"""The deployment files agree with the code: Dockerfile, docker-compose.yml, deploy/.

Nothing is built or started here (no Docker engine or cluster needed). The checks that matter:
every MERIDIAN_* variable a container gets is one its service's settings classes read (an unknown
one stops the service at start-up) and its value passes their validation; every command runs an
existing `meridian_<service>` module; every workload has resources, probes on the health
endpoints of docs/observability.md and a non-root, read-only security context; secrets come only
from Secret references; every rendered object and secret template is valid against the
Kubernetes OpenAPI schema (kubernetes-validate --strict, offline) and docker-compose.yml against
the compose specification (check-jsonschema); the Dockerfile copies paths that exist, every
workspace member, and pins the same uv as the Makefile. Kubernetes checks run on the three
overlays: dev (the CSV replay Job), live (the live-ingest StatefulSet from components/ingest-live,
without the Job) and bots (dev plus the bots host from components/bots, whose risk gate takes
the bots' intents). The bots host is `python -m meridian_signals.bots` (service "signals.bots"
here: its module), reporting as service "bots"; the gate takes intents exactly where it runs.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from meridian_cli.settings import SETTINGS_CLASSES
from meridian_common import config
from meridian_control.settings import ControlSettings
from meridian_ingest.sharding import owned_symbols
from meridian_risk.settings import RiskSettings
from meridian_signals.bots import spec as bots_spec
from meridian_signals.bots.handler import BotsHandler

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
DEV = K8S / "overlays" / "dev"
LIVE = K8S / "overlays" / "live"
BOTS_OVERLAY = K8S / "overlays" / "bots"
LIVE_COMPONENT = K8S / "components" / "ingest-live"
BOTS_COMPONENT = K8S / "components" / "bots"
OVERLAYS = {"dev": DEV, "live": LIVE, "bots": BOTS_OVERLAY}
BOTS_EXAMPLE = REPO / "deploy" / "bots" / "bots.example.toml"
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SERVICES = ("ingest", "features", "signals", "risk", "execution", "ledger")
CONSUMERS = SERVICES[1:]
CONTROL = "control"
# The bots host: `python -m meridian_signals.bots` (its settings prefix MERIDIAN_BOTS_), whose
# series carry service="bots" (its handler's name) like the scrape target's label.
BOTS = "signals.bots"
SETTINGS_NAMES = {BOTS: "bots"}
SERVICE_LABELS = {BOTS: BotsHandler.name}
# features and signals rebuild their state on every partition assignment, so they scale out
# (HPA, RollingUpdate); risk, execution and the ledger are one consumer each (Recreate).
SCALED = ("features", "signals")
SINGLE = ("risk", "execution", "ledger")
METRICS_PORT = 9100
SECRET_PLACEHOLDER = "postgresql://user:secret@db.example:5432/meridian"
TOKEN_PLACEHOLDER = "placeholder-token-for-the-checks-0123456789"
# What the secret placeholder is for each variable that reads a Secret: its value must load.
SECRET_VALUES = {"MERIDIAN_DATABASE_URL": SECRET_PLACEHOLDER,
                 "MERIDIAN_CONTROL_TOKEN": TOKEN_PLACEHOLDER,
                 "MERIDIAN_CONTROL_READ_TOKEN": TOKEN_PLACEHOLDER[::-1]}
KUBERNETES_VERSION = "1.30.0"  # one of the schema sets kubernetes-validate ships
VENV_BIN = Path(sys.executable).parent


# --- the code's settings ------------------------------------------------------------------------

def _prefix(cls: type[BaseSettings]) -> str:
    return str(cls.model_config["env_prefix"]).upper()


def _names(cls: type[BaseSettings]) -> set[str]:
    return {_prefix(cls) + field.upper() for field in cls.model_fields}


def _service_class(service: str) -> type[BaseSettings]:
    """The service's own settings class (the CLI's pipeline classes and the control plane's)."""
    by_prefix = {_prefix(cls): cls for cls in (*SETTINGS_CLASSES, ControlSettings)}
    return by_prefix[f"MERIDIAN_{SETTINGS_NAMES.get(service, service).upper()}_"]


def valid_names(service: str) -> set[str]:
    """What `python -m meridian_<service>` reads: the common settings and its own class."""
    return _names(config.CommonSettings) | _names(_service_class(service))


def check_env(service: str, env: dict[str, str], where: str) -> None:
    """Names are known to the service, and the values load as the service would load them."""
    unknown = sorted(k for k in env if k.upper().startswith("MERIDIAN_")
                     and k.upper() not in valid_names(service))
    if unknown:
        pytest.fail(f"{where}: {service} does not read {unknown}")
    for cls in (config.CommonSettings, _service_class(service)):
        try:
            config.load(cls, environ=env)
        except config.ConfigError as exc:
            pytest.fail(f"{where}: {exc}")


def test_valid_names_come_from_the_code() -> None:
    """Guard for the check itself: it knows real variables and refuses a typo."""
    assert "MERIDIAN_KAFKA_BOOTSTRAP" in valid_names("features")
    assert "MERIDIAN_LEDGER_ACCOUNT" in valid_names("ledger")
    assert "MERIDIAN_LEDGER_ACCOUNT" not in valid_names("risk")
    assert "MERIDIAN_CONTROL_TOKEN" in valid_names("control")
    assert "MERIDIAN_BOTS_CONFIG" in valid_names(BOTS)
    assert "MERIDIAN_SIGNALS_MODEL_DIR" not in valid_names(BOTS)
    with pytest.raises(pytest.fail.Exception, match="MERIDIAN_KAFKA_BOOTSTRAPS"):
        check_env("features", {"MERIDIAN_KAFKA_BOOTSTRAPS": "kafka:9092"}, "guard")
    with pytest.raises(pytest.fail.Exception, match="MERIDIAN_LOG_LEVEL"):
        check_env("features", {"MERIDIAN_LOG_LEVEL": "verbose"}, "guard")


def module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None and \
        importlib.util.find_spec(f"{module}.__main__") is not None


def check_command(command: list[str], service: str, where: str) -> None:
    assert command == ["python", "-m", f"meridian_{service}"], f"{where}: command {command}"
    assert module_exists(f"meridian_{service}"), f"{where}: no module meridian_{service}"


# --- Kubernetes ---------------------------------------------------------------------------------

def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """The part of a strategic merge patch used here: maps merge, lists of named items (containers,
    env) merge by name, anything else is replaced."""
    for key, value in patch.items():
        old = target.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merge(old, value)
        elif isinstance(value, list) and isinstance(old, list) and \
                all(isinstance(item, dict) and "name" in item for item in old + value):
            named = {item["name"]: item for item in old}
            for item in value:
                if item["name"] in named:
                    merge(named[item["name"]], item)
                else:
                    old.append(item)
        else:
            target[key] = value


def apply_patch(docs: list[dict[str, Any]], patch: dict[str, Any], where: Path) -> None:
    matches = [d for d in docs if d["kind"] == patch["kind"]
               and d["metadata"]["name"] == patch["metadata"]["name"]]
    assert len(matches) == 1, f"{where} matches {len(matches)} objects"
    if patch.get("$patch") == "delete":
        docs.remove(matches[0])
    else:
        merge(matches[0], patch)


def render(kdir: Path, including: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A minimal `kubectl kustomize`: resources (files and bases), components, patches from files
    (strategic merge, `$patch: delete`), namespace and image tags. A component works on the
    objects of the kustomization that includes it (`including`): its resources join them and its
    patches apply to all of them, as kustomize does (components/bots patches the base's risk)."""
    kust = load_docs(kdir / "kustomization.yaml")[0]
    docs: list[dict[str, Any]] = [] if including is None else including
    for entry in kust.get("resources", []):
        path = (kdir / entry).resolve()
        docs += render(path) if path.is_dir() else load_docs(path)
    for entry in kust.get("components", []):
        docs = render((kdir / entry).resolve(), docs)
    for entry in kust.get("patches", []):
        assert set(entry) == {"path"}, f"{kdir}: only patches from files are understood here"
        for patch in load_docs(kdir / entry["path"]):
            apply_patch(docs, patch, kdir / entry["path"])
    for doc in docs:
        if "namespace" in kust and doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = kust["namespace"]
    for image in kust.get("images", []):
        for _doc, container in containers(docs):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                name = image.get("newName", name)
                tag = image.get("newTag", tag)
                container["image"] = f"{name}:{tag}" if tag else name
    return docs


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield doc, container


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


SECRET_TEMPLATES = sorted(BASE.glob("*.template.yaml"))


def secret_template(name: str = "meridian-database") -> dict[str, Any]:
    """The template (base/*.template.yaml, never applied) of the Secret called `name`."""
    templates = {doc["metadata"]["name"]: doc for path in SECRET_TEMPLATES
                 for doc in load_docs(path)}
    return templates[name]


def secret_keys() -> dict[str, set[str]]:
    """Every templated Secret and its keys: what a secretKeyRef may point at."""
    return {doc["metadata"]["name"]: set(doc["stringData"]) for path in SECRET_TEMPLATES
            for doc in load_docs(path)}


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container would get; secret values are a placeholder."""
    maps = {name: doc.get("data", {}) for name, doc in by_kind(docs, "ConfigMap").items()}
    secrets = secret_keys()
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in maps, f"{container['name']}: no ConfigMap {name}"
            env.update({str(k): str(v) for k, v in maps[name].items()})
        else:
            name = source["secretRef"]["name"]
            assert name in secrets, f"{container['name']}: no Secret {name}"
            env.update({k: SECRET_PLACEHOLDER for k in secrets[name]})
    for var in container.get("env", []):
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            key_ref = ref["secretKeyRef"]
            assert key_ref["key"] in secrets.get(key_ref["name"], set()), \
                f"{container['name']}: {var['name']} refers to a Secret key the template lacks"
            env[var["name"]] = SECRET_VALUES.get(var["name"], SECRET_PLACEHOLDER)
        elif "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            env[var["name"]] = str(maps[key_ref["name"]][key_ref["key"]])
        else:
            env[var["name"]] = str(var.get("value", ""))
    return env


def service_of(container: dict[str, Any]) -> str:
    command = container["command"]
    assert command[:2] == ["python", "-m"], command
    return command[2].removeprefix("meridian_")


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Each overlay in turn: every check taking this fixture runs on dev, live and bots."""
    return render(OVERLAYS[request.param])


def overlay_of(docs: list[dict[str, Any]]) -> str:
    if by_kind(docs, "StatefulSet"):
        return "live"
    return "bots" if any(service_of(c) == BOTS for _d, c in containers(docs)) else "dev"


def live_ingest(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The live overlay's StatefulSet and its container."""
    (sts,) = by_kind(docs, "StatefulSet").values()
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return sts, container


def test_every_k8s_yaml_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert files
    for path in files:
        for doc in load_docs(path):
            assert {"apiVersion", "kind"} <= doc.keys(), path
            if doc["kind"] not in ("Kustomization", "Component"):
                assert doc["metadata"]["name"], path


def test_every_kustomization_file_is_used() -> None:
    """Nothing in base/, components/ or overlays/ is left out of the rendering by mistake."""
    for kust_path in K8S.rglob("kustomization.yaml"):
        kust = load_docs(kust_path)[0]
        listed = {e for e in kust.get("resources", []) if not (kust_path.parent / e).is_dir()}
        listed |= {e["path"] for e in kust.get("patches", [])}
        present = {p.name for p in kust_path.parent.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed <= present, f"{kust_path}: listed but missing: {listed - present}"
        assert present - listed <= {p.name for p in SECRET_TEMPLATES}, \
            f"{kust_path}: not listed: {present - listed}"
    for overlay, component in ((LIVE, LIVE_COMPONENT), (BOTS_OVERLAY, BOTS_COMPONENT)):
        kust = load_docs(overlay / "kustomization.yaml")[0]
        assert (overlay / kust["components"][0]).resolve() == component
        assert load_docs(component / "kustomization.yaml")[0]["kind"] == "Component"


def test_base_lists_every_manifest_except_the_secret_templates() -> None:
    """Applying the base never overwrites a real Secret with a template's placeholder."""
    listed = set(load_docs(BASE / "kustomization.yaml")[0]["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed <= present, f"listed but missing: {listed - present}"
    assert present - listed == {p.name for p in SECRET_TEMPLATES} == \
        {"secret-database.template.yaml", "secret-control.template.yaml"}
    for path in SECRET_TEMPLATES:
        for doc in load_docs(path):
            assert doc["kind"] == "Secret", path
            assert all("REPLACE-ME" in str(v) for v in doc["stringData"].values()), path


def test_one_deployment_per_consumer_and_one_ingest(rendered: list[dict[str, Any]]) -> None:
    """dev and bots: the replay Job; live: the live StatefulSet and no Job (never both on one
    topic); bots: the bots host too."""
    def services(kind: str) -> set[str]:
        return {service_of(c) for d, c in containers(rendered) if d["kind"] == kind}

    bots = {BOTS} if overlay_of(rendered) == "bots" else set()
    assert services("Deployment") == {*CONSUMERS, CONTROL, *bots}
    if overlay_of(rendered) != "live":
        assert services("Job") == {"ingest"}
        assert services("StatefulSet") == set()
    else:
        assert services("Job") == set()
        assert services("StatefulSet") == {"ingest"}
    assert all(d["metadata"]["namespace"] == "meridian"
               for d in rendered if d["kind"] != "Namespace")


def served_port(doc: dict[str, Any], container: dict[str, Any]) -> tuple[str, int]:
    """(port name, number) of the port a workload's Prometheus metrics and probes use: the
    metrics port for the pipeline, the API port for the control plane."""
    name = "http" if service_of(container) == CONTROL else "metrics"
    (port,) = [p for p in container["ports"] if p["name"] == name]
    return name, int(port["containerPort"])


def expected_probes(doc: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """docs/observability.md: readiness and start-up on /readyz, liveness on /healthz (the
    control plane: /health); a Job (the replay) has none."""
    if doc["kind"] == "Job":
        return {}
    if service_of(container) == CONTROL:
        return dict.fromkeys(("startupProbe", "readinessProbe", "livenessProbe"), "/health")
    return {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}


def test_workloads_have_resources_probes_and_security(rendered: list[dict[str, Any]]) -> None:
    for doc, container in containers(rendered):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][part].keys(), where
        pod = pod_spec(doc)
        assert pod is not None
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == dockerfile_uid(), where
        assert pod["automountServiceAccountToken"] is False, where
        sec = container["securityContext"]
        assert sec["allowPrivilegeEscalation"] is False, where
        assert sec["readOnlyRootFilesystem"] is True, where
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), where
        port_name, port = served_port(doc, container)
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", where
        assert annotations["prometheus.io/port"] == str(port), where
        assert annotations["prometheus.io/path"] == "/metrics", where
        if service_of(container) != CONTROL:
            assert port == METRICS_PORT == int(container_env(rendered, container)
                                               ["MERIDIAN_METRICS_PORT"]), where
        probes = expected_probes(doc, container)
        assert {k for k in container if k.endswith("Probe")} == probes.keys(), where
        for probe, path in probes.items():
            get = container[probe]["httpGet"]
            assert (get["path"], get["port"]) == (path, port_name), f"{where} {probe}"


def test_control_plane_listens_where_its_probes_and_service_point(
        rendered: list[dict[str, Any]]) -> None:
    (doc, container), = [(d, c) for d, c in containers(rendered) if service_of(c) == CONTROL]
    settings = config.load(ControlSettings, environ=container_env(rendered, container))
    _, port = served_port(doc, container)
    assert settings.port == port
    assert settings.host == "0.0.0.0"  # reachable from the kubelet and the Service
    service = by_kind(rendered, "Service")[doc["metadata"]["name"]]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(port, "http")]


def test_secrets_come_only_from_secret_refs(rendered: list[dict[str, Any]]) -> None:
    """A token, password or database URL is never a literal in a manifest; each reference names
    a templated Secret key; the control plane cannot start without its write token."""
    sensitive = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|DATABASE_URL")
    keys = secret_keys()
    for doc, container in containers(rendered):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for var in container.get("env", []):
            if sensitive.search(var["name"]):
                assert "value" not in var, f"{where}: {var['name']} is a literal"
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["key"] in keys[ref["name"]], f"{where}: {var['name']}"
        for data in by_kind(rendered, "ConfigMap").values():
            assert not any(sensitive.search(k) for k in data.get("data", {})), where
    control = next(c for _d, c in containers(rendered) if service_of(c) == CONTROL)
    refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in control["env"]
            if "valueFrom" in v}
    assert (refs["MERIDIAN_CONTROL_TOKEN"]["name"], refs["MERIDIAN_CONTROL_TOKEN"]["key"]) == \
        ("meridian-control", "token")
    assert not refs["MERIDIAN_CONTROL_TOKEN"].get("optional", False)
    assert by_kind(rendered, "Secret") == {}  # the templates are never rendered


def test_workload_commands_run_existing_modules(rendered: list[dict[str, Any]]) -> None:
    for doc, container in containers(rendered):
        service = service_of(container)
        assert service in (*SERVICES, CONTROL, BOTS)
        check_command(container["command"], service, doc["metadata"]["name"])
        assert container["image"] == "meridian:dev"


def test_k8s_env_is_known_to_each_service_and_valid(rendered: list[dict[str, Any]]) -> None:
    for doc, container in containers(rendered):
        env = container_env(rendered, container)
        assert env["MERIDIAN_METRICS_PORT"] == str(METRICS_PORT)
        check_env(service_of(container), env, f"{doc['kind']}/{doc['metadata']['name']}")
    ledger = next(c for d, c in containers(rendered) if service_of(c) == "ledger")
    assert "MERIDIAN_DATABASE_URL" in container_env(rendered, ledger)
    for _doc, container in containers(rendered):
        env = container_env(rendered, container)
        if env.get("MERIDIAN_INGEST_MODE") == "live":
            assert "MERIDIAN_DATABASE_URL" in env
        if service_of(container) == CONTROL:
            assert "MERIDIAN_CONTROL_TOKEN" in env


def test_configmap_holds_only_common_settings(rendered: list[dict[str, Any]]) -> None:
    data = by_kind(rendered, "ConfigMap")["meridian-common"]["data"]
    assert set(data) <= _names(config.CommonSettings)
    config.load(config.CommonSettings, environ=data)


def test_each_deployment_has_a_pdb_and_a_metrics_service(rendered: list[dict[str, Any]]) -> None:
    pdbs = by_kind(rendered, "PodDisruptionBudget")
    services = by_kind(rendered, "Service")
    autoscaled = {h["spec"]["scaleTargetRef"]["name"]
                  for h in by_kind(rendered, "HorizontalPodAutoscaler").values()}
    for name, deployment in by_kind(rendered, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        # an autoscaled Deployment leaves the count to its HPA (an apply would reset it)
        assert deployment["spec"].get("replicas") == (None if name in autoscaled else 1), name
        assert pdbs[name]["spec"]["maxUnavailable"] == 1, name
        assert pdbs[name]["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        assert services[name]["spec"]["selector"].items() <= labels.items(), name
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        _, port = served_port(deployment, container)
        assert [p["port"] for p in services[name]["spec"]["ports"]] == [port], name


def deployment_of(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    (doc,) = [d for d, c in containers(docs) if d["kind"] == "Deployment"
              and service_of(c) == service]
    return doc


def test_features_and_signals_autoscale_up_to_the_partition_count(
        rendered: list[dict[str, Any]]) -> None:
    """More consumers than partitions idle, so maxReplicas is MERIDIAN_PARTITIONS; the target is
    a Deployment of this rendering, and CPU utilisation needs a CPU request to be defined."""
    partitions = config.load(
        config.CommonSettings,
        environ=by_kind(rendered, "ConfigMap")["meridian-common"]["data"]).partitions
    hpas = by_kind(rendered, "HorizontalPodAutoscaler")
    deployments = by_kind(rendered, "Deployment")
    targets = {}
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2", name
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment"), name
        assert ref["name"] in deployments, f"{name}: no Deployment {ref['name']}"
        (container,) = deployments[ref["name"]]["spec"]["template"]["spec"]["containers"]
        targets[service_of(container)] = hpa
        assert hpa["spec"]["minReplicas"] == 1, name
        assert hpa["spec"]["maxReplicas"] == partitions, name
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "Resource", name
        assert metric["resource"]["name"] == "cpu", name
        assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100, name
        assert container["resources"]["requests"]["cpu"], name
    assert set(targets) == set(SCALED)


def test_rollout_strategies_keep_one_consumer(rendered: list[dict[str, Any]]) -> None:
    """features and signals roll (a new pod joins, the rebalance rebuilds state, the old one
    leaves only after the new one is Ready); the single consumers stop before they restart."""
    for service in SCALED:
        strategy = deployment_of(rendered, service)["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate", service
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, service
        assert strategy["rollingUpdate"]["maxSurge"] >= 1, service
    single = (*SINGLE, BOTS) if overlay_of(rendered) == "bots" else SINGLE
    for service in single:
        deployment = deployment_of(rendered, service)
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}, service
        assert deployment["spec"]["replicas"] == 1, service
    control = deployment_of(rendered, CONTROL)["spec"]["strategy"]
    assert control["type"] == "RollingUpdate"
    assert control["rollingUpdate"]["maxUnavailable"] == 0


def test_each_service_rolls_independently(rendered: list[dict[str, Any]]) -> None:
    """One workload per service, each selecting only its own pods: changing one never restarts
    or adopts another's."""
    workloads = [d for d in rendered if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    for doc in workloads:
        if doc["kind"] == "Job":
            continue
        selector = doc["spec"]["selector"]["matchLabels"]
        owners = [o["metadata"]["name"] for o in workloads
                  if selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()]
        assert owners == [doc["metadata"]["name"]], owners


def test_job_mounts_the_data_where_ingest_reads_it() -> None:
    rendered = render(DEV)
    (job,) = by_kind(rendered, "Job").values()
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = container_env(rendered, container)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[env["MERIDIAN_INGEST_DATA_DIR"]]["readOnly"] is True
    claims = {v["persistentVolumeClaim"]["claimName"]
              for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert claims <= set(by_kind(rendered, "PersistentVolumeClaim"))


# --- live ingest (overlays/live) -----------------------------------------------------------------

@pytest.fixture(scope="module")
def live() -> list[dict[str, Any]]:
    return render(LIVE)


def test_live_overlay_has_no_replay_job(live: list[dict[str, Any]]) -> None:
    assert by_kind(live, "Job") == {}
    assert "meridian-ingest-replay" in by_kind(render(DEV), "Job")  # the patch removed it
    for _doc, container in containers(live):
        if service_of(container) == "ingest":
            env = container_env(live, container)
            assert config.load(_service_class("ingest"), environ=env).mode == "live"


def test_live_statefulset_replicas_equal_meridian_ingest_replicas(
        live: list[dict[str, Any]]) -> None:
    sts, container = live_ingest(live)
    env = container_env(live, container)
    assert sts["spec"]["replicas"] == int(env["MERIDIAN_INGEST_REPLICAS"]) >= 1


def test_live_replica_index_comes_from_the_pod_name(live: list[dict[str, Any]]) -> None:
    """Not set anywhere: one pod template serves every ordinal, which the code reads from the
    HOSTNAME suffix. Each ordinal maps to an index; together they own every symbol once."""
    sts, container = live_ingest(live)
    names = {v["name"] for v in container.get("env", [])}
    env = container_env(live, container)
    assert "MERIDIAN_INGEST_REPLICA_INDEX" not in names
    assert "MERIDIAN_INGEST_REPLICA_INDEX" not in env
    settings = config.load(_service_class("ingest"), environ=env)
    name, replicas = sts["metadata"]["name"], sts["spec"]["replicas"]
    owned: list[str] = []
    for ordinal in range(replicas):
        assert settings.resolved_replica_index(f"{name}-{ordinal}") == ordinal
        owned += owned_symbols(settings.symbols, settings.replicas, ordinal)
    assert sorted(owned) == sorted(settings.symbols)
    with pytest.raises(ValueError):
        settings.resolved_replica_index(f"{name}-{replicas}")


def test_live_statefulset_rolls_in_order_with_pdb_and_headless_service(
        live: list[dict[str, Any]]) -> None:
    sts, container = live_ingest(live)
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    service = by_kind(live, "Service")[spec["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["port"] for p in service["spec"]["ports"]] == [METRICS_PORT]
    pdb = by_kind(live, "PodDisruptionBudget")[name]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # the database URL comes from the same Secret as the ledger's, and is required here
    (url,) = [v for v in container["env"] if v["name"] == "MERIDIAN_DATABASE_URL"]
    ref = url["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (secret_template()["metadata"]["name"], "url")
    assert not ref.get("optional", False)
    env = container_env(live, container)
    assert env["MERIDIAN_INGEST_MODE"] == "live"
    assert {"MERIDIAN_EXCHANGE", "MERIDIAN_INGEST_MARKET_TYPE"} <= env.keys()
    # its pods are its own: no other workload's selector or template overlaps them
    for other in by_kind(live, "Deployment").values():
        assert not other["spec"]["selector"]["matchLabels"].items() <= labels.items()


# --- the bots host (overlays/bots, components/bots) ---------------------------------------------

def risk_settings(docs: list[dict[str, Any]]) -> RiskSettings:
    (container,) = deployment_of(docs, "risk")["spec"]["template"]["spec"]["containers"]
    return config.load(RiskSettings, environ=container_env(docs, container))


def test_the_gate_takes_intents_exactly_where_the_bots_host_runs(
        rendered: list[dict[str, Any]]) -> None:
    """A gate taking intents waits for the bots host's stream on every symbol (without the host
    nothing is decided); a host whose gate does not take intents has its orders dead-lettered.
    Next to the bots the gate requires no stop (they place none) and still takes signals."""
    bots = [c for _d, c in containers(rendered) if service_of(c) == BOTS]
    settings = risk_settings(rendered)
    assert settings.intents == bool(bots) == (overlay_of(rendered) == "bots")
    if bots:
        assert settings.require_stop_loss is False
        assert settings.signals is True


def test_bots_host_reads_the_example_bots_file_from_its_configmap() -> None:
    """MERIDIAN_BOTS_CONFIG names the ConfigMap's key where the pod mounts it (read-only), and
    the ConfigMap holds deploy/bots/bots.example.toml verbatim (the file compose mounts), which
    the host's own parser accepts."""
    docs = render(BOTS_OVERLAY)
    deployment = deployment_of(docs, BOTS)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    path = Path(container_env(docs, container)["MERIDIAN_BOTS_CONFIG"])
    mount = {m["mountPath"]: m for m in container["volumeMounts"]}[str(path.parent)]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    configmap = by_kind(docs, "ConfigMap")[volumes[mount["name"]]["configMap"]["name"]]
    text = configmap["data"][path.name]
    assert text == BOTS_EXAMPLE.read_text()
    assert [s.kind for s in bots_spec.parse(tomllib.loads(text))] == ["grid", "dca"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_renders_the_same_objects(rendered: list[dict[str, Any]]) -> None:
    overlay = OVERLAYS[overlay_of(rendered)]
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    theirs = [doc for doc in yaml.safe_load_all(out) if doc]
    key = lambda d: (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))  # noqa: E731
    assert sorted(map(key, theirs)) == sorted(map(key, rendered))
    assert sorted(c["image"] for _, c in containers(theirs)) == \
        sorted(c["image"] for _, c in containers(rendered))
    for doc in theirs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "meridian"
    # the environment (patched in the live overlay) is the same as this file's rendering
    def envs(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, str]]:
        return {(d["kind"], d["metadata"]["name"], c["name"]): container_env(docs, c)
                for d, c in containers(docs)}

    assert envs(theirs) == envs(rendered)
    if overlay == LIVE:
        assert by_kind(theirs, "Job") == {}
        sts, _ = live_ingest(theirs)
        assert sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == \
            "meridian"


# --- offline schema validation --------------------------------------------------------------------

def kubernetes_validate(docs: list[dict[str, Any]], tmp_path: Path,
                        name: str) -> subprocess.CompletedProcess[str]:
    """`kubernetes-validate --strict` (unknown fields fail, not only wrong types) of `docs`
    against the OpenAPI schema of KUBERNETES_VERSION it ships: no cluster, no network."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return subprocess.run([str(VENV_BIN / "kubernetes-validate"), "--strict",
                           "--kubernetes-version", KUBERNETES_VERSION, str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def assert_every_object_passes(docs: list[dict[str, Any]], tmp_path: Path, name: str) -> None:
    """Zero failures, and a "passed" line for every object: a kind the tool does not know (or
    skips) is not silently counted as valid."""
    result = kubernetes_validate(docs, tmp_path, name)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "ERROR" not in out, out
    assert "WARN" not in out, out
    for doc in docs:
        resource = f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        assert f"passed for resource {resource} " in out, f"{resource} not validated:\n{out}"


def test_every_rendered_object_is_valid_kubernetes(rendered: list[dict[str, Any]],
                                                    tmp_path: Path) -> None:
    assert_every_object_passes(rendered, tmp_path, overlay_of(rendered))


def test_secret_templates_are_valid_kubernetes(tmp_path: Path) -> None:
    docs = [doc for path in SECRET_TEMPLATES for doc in load_docs(path)]
    assert len(docs) == 2
    assert_every_object_passes(docs, tmp_path, "secret-templates")


def test_the_validator_refuses_an_invalid_object(tmp_path: Path) -> None:
    """Guard for the check itself: a misspelt field and a wrong type in real manifests fail."""
    docs = render(DEV)
    deployment = by_kind(docs, "Deployment")["meridian-risk"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["periodSecond"] = 20  # unknown field: only --strict sees it
    result = kubernetes_validate([deployment], tmp_path, "unknown-field")
    assert result.returncode != 0
    assert "periodSecond" in result.stdout + result.stderr
    hpa = by_kind(render(DEV), "HorizontalPodAutoscaler")["meridian-features"]
    hpa["spec"]["maxReplicas"] = "three"
    result = kubernetes_validate([hpa], tmp_path, "wrong-type")
    assert result.returncode != 0
    assert "maxReplicas" in result.stdout + result.stderr


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with the compose specification it vendors (offline)."""
    return subprocess.run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema",
                           "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    result = check_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # guard: the same file with a misspelt healthcheck key fails
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["features"]["healthcheck"] = {"test": ["CMD", "true"], "intervall": "5s"}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = check_compose_schema(path)
    assert result.returncode != 0
    assert "intervall" in result.stdout + result.stderr


# --- docker compose -----------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?-)([^}]*)|(:?\?)([^}]*))?\}")
_REQUIRED = re.compile(r"^\$\{(\w+):\?[^}]+\}$")
# What the checks put in for a variable compose requires (${VAR:?...}): it has no default.
REQUIRED_VALUES = {"CONTROL_TOKEN": TOKEN_PLACEHOLDER}


def interpolate(value: object) -> str:
    """Compose's ${VAR:-default} with nothing set in the environment; ${VAR:?error} (no
    default: compose refuses to run without it) takes the value the checks set for VAR."""
    def one(m: re.Match[str]) -> str:
        if m.group(4):
            return REQUIRED_VALUES[m.group(1)]
        return m.group(3) or ""

    return _INTERPOLATION.sub(one, str(value))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def meridian_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items()
            if svc.get("image", "").startswith("meridian:")}


def compose_service(svc: dict[str, Any]) -> str:
    """The code service a compose service runs (ingest-live runs ingest)."""
    return str(svc["command"][2]).removeprefix("meridian_")


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(v) for k, v in env.items()}


def compose_port(svc: dict[str, Any]) -> int:
    """Where a Meridian container serves /metrics: 9100, or the control plane's API port."""
    env = compose_env(svc)
    if compose_service(svc) == CONTROL:
        return int(config.load(ControlSettings, environ=env).port)
    return int(env["MERIDIAN_METRICS_PORT"])


def long_running(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items()
            if svc.get("restart", "no") != "no"}


def test_compose_has_one_container_per_service(compose: dict[str, Any]) -> None:
    assert set(meridian_services(compose)) == {*SERVICES, "ingest-live", CONTROL, "bots"}
    assert {compose_service(s) for s in meridian_services(compose).values()} == \
        {*SERVICES, CONTROL, BOTS}
    assert {"kafka", "timescaledb", "prometheus", "grafana"} <= set(compose["services"])


def test_compose_commands_run_existing_modules(compose: dict[str, Any]) -> None:
    for name, svc in meridian_services(compose).items():
        check_command(svc["command"], compose_service(svc), f"compose {name}")
        assert svc["build"]["dockerfile"] == "Dockerfile"


def test_compose_env_is_known_to_each_service_and_valid(compose: dict[str, Any]) -> None:
    for name, svc in meridian_services(compose).items():
        env = compose_env(svc)
        if compose_service(svc) != CONTROL:
            assert env["MERIDIAN_METRICS_PORT"] == str(METRICS_PORT), name
        assert env["MERIDIAN_KAFKA_BOOTSTRAP"].split(":")[0] == "kafka", name
        check_env(compose_service(svc), env, f"compose {name}")
    assert "MERIDIAN_DATABASE_URL" in compose_env(compose["services"]["ledger"])
    assert "MERIDIAN_DATABASE_URL" in compose_env(compose["services"]["ingest-live"])


def test_compose_control_plane_has_no_default_token(compose: dict[str, Any]) -> None:
    """The token is required from the environment (${CONTROL_TOKEN:?...}), never written here;
    the API listens on every interface of its container, on the port compose publishes."""
    control = compose["services"][CONTROL]
    raw = control["environment"]["MERIDIAN_CONTROL_TOKEN"]
    match = _REQUIRED.match(raw)
    assert match is not None, f"MERIDIAN_CONTROL_TOKEN must be ${{VAR:?message}}, not {raw!r}"
    assert match.group(1) == "CONTROL_TOKEN"
    for name, svc in compose["services"].items():
        for var, value in (svc.get("environment") or {}).items():
            if re.search(r"TOKEN|SECRET|API_KEY", var):
                assert _REQUIRED.match(str(value)), f"{name}: {var} has a value or a default"
    settings = config.load(ControlSettings, environ=compose_env(control))
    assert settings.token.get_secret_value() == TOKEN_PLACEHOLDER
    assert settings.host == "0.0.0.0"  # reachable through the published port
    published = [str(p).rsplit(":", 1)[-1] for p in control["ports"]]
    assert published == [str(settings.port)]


def test_compose_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(long_running(compose)) == \
        {"kafka", "timescaledb", "prometheus", "grafana", *CONSUMERS, "ingest-live", CONTROL,
         "bots"}
    for name, svc in {**long_running(compose), **meridian_services(compose)}.items():
        assert svc["healthcheck"]["test"], name
    for name, svc in meridian_services(compose).items():
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name  # the image has no curl or wget
        path = "/health" if compose_service(svc) == CONTROL else "/readyz"
        assert f"http://127.0.0.1:{compose_port(svc)}{path}'" in test[3], name
    assert "http://127.0.0.1:9090/-/healthy" in services["prometheus"]["healthcheck"]["test"]
    assert "http://127.0.0.1:3000/api/health" in services["grafana"]["healthcheck"]["test"]


class _Health(BaseHTTPRequestHandler):
    """Answers every GET with the status in the server's `status` attribute."""

    def do_GET(self) -> None:
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.end_headers()
        self.wfile.write(b'{"status": "stalled"}')

    def log_message(self, format: str, *args: Any) -> None:
        return None


def run_healthcheck(test: list[str], compose_port: int, port: int) -> int:
    """The healthcheck's python command, pointed at `port` instead of the container's."""
    code = test[3].replace(f"127.0.0.1:{compose_port}/", f"127.0.0.1:{port}/")
    assert code != test[3]
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          timeout=30, check=False).returncode


def test_compose_python_healthchecks_fail_on_503_and_on_no_answer(
        compose: dict[str, Any]) -> None:
    """What the healthcheck command really does: exit 0 on a 200, non-zero on a 503 (a stalled
    loop) or when nothing listens."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        for name in ("features", CONTROL):
            svc = compose["services"][name]
            test = svc["healthcheck"]["test"]
            server.status = 200  # type: ignore[attr-defined]
            assert run_healthcheck(test, compose_port(svc), port) == 0, name
            server.status = 503  # type: ignore[attr-defined]
            assert run_healthcheck(test, compose_port(svc), port) != 0, name
    finally:
        server.shutdown()
        server.server_close()
    assert run_healthcheck(compose["services"]["features"]["healthcheck"]["test"],
                           METRICS_PORT, port) != 0  # closed: nothing listens


def test_compose_start_order(compose: dict[str, Any]) -> None:
    """depends_on always names a condition; a dependency with a healthcheck is waited for until
    healthy (the control plane only needs the database started: the kill switch must work while
    PostgreSQL is down); ingest starts once every consumer is healthy."""
    services = compose["services"]
    for name, svc in services.items():
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for dep, how in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            expected = "service_healthy" if "healthcheck" in services[dep] else "service_started"
            if (name, dep) == (CONTROL, "timescaledb"):
                expected = "service_started"
            assert how["condition"] == expected, f"{name} -> {dep}"
    for name, svc in meridian_services(compose).items():
        assert svc["depends_on"]["kafka"]["condition"] == "service_healthy", name
        if "MERIDIAN_DATABASE_URL" in compose_env(svc) and name != CONTROL:
            assert svc["depends_on"]["timescaledb"]["condition"] == "service_healthy", name
    for ingest in ("ingest", "ingest-live"):
        assert set(CONSUMERS) <= set(services[ingest]["depends_on"]), ingest
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert services["ingest"]["restart"] == "no"
    assert all(services[n]["restart"] != "no" for n in (*CONSUMERS, "ingest-live", CONTROL))


def test_compose_live_ingest_is_opt_in_and_off_the_replay_topics(compose: dict[str, Any]) -> None:
    """`docker compose up` runs the replay demo as before; `--profile live` adds live ingest,
    which by default publishes under another topic prefix than the replay."""
    services = meridian_services(compose)
    assert services["ingest-live"]["profiles"] == ["live"]
    assert all("profiles" not in svc for name, svc in services.items()
               if name not in ("ingest-live", "bots"))
    ingest = _service_class("ingest")
    replay_env = compose_env(services["ingest"])
    live_env = compose_env(services["ingest-live"])
    assert config.load(ingest, environ=replay_env).mode == "replay"
    live_settings = config.load(ingest, environ=live_env)
    assert live_settings.mode == "live"
    assert live_settings.replicas == 1
    assert live_settings.replica_index is None
    assert live_env["MERIDIAN_TOPIC_PREFIX"] != replay_env["MERIDIAN_TOPIC_PREFIX"]


def test_compose_bots_host_is_opt_in_and_the_gate_takes_intents_only_when_told(
        compose: dict[str, Any]) -> None:
    """`--profile bots` adds the bots host with the example bots file (mounted read-only); the
    gate's MERIDIAN_RISK_INTENTS and _REQUIRE_STOP_LOSS come from the shell or .env with the
    code's defaults, so a plain `docker compose up` never waits for a bots host that is not
    there, and the command at the top of the file switches both."""
    services = meridian_services(compose)
    bots = services["bots"]
    assert bots["profiles"] == ["bots"]
    assert compose_service(bots) == BOTS
    path = compose_env(bots)["MERIDIAN_BOTS_CONFIG"]
    mounts = {interpolate(v).split(":")[1]: interpolate(v).split(":") for v in bots["volumes"]}
    source, _, mode = mounts[path]
    assert (source, mode) == ("./deploy/bots/bots.example.toml", "ro")
    assert (REPO / source).resolve() == BOTS_EXAMPLE
    assert [s.kind for s in bots_spec.load(BOTS_EXAMPLE)] == ["grid", "dca"]
    risk = services["risk"]["environment"]
    assert risk["MERIDIAN_RISK_INTENTS"] == "${MERIDIAN_RISK_INTENTS:-false}"
    assert risk["MERIDIAN_RISK_REQUIRE_STOP_LOSS"] == "${MERIDIAN_RISK_REQUIRE_STOP_LOSS:-true}"
    env = compose_env(services["risk"])
    default = config.load(RiskSettings, environ=env)
    assert (default.intents, default.require_stop_loss) == (
        RiskSettings.model_fields["intents"].default,
        RiskSettings.model_fields["require_stop_loss"].default) == (False, True)
    told = config.load(RiskSettings, environ={
        **env, "MERIDIAN_RISK_INTENTS": "true", "MERIDIAN_RISK_REQUIRE_STOP_LOSS": "false"})
    assert (told.intents, told.require_stop_loss) == (True, False)
    header = COMPOSE.read_text().split("\nname:")[0]
    assert "MERIDIAN_RISK_INTENTS=true MERIDIAN_RISK_REQUIRE_STOP_LOSS=false" in header
    assert "docker compose --profile bots up" in header


def test_compose_runs_the_funding_arb_pair_when_told(compose: dict[str, Any]) -> None:
    """The command at the top of the file (BOTS_FILE=the pair's example, the replay's perpetual
    copy, the ledger's funding) configures a pipeline whose replay publishes both of the pair's
    legs and whose ledger books the funding: the checks `meridian backtest` makes."""
    services = meridian_services(compose)
    told = {"BOTS_FILE": "./deploy/bots/funding-arb.example.toml",
            "INGEST_REPLAY_PERPETUALS": "BTCUSDT", "LEDGER_FUNDING": "true"}
    header = COMPOSE.read_text().split("\nname:")[0]
    for name, value in told.items():
        assert f"{name}={value}" in header
    volume = services["bots"]["volumes"][0]
    assert volume.startswith("${BOTS_FILE:-")
    source = _INTERPOLATION.sub(told["BOTS_FILE"], volume).split(":")[0]
    pairs = [s for s in bots_spec.load(REPO / source) if s.kind == "funding-arb"]
    assert [s.keys for s in pairs] == [("binance:BTCUSDT", "binance-linear:BTCUSDT")]

    def env(service: str, **values: str) -> dict[str, str]:
        """The service's environment with `values` set in the shell, the rest defaulted."""
        def one(m: re.Match[str]) -> str:
            return values.get(m.group(1), m.group(3) or "")

        raw = services[service]["environment"]
        return {k: _INTERPOLATION.sub(one, str(v)) for k, v in raw.items()}

    ingest = config.load(_service_class("ingest"), environ=env(
        "ingest", INGEST_REPLAY_PERPETUALS="BTCUSDT"))
    assert ingest.replay_perpetuals == ("BTCUSDT",)
    assert "BTCUSDT" in ingest.symbols
    ledger = config.load(_service_class("ledger"), environ=env("ledger", LEDGER_FUNDING="true"))
    assert ledger.funding
    assert not config.load(_service_class("ledger"),
                           environ=compose_env(services["ledger"])).funding


def test_compose_ingest_reads_the_shared_data_read_only(compose: dict[str, Any]) -> None:
    ingest = compose["services"]["ingest"]
    data_dir = compose_env(ingest)["MERIDIAN_INGEST_DATA_DIR"]
    mounts = [v.split(":") for v in ingest["volumes"]]
    assert ["../shared/data", data_dir, "ro"] in mounts


def test_compose_bind_mounts_in_the_repository_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = interpolate(volume).split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} is missing"


def test_prometheus_scrapes_every_compose_service(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t: group.get("labels", {}) for job in prom["scrape_configs"]
               for group in job["static_configs"] for t in group["targets"]}
    for name, svc in meridian_services(compose).items():
        target = f"{name}:{compose_port(svc)}"
        assert target in targets, target
        service = compose_service(svc)
        assert targets[target]["service"] == SERVICE_LABELS.get(service, service), target


def test_prometheus_loads_its_config_and_rules_from_the_mounted_directory(
        compose: dict[str, Any]) -> None:
    """deploy/prometheus is mounted whole and --config.file points into it, so rule_files
    (relative to the config file) find the alert rules shipped next to it."""
    prometheus = compose["services"]["prometheus"]
    mounts = {v.split(":")[0]: v.split(":")[1:] for v in prometheus["volumes"]}
    directory, mode = mounts["./deploy/prometheus"]
    assert mode == "ro"
    assert f"--config.file={directory}/prometheus.yml" in prometheus["command"]
    assert "--storage.tsdb.path=/prometheus" in prometheus["command"]
    assert mounts["prometheus-data"] == ["/prometheus"]
    prom = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    for pattern in prom.get("rule_files", []):
        assert not pattern.startswith("/"), pattern
        assert list((REPO / "deploy" / "prometheus").glob(pattern)), f"{pattern}: no file"


# --- Dockerfile ---------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    copies = []
    for word, rest in dockerfile_instructions():
        args = rest.split()
        if word == "COPY" and not any(a.startswith("--from") for a in args):
            paths = [a for a in args if not a.startswith("--")]
            copies.append((paths[:-1], paths[-1]))
    return copies


def dockerfile_uid() -> int:
    users = [rest for word, rest in dockerfile_instructions() if word == "USER"]
    return int(users[-1].split(":")[0])


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def test_dockerfile_copies_paths_that_exist_and_are_not_ignored() -> None:
    ignored = dockerignore_patterns()
    sources = [s for srcs, _ in dockerfile_copies() for s in srcs]
    assert sources
    for source in sources:
        assert list(REPO.glob(source.rstrip("/"))), f"COPY {source}: no such path"
        parts = Path(source.rstrip("/")).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hits = [p for p in ignored for prefix in prefixes if fnmatch.fnmatch(prefix, p)]
        assert not hits, f"COPY {source} is excluded by .dockerignore {hits}"


def test_dockerfile_installs_every_workspace_member() -> None:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    members = [m for pattern in root["tool"]["uv"]["workspace"]["members"]
               for m in REPO.glob(pattern) if (m / "pyproject.toml").exists()]
    copied = {s.rstrip("/") for srcs, _ in dockerfile_copies() for s in srcs}
    for member in members:
        rel = member.relative_to(REPO)
        assert f"{rel}/pyproject.toml" in copied, f"{rel}/pyproject.toml not in the deps layer"
        assert any(str(rel) == c or str(rel).startswith(c + "/") for c in copied), \
            f"{rel} sources not copied"
    assert {"pyproject.toml", "uv.lock"} <= copied


def test_dockerfile_pins_the_makefile_uv_and_the_project_python() -> None:
    text = DOCKERFILE.read_text()
    make = re.search(r"^UV_VERSION\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    assert make is not None
    assert f"uv=={make.group(1)}" in text
    assert "uv sync --frozen --no-dev" in text
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires
    assert "python:3.11-slim" in text
    assert dockerfile_uid() != 0
    cmd = [rest for word, rest in dockerfile_instructions() if word == "CMD"][-1]
    assert json.loads(cmd) == ["meridian", "--help"]
