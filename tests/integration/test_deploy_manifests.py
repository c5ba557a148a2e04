"""The deployment files agree with the code: Dockerfile, docker-compose.yml, deploy/.

Nothing is built or started here (no Docker engine or cluster needed). The checks that matter:
every MERIDIAN_* variable a container gets is one its service's settings classes read (an unknown
one stops the service at start-up) and its value passes their validation; every command runs an
existing `meridian_<service>` module; every workload has resources, probes and a non-root,
read-only security context; the Dockerfile copies paths that exist, every workspace member, and
pins the same uv as the Makefile. Kubernetes checks run on both overlays: dev (the CSV replay
Job) and live (the live-ingest StatefulSet from components/ingest-live, without the Job).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from meridian_cli.settings import SETTINGS_CLASSES
from meridian_common import config
from meridian_ingest.sharding import owned_symbols

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
DEV = K8S / "overlays" / "dev"
LIVE = K8S / "overlays" / "live"
LIVE_COMPONENT = K8S / "components" / "ingest-live"
OVERLAYS = {"dev": DEV, "live": LIVE}
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SERVICES = ("ingest", "features", "signals", "risk", "execution", "ledger")
CONSUMERS = SERVICES[1:]
METRICS_PORT = 9100
SECRET_PLACEHOLDER = "postgresql://user:secret@db.example:5432/meridian"


# --- the code's settings ------------------------------------------------------------------------

def _prefix(cls: type[BaseSettings]) -> str:
    return str(cls.model_config["env_prefix"]).upper()


def _names(cls: type[BaseSettings]) -> set[str]:
    return {_prefix(cls) + field.upper() for field in cls.model_fields}


def _service_class(service: str) -> type[BaseSettings]:
    by_prefix = {_prefix(cls): cls for cls in SETTINGS_CLASSES}
    return by_prefix[f"MERIDIAN_{service.upper()}_"]


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


def render(kdir: Path) -> list[dict[str, Any]]:
    """A minimal `kubectl kustomize`: resources (files and bases), components, patches from files
    (strategic merge, `$patch: delete`), namespace and image tags."""
    kust = load_docs(kdir / "kustomization.yaml")[0]
    docs: list[dict[str, Any]] = []
    for entry in kust.get("resources", []):
        path = (kdir / entry).resolve()
        docs += render(path) if path.is_dir() else load_docs(path)
    for entry in kust.get("components", []):
        docs += render((kdir / entry).resolve())
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


def secret_template() -> dict[str, Any]:
    (doc,) = load_docs(BASE / "secret-database.template.yaml")
    return doc


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container would get; secret values are a placeholder."""
    maps = {name: doc.get("data", {}) for name, doc in by_kind(docs, "ConfigMap").items()}
    secret = secret_template()
    secrets = {secret["metadata"]["name"]: secret["stringData"]}
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
            assert key_ref["key"] in secrets.get(key_ref["name"], {}), \
                f"{container['name']}: {var['name']} refers to a Secret key the template lacks"
            env[var["name"]] = SECRET_PLACEHOLDER
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
    """Each overlay in turn: every check taking this fixture runs on dev and on live."""
    return render(OVERLAYS[request.param])


def overlay_of(docs: list[dict[str, Any]]) -> str:
    return "live" if by_kind(docs, "StatefulSet") else "dev"


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
        assert present - listed <= {"secret-database.template.yaml"}, \
            f"{kust_path}: not listed: {present - listed}"
    live = load_docs(LIVE / "kustomization.yaml")[0]
    assert (LIVE / live["components"][0]).resolve() == LIVE_COMPONENT
    assert load_docs(LIVE_COMPONENT / "kustomization.yaml")[0]["kind"] == "Component"


def test_base_lists_every_manifest_except_the_secret_template() -> None:
    listed = set(load_docs(BASE / "kustomization.yaml")[0]["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed <= present, f"listed but missing: {listed - present}"
    assert present - listed == {"secret-database.template.yaml"}


def test_one_deployment_per_consumer_and_one_ingest(rendered: list[dict[str, Any]]) -> None:
    """dev: the replay Job; live: the live StatefulSet and no Job (never both on one topic)."""
    def services(kind: str) -> set[str]:
        return {service_of(c) for d, c in containers(rendered) if d["kind"] == kind}

    assert services("Deployment") == set(CONSUMERS)
    if overlay_of(rendered) == "dev":
        assert services("Job") == {"ingest"}
        assert services("StatefulSet") == set()
    else:
        assert services("Job") == set()
        assert services("StatefulSet") == {"ingest"}
    assert all(d["metadata"]["namespace"] == "meridian"
               for d in rendered if d["kind"] != "Namespace")


def test_workloads_have_resources_probes_and_security(rendered: list[dict[str, Any]]) -> None:
    for doc, container in containers(rendered):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][part].keys(), where
        pod = pod_spec(doc)
        assert pod is not None
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == dockerfile_uid(), where
        sec = container["securityContext"]
        assert sec["allowPrivilegeEscalation"] is False, where
        assert sec["readOnlyRootFilesystem"] is True, where
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), where
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", where
        assert annotations["prometheus.io/port"] == str(METRICS_PORT), where
        assert any(p["containerPort"] == METRICS_PORT for p in container["ports"]), where
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = container[probe]["httpGet"]
                assert get["path"] == "/metrics", f"{where} {probe}"
                assert get["port"] in (METRICS_PORT, "metrics"), f"{where} {probe}"


def test_workload_commands_run_existing_modules(rendered: list[dict[str, Any]]) -> None:
    for doc, container in containers(rendered):
        service = service_of(container)
        assert service in SERVICES
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


def test_configmap_holds_only_common_settings(rendered: list[dict[str, Any]]) -> None:
    data = by_kind(rendered, "ConfigMap")["meridian-common"]["data"]
    assert set(data) <= _names(config.CommonSettings)
    config.load(config.CommonSettings, environ=data)


def test_each_deployment_has_a_pdb_and_a_metrics_service(rendered: list[dict[str, Any]]) -> None:
    pdbs = by_kind(rendered, "PodDisruptionBudget")
    services = by_kind(rendered, "Service")
    for name, deployment in by_kind(rendered, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        assert deployment["spec"]["replicas"] == 1, name
        assert pdbs[name]["spec"]["maxUnavailable"] == 1, name
        assert pdbs[name]["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        assert services[name]["spec"]["selector"].items() <= labels.items(), name
        ports = services[name]["spec"]["ports"]
        assert [p["port"] for p in ports] == [METRICS_PORT], name


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


# --- docker compose -----------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: object) -> str:
    """Compose's ${VAR:-default} with nothing set in the environment."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


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


def test_compose_has_one_container_per_service(compose: dict[str, Any]) -> None:
    assert set(meridian_services(compose)) == set(SERVICES) | {"ingest-live"}
    assert {compose_service(s) for s in meridian_services(compose).values()} == set(SERVICES)
    assert {"kafka", "timescaledb", "prometheus", "grafana"} <= set(compose["services"])


def test_compose_commands_run_existing_modules(compose: dict[str, Any]) -> None:
    for name, svc in meridian_services(compose).items():
        check_command(svc["command"], compose_service(svc), f"compose {name}")
        assert svc["build"]["dockerfile"] == "Dockerfile"


def test_compose_env_is_known_to_each_service_and_valid(compose: dict[str, Any]) -> None:
    for name, svc in meridian_services(compose).items():
        env = compose_env(svc)
        assert env["MERIDIAN_METRICS_PORT"] == str(METRICS_PORT), name
        assert env["MERIDIAN_KAFKA_BOOTSTRAP"].split(":")[0] == "kafka", name
        check_env(compose_service(svc), env, f"compose {name}")
    assert "MERIDIAN_DATABASE_URL" in compose_env(compose["services"]["ledger"])
    assert "MERIDIAN_DATABASE_URL" in compose_env(compose["services"]["ingest-live"])


def test_compose_start_order_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for infra in ("kafka", "timescaledb"):
        assert services[infra]["healthcheck"]["test"], infra
    for name, svc in meridian_services(compose).items():
        assert svc["depends_on"]["kafka"]["condition"] == "service_healthy", name
        if "MERIDIAN_DATABASE_URL" in compose_env(svc):
            assert svc["depends_on"]["timescaledb"]["condition"] == "service_healthy", name
    assert services["ingest"]["restart"] == "no"
    assert all(services[n]["restart"] != "no" for n in (*CONSUMERS, "ingest-live"))
    assert services["ingest-live"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"


def test_compose_live_ingest_is_opt_in_and_off_the_replay_topics(compose: dict[str, Any]) -> None:
    """`docker compose up` runs the replay demo as before; `--profile live` adds live ingest,
    which by default publishes under another topic prefix than the replay."""
    services = meridian_services(compose)
    assert services["ingest-live"]["profiles"] == ["live"]
    assert all("profiles" not in svc for name, svc in services.items() if name != "ingest-live")
    ingest = _service_class("ingest")
    replay_env = compose_env(services["ingest"])
    live_env = compose_env(services["ingest-live"])
    assert config.load(ingest, environ=replay_env).mode == "replay"
    live_settings = config.load(ingest, environ=live_env)
    assert live_settings.mode == "live"
    assert live_settings.replicas == 1
    assert live_settings.replica_index is None
    assert live_env["MERIDIAN_TOPIC_PREFIX"] != replay_env["MERIDIAN_TOPIC_PREFIX"]


def test_compose_ingest_reads_the_shared_data_read_only(compose: dict[str, Any]) -> None:
    ingest = compose["services"]["ingest"]
    data_dir = compose_env(ingest)["MERIDIAN_INGEST_DATA_DIR"]
    mounts = [v.split(":") for v in ingest["volumes"]]
    assert ["../shared/data", data_dir, "ro"] in mounts


def test_compose_bind_mounts_in_the_repository_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} is missing"


def test_prometheus_scrapes_every_compose_service(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for group in job["static_configs"]
               for t in group["targets"]}
    assert {f"{name}:{METRICS_PORT}" for name in meridian_services(compose)} <= targets
    mount = next(v for v in compose["services"]["prometheus"]["volumes"] if "prometheus.yml" in v)
    assert mount.startswith("./deploy/prometheus/prometheus.yml:")


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
