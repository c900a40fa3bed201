"""Keep deploy/ honest without a cluster: settings that exist, commands that parse, manifests that fit together.

Every check here reads the files in deploy/ and the code they configure (worker/core/settings.py, the CLI parser);
nothing is started. The names of the real settings are derived from worker/core/settings.py, never listed here.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (the test extra) reads the deploy files")

from worker.cli import build_parser  # noqa: E402
from worker.core.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SETTINGS_PY = ROOT / "worker" / "core" / "settings.py"
VAR_RE = re.compile(r"\bFETALHC_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")
POD_OWNERS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


# -- what the code reads -------------------------------------------------------------------------------------------

def setting_names() -> set[str]:
    """FETALHC_* names read by worker/core/settings.py: the first argument of every ``_env*("NAME", ...)`` call."""
    tree = ast.parse(SETTINGS_PY.read_text())
    return {f"FETALHC_{node.args[0].value}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("_env")
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}


def _is_read(name: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    """True when setting ``name`` to a nonsense value changes Settings() or makes it refuse the value."""
    baseline = Settings().model_dump()
    monkeypatch.setenv(name, "zz-not-a-default-value")
    try:
        return Settings().model_dump() != baseline
    except Exception:  # noqa: BLE001 - refused (not a number, not a choice...): it was read
        return True
    finally:
        monkeypatch.delenv(name)


def test_setting_names_are_derived_from_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    names = setting_names()
    # One variable per Settings field: a field read some other way would be missed by the scan above.
    assert len(names) == len(Settings.model_fields), sorted(names)
    not_read = sorted(n for n in names if not _is_read(n, monkeypatch))
    assert not not_read, f"derived names that Settings() does not react to: {not_read}"
    assert not _is_read("FETALHC_NO_SUCH_SETTING", monkeypatch)  # the probe above can say no


def effective_default(name: str) -> Any:
    """The default Settings() gives for FETALHC_<name> (the field whose value the variable changes)."""
    field = {"FETALHC_TASK_TIME_LIMIT": "task_time_limit_s", "FETALHC_METRICS_PORT": "metrics_port",
             "FETALHC_SPOOL_DIR": "spool_dir", "FETALHC_TORCH_THREADS": "torch_threads"}[name]
    return getattr(Settings(), field)


# -- the deploy files ----------------------------------------------------------------------------------------------

def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
            if isinstance(doc, dict) and "kind" in doc]


def objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc["kind"] == kind]


def pod_templates() -> list[tuple[str, dict[str, Any]]]:
    """(owner name, pod template) of every workload."""
    return [(doc["metadata"]["name"], doc["spec"]["template"]) for kind in POD_OWNERS for doc in objects(kind)]


def all_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def is_fetalhc_image(image: str) -> bool:
    name = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return name == "fetalhc" or name.startswith("fetalhc-")


def config_data() -> dict[str, str]:
    data: dict[str, str] = {}
    for cm in objects("ConfigMap"):
        data.update({k: str(v) for k, v in (cm.get("data") or {}).items()})
    return data


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom ConfigMaps/Secrets, then env (which wins)."""
    configmaps = {cm["metadata"]["name"]: cm.get("data") or {} for cm in objects("ConfigMap")}
    secrets = {s["metadata"]["name"]: {**(s.get("data") or {}), **(s.get("stringData") or {})}
               for s in objects("Secret")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update({k: str(v) for k, v in configmaps[source["configMapRef"]["name"]].items()})
        if "secretRef" in source:
            env.update({k: str(v) for k, v in secrets[source["secretRef"]["name"]].items()})
    for item in container.get("env", []):
        env[item["name"]] = str(item["value"]) if "value" in item else "<from a reference>"
    return env


def fetalhc_argv(container: dict[str, Any]) -> list[str] | None:
    """The fetalhc arguments a container runs (the image's ENTRYPOINT is fetalhc), or None for other programs."""
    command, args = container.get("command"), container.get("args", [])
    if command:
        if Path(command[0]).name != "fetalhc":
            return None
        return [*command[1:], *args]
    return list(args) if args else dockerfile_default_argv()


def dockerfile_instruction(keyword: str) -> str:
    lines = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith(keyword + " ")]
    assert lines, f"deploy/Dockerfile has no {keyword}"
    return lines[-1][len(keyword) + 1:].strip()


def dockerfile_default_argv() -> list[str]:
    assert json.loads(dockerfile_instruction("ENTRYPOINT")) == ["fetalhc"]
    return json.loads(dockerfile_instruction("CMD"))


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# -- YAML parses; every FETALHC_ name is a setting ------------------------------------------------------------------

def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert DEPLOY / "compose.yaml" in files and len(list(K8S.glob("*.yaml"))) >= 5
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path.relative_to(ROOT)} is empty"
        assert all(isinstance(d, dict) for d in docs), f"{path.relative_to(ROOT)}: a document is not a mapping"


def test_every_fetalhc_variable_in_deploy_files_is_a_real_setting() -> None:
    """Any FETALHC_ name anywhere in deploy/ (keys, env lists, env file, units, comments) must exist."""
    real = setting_names()
    used: dict[str, set[str]] = {}
    for path in deploy_files():
        for name in VAR_RE.findall(path.read_text()):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert len(used) >= 10, f"too few FETALHC_ names found in deploy/ ({sorted(used)}): is the scan broken?"
    unknown = {name: sorted(where) for name, where in used.items() if name not in real}
    assert not unknown, f"not settings in worker/core/settings.py: {unknown}"


def test_structured_environment_keys_are_real_settings() -> None:
    """The keys Kubernetes and compose actually set (not only mentions), checked the same way."""
    real = setting_names()
    keys: list[tuple[str, str]] = []
    for cm in objects("ConfigMap"):
        keys += [(f"ConfigMap {cm['metadata']['name']}", k) for k in cm.get("data") or {}]
    for secret in objects("Secret"):
        keys += [(f"Secret {secret['metadata']['name']}", k) for k in {**(secret.get("data") or {}),
                                                                        **(secret.get("stringData") or {})}]
    for owner, template in pod_templates():
        for c in all_containers(template["spec"]):
            keys += [(f"{owner}/{c['name']}", item["name"]) for item in c.get("env", [])]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        names = env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        keys += [(f"compose {name}", k) for k in names]
    for line in (DEPLOY / "fetalhc.env.example").read_text().splitlines():
        if m := re.match(r"\s*#?\s*([A-Z][A-Z0-9_]*)=", line):
            keys.append(("fetalhc.env.example", m.group(1)))
    ours = [(where, k) for where, k in keys if k.startswith("FETALHC_")]
    assert len(ours) >= 20
    wrong = [(where, k) for where, k in ours if k not in real]
    assert not wrong, f"set but never read by worker/core/settings.py: {wrong}"


def test_env_example_mentions_every_setting() -> None:
    """Operators start from fetalhc.env.example: each setting appears there, set or commented with its default."""
    text = (DEPLOY / "fetalhc.env.example").read_text()
    listed = set(re.findall(r"^\s*#?\s*(FETALHC_[A-Z0-9_]+)=", text, flags=re.M))
    missing = sorted(setting_names() - listed)
    assert not missing, f"add to deploy/fetalhc.env.example (commented is fine): {missing}"


# -- every fetalhc command line parses -------------------------------------------------------------------------------

def compose_argv(service: dict[str, Any]) -> list[str]:
    """The fetalhc arguments a compose service of the fetalhc image runs (its entrypoint may name a subcommand)."""
    command, entrypoint = service.get("command"), service.get("entrypoint")
    argv = shlex.split(command) if isinstance(command, str) else list(command or [])
    if entrypoint:
        entry = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
        assert Path(entry[0]).name == "fetalhc", f"compose entrypoint runs {entry[0]}"
        return [*entry[1:], *argv]
    return argv or dockerfile_default_argv()


def command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv after `fetalhc`) for every fetalhc invocation in deploy/."""
    lines: list[tuple[str, list[str]]] = [("Dockerfile CMD", dockerfile_default_argv())]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        build = service.get("build") or {}
        if isinstance(build, dict) and str(build.get("dockerfile", "")).endswith("deploy/Dockerfile"):
            lines.append((f"compose {name}", compose_argv(service)))
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = shlex.split(line.split("=", 1)[1].lstrip("-@:+!").replace("%%", "%"))
                assert Path(argv[0]).name == "fetalhc", f"{unit.name}: ExecStart runs {argv[0]}"
                lines.append((unit.name, argv[1:]))
    for owner, template in pod_templates():
        for c in all_containers(template["spec"]):
            if is_fetalhc_image(c["image"]):
                argv = fetalhc_argv(c)
                assert argv is not None, f"{owner}/{c['name']}: fetalhc image running another program"
                lines.append((f"k8s {owner}/{c['name']}", argv))
                for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                    command = (c.get(kind) or {}).get("exec", {}).get("command")
                    if command and Path(command[0]).name == "fetalhc":
                        lines.append((f"k8s {owner}/{c['name']} {kind}", command[1:]))
    return lines


def test_every_fetalhc_command_in_deploy_files_parses() -> None:
    lines = command_lines()
    where = {w for w, _ in lines}
    assert any(w.startswith("compose ") for w in where) and any(w.endswith(".service") for w in where)
    assert sum(w.startswith("k8s ") for w in where) >= 4
    parser = build_parser()
    subcommands = set(next(a for a in parser._actions if a.dest == "command").choices)
    for place, argv in lines:
        assert argv and argv[0] in subcommands, f"{place}: `fetalhc {' '.join(argv)}` is not a subcommand"
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{place}: `fetalhc {' '.join(argv)}` does not parse")


# -- Kubernetes objects fit together -----------------------------------------------------------------------------------

def test_every_deployment_runs_the_api_and_guards_a_wide_bind_with_a_token() -> None:
    """compose, systemd and Kubernetes each run `fetalhc serve`; bound beyond loopback, a token is required."""
    serves = [(where, argv) for where, argv in command_lines() if argv[0] == "serve"]
    assert {w.split(" ")[0] if not w.endswith(".service") else "systemd" for w, _ in serves} >= {
        "compose", "systemd", "k8s"}
    parser = build_parser()
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for where, argv in serves:
        if parser.parse_args(argv).host in ("127.0.0.1", "localhost", "::1"):
            continue
        if where.startswith("compose "):
            service = compose["services"][where.split(" ", 1)[1]]
            assert "FETALHC_API_TOKEN" in service["environment"], f"{where}: bound wide without a token"
            assert all(str(port).startswith("127.0.0.1:") for port in service.get("ports", [])), (
                f"{where}: published beyond the host's loopback")
        else:
            owner = where.split(" ", 1)[1].split("/")[0]
            [template] = [t for o, t in pod_templates() if o == owner]
            env = [e["name"] for c in all_containers(template["spec"]) for e in c.get("env", [])]
            assert "FETALHC_API_TOKEN" in env, f"{where}: bound wide without a token"


def test_worker_liveness_asks_the_worker_itself() -> None:
    """A hung worker keeps its metrics port open: each worker's liveness probe is `fetalhc ping-worker`."""
    probes = 0
    for owner, template in pod_templates():
        for c in template["spec"].get("containers", []):
            argv = fetalhc_argv(c) if is_fetalhc_image(c["image"]) else None
            if not argv or argv[0] != "worker":
                continue
            probe = c.get("livenessProbe") or {}
            command = probe.get("exec", {}).get("command", [])
            assert command[:2] == ["fetalhc", "ping-worker"], f"{owner}: liveness does not ping the worker"
            timeout = float(command[command.index("--timeout") + 1]) if "--timeout" in command else 5.0
            assert probe.get("timeoutSeconds", 1) > timeout, f"{owner}: the probe times out before the ping does"
            probes += 1
    assert probes >= 2


def test_k8s_objects_share_the_namespace() -> None:
    namespaces = [ns["metadata"]["name"] for ns in objects("Namespace")]
    assert len(namespaces) == 1
    for path, doc in k8s_docs():
        if doc["kind"] not in ("Namespace", "Kustomization"):
            assert doc["metadata"].get("namespace") == namespaces[0], f"{path.name}: {doc['kind']} elsewhere"


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed <= on_disk, f"missing files: {sorted(listed - on_disk)}"
    assert on_disk - listed == {"secret.example.yaml"}, "every manifest but the placeholder Secret is applied"
    images = {c["image"].split(":")[0] for _, t in pod_templates() for c in all_containers(t["spec"])}
    assert {i["name"] for i in kustomization.get("images", [])} == images, "an image the override does not cover"


def test_secret_example_holds_placeholders_only() -> None:
    (secret,) = objects("Secret")
    for key, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, f"{key}: the example Secret must carry placeholders, never a real value"


def test_deployments_have_resources_and_a_non_root_security_context() -> None:
    user = dockerfile_instruction("USER").split(":")[0]
    assert user.isdigit(), "runAsNonRoot needs a numeric USER in the image"
    deployments = objects("Deployment")
    assert len(deployments) >= 4
    for dep in deployments:
        name, spec = dep["metadata"]["name"], dep["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext") or {}
        assert pod_sc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot"
        assert str(pod_sc.get("runAsUser")) == user, f"{name}: runAsUser is not the image's user {user}"
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"{name}: selector misses its pods"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in all_containers(spec):
            where = f"{name}/{c['name']}"
            res = c.get("resources") or {}
            assert res.get("requests", {}).get("memory") and res.get("requests", {}).get("cpu"), f"{where}: requests"
            assert res.get("limits", {}).get("memory"), f"{where}: memory limit"
            sc = c.get("securityContext") or {}
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: capabilities not dropped"
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert set(mounts.values()) <= set(volumes), f"{where}: mounts an undeclared volume"
            if sc.get("readOnlyRootFilesystem"):
                assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], f"{where}: read-only root, no /tmp"


def test_probes_and_scrape_annotations_point_at_declared_ports() -> None:
    probed = 0
    for owner, template in pod_templates():
        containers = template["spec"].get("containers", [])
        declared = {(p.get("name"), p["containerPort"]) for c in containers for p in c.get("ports", [])}
        for c in containers:
            ports = {p["containerPort"] for p in c.get("ports", [])}
            ports |= {p["name"] for p in c.get("ports", []) if "name" in p}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if probe is None:
                    continue
                action = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
                if action is not None:
                    assert action["port"] in ports, f"{owner}/{c['name']} {kind}: port {action['port']} not declared"
                    probed += 1
                else:
                    assert probe.get("exec", {}).get("command"), f"{owner}/{c['name']} {kind}: no action"
        annotations = template["metadata"].get("annotations") or {}
        if annotations.get("prometheus.io/scrape") == "true":
            port = int(annotations["prometheus.io/port"])
            assert port in {p for _, p in declared}, f"{owner}: scrapes port {port}, not a containerPort"
    assert probed >= 4


def test_workers_expose_metrics_and_finish_their_task_before_being_killed() -> None:
    worker_pods = 0
    for owner, template in pod_templates():
        spec = template["spec"]
        for c in spec.get("containers", []):
            argv = fetalhc_argv(c) if is_fetalhc_image(c["image"]) else None
            if not argv or argv[0] != "worker":
                continue
            worker_pods += 1
            env = container_env(c)
            time_limit = float(env.get("FETALHC_TASK_TIME_LIMIT") or effective_default("FETALHC_TASK_TIME_LIMIT"))
            grace = spec.get("terminationGracePeriodSeconds", 30)
            assert grace > time_limit, f"{owner}: grace {grace} s cuts a {time_limit:.0f} s task short"
            metrics_port = int(env.get("FETALHC_METRICS_PORT") or effective_default("FETALHC_METRICS_PORT"))
            assert metrics_port, f"{owner}: FETALHC_METRICS_PORT=0 leaves nothing for the probes and Prometheus"
            assert metrics_port in {p["containerPort"] for p in c.get("ports", [])}, f"{owner}: metrics port undeclared"
            annotations = template["metadata"].get("annotations") or {}
            assert annotations.get("prometheus.io/scrape") == "true", f"{owner}: not scraped"
            assert int(annotations.get("prometheus.io/port", 0)) == metrics_port, f"{owner}: scrapes the wrong port"
            # torch threads default to the node's cores / concurrency: under a CPU limit, set them.
            cpu_limit = c["resources"].get("limits", {}).get("cpu")
            if cpu_limit is not None:
                concurrency = build_parser().parse_args(argv).concurrency
                threads = int(env.get("FETALHC_TORCH_THREADS") or 0)
                assert threads, f"{owner}: CPU limit without FETALHC_TORCH_THREADS (defaults to the node's cores)"
                assert threads * concurrency <= cpu_cores(cpu_limit), f"{owner}: more threads than its CPU limit"
            if "nvidia.com/gpu" in c["resources"].get("limits", {}):
                assert env.get("FETALHC_DEVICE") in ("cuda", "auto"), f"{owner}: holds a GPU but runs on the CPU"
                assert "nodeSelector" in spec or "affinity" in spec, f"{owner}: GPU pod without node selection"
    assert worker_pods >= 2, "the CPU and the GPU worker"
    for unit in (DEPLOY / "systemd").glob("fetalhc-worker*.service"):
        stop = re.search(r"^TimeoutStopSec=(\d+)", unit.read_text(), flags=re.M)
        assert stop and int(stop.group(1)) > effective_default("FETALHC_TASK_TIME_LIMIT"), unit.name


def test_services_select_pods_and_target_their_ports() -> None:
    services = objects("Service")
    assert services
    templates = pod_templates()
    for svc in services:
        name, selector = svc["metadata"]["name"], svc["spec"]["selector"]
        matched = [t for _, t in templates if selector.items() <= t["metadata"]["labels"].items()]
        assert matched, f"Service {name} selects no pods: {selector}"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for t in matched:
                declared = {p.get("name") for c in t["spec"]["containers"] for p in c.get("ports", [])} | \
                           {p["containerPort"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
                assert target in declared, f"Service {name}: targetPort {target} not on its pods"


def test_config_and_secret_references_resolve() -> None:
    configmaps = {cm["metadata"]["name"]: cm.get("data") or {} for cm in objects("ConfigMap")}
    secrets = {s["metadata"]["name"]: s.get("stringData") or s.get("data") or {} for s in objects("Secret")}
    for owner, template in pod_templates():
        for c in all_containers(template["spec"]):
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps, f"{owner}/{c['name']}: no such ConfigMap"
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, f"{owner}/{c['name']}: no such Secret"
            for item in c.get("env", []):
                ref = (item.get("valueFrom") or {}).get("secretKeyRef") or (item.get("valueFrom") or {}).get(
                    "configMapKeyRef")
                if ref is not None:
                    store = secrets if "secretKeyRef" in item["valueFrom"] else configmaps
                    assert ref["key"] in store.get(ref["name"], {}), f"{owner}/{c['name']}: {ref} does not exist"


def test_the_spool_is_one_shared_volume_at_the_configured_path() -> None:
    claims = {pvc["metadata"]["name"]: pvc for pvc in objects("PersistentVolumeClaim")}
    users: dict[str, set[str]] = {}
    spool_dir = config_data().get("FETALHC_SPOOL_DIR") or str(effective_default("FETALHC_SPOOL_DIR"))
    for owner, template in pod_templates():
        spec = template["spec"]
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in claims, f"{owner}: no PersistentVolumeClaim {claim}"
                users.setdefault(claim, set()).add(owner)
        spool_volumes = {v["name"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
        for c in spec.get("containers", []):
            argv = fetalhc_argv(c) if is_fetalhc_image(c["image"]) else None
            if argv and argv[0] in ("listen", "worker", "serve"):
                env_spool = container_env(c).get("FETALHC_SPOOL_DIR", spool_dir)
                mounted = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in spool_volumes}
                assert env_spool in mounted, f"{owner}/{c['name']}: spool {env_spool} is not on the shared volume"
    for claim, owners in users.items():
        if len(owners) > 1:  # pods of several workloads, on any node, read the files a job row points at
            assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"], f"{claim} is shared by {sorted(owners)}"
    assert any(len(o) > 1 for o in users.values()), "listener and workers share no spool volume"


def test_compose_mounts_the_spool_where_the_settings_point() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        spool = env.get("FETALHC_SPOOL_DIR") if isinstance(env, dict) else None
        if spool:
            targets = {str(v).split(":")[1] for v in service.get("volumes", []) if isinstance(v, str)}
            assert spool in targets, f"compose {name}: FETALHC_SPOOL_DIR={spool} is not a mounted volume"


def test_autoscaling_follows_the_queues_the_workers_consume() -> None:
    from worker.queue.celery_app import BACKFILL_QUEUE, LIVE_QUEUE

    deployments = {d["metadata"]["name"]: d for d in objects("Deployment")}
    secrets = {s["metadata"]["name"]: s.get("stringData") or {} for s in objects("Secret")}
    auths = {a["metadata"]["name"]: a for a in objects("TriggerAuthentication")}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in objects("ScaledObject")}
    assert set(scaled) == {"fetalhc-worker", "fetalhc-worker-gpu"}, "CPU and GPU workers scale separately"
    for target, obj in scaled.items():
        assert target in deployments, f"{obj['metadata']['name']} scales a Deployment that does not exist"
        spec = obj["spec"]
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis"
            assert trigger["metadata"]["listName"] in (LIVE_QUEUE, BACKFILL_QUEUE), "a queue no worker consumes"
            auth = auths[trigger["authenticationRef"]["name"]]
            for ref in auth["spec"]["secretTargetRef"]:
                assert ref["key"] in secrets[ref["name"]], f"{ref} is not in the example Secret"
    cpu = {t["metadata"]["listName"] for t in scaled["fetalhc-worker"]["spec"]["triggers"]}
    assert cpu == {LIVE_QUEUE, BACKFILL_QUEUE}, "CPU workers scale on both queues"
    assert scaled["fetalhc-worker"]["spec"]["minReplicaCount"] >= 1, "a live scan never waits for a pod to start"


# -- named tokens (reviewers): an optional, read-only file where the API reads it ------------------------------------

def test_compose_gives_the_api_the_named_tokens_read_only_and_one_service_to_keep_them() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    serving = [n for n, s in services.items() if "build" in s and compose_argv(s)[0] == "serve"]
    keepers = [n for n, s in services.items() if "build" in s and compose_argv(s)[0] == "token"]
    assert serving and len(keepers) == 1
    keeper = services[keepers[0]]
    tokens_file = Path(keeper["environment"]["FETALHC_API_TOKENS_FILE"])
    assert tokens_file.is_absolute()
    mounts = {v.split(":")[1]: v.split(":") for v in keeper["volumes"]}
    volume, _, *mode = mounts[str(tokens_file.parent)]
    assert mode != ["ro"] and volume in compose["volumes"], "the token service writes a named volume"
    assert keeper.get("profiles") and not keeper.get("depends_on"), "a tool: not started by `up`, needs no database"
    for name in serving:
        env = services[name]["environment"]
        assert env["FETALHC_API_TOKENS_FILE"] == str(tokens_file), f"compose {name}: reads another tokens file"
        assert f"{volume}:{tokens_file.parent}:ro" in services[name]["volumes"], f"compose {name}: not mounted read-only"
        assert "FETALHC_API_TOKEN" in env, "optional: the shared token still opens the API without named ones"
    # a fresh named volume takes the ownership of the image's folder: the image's user can write it
    assert re.search(rf"install -d [^\n]*-o fetalhc -g fetalhc [^\n]*{re.escape(str(tokens_file.parent))}\b",
                     (DEPLOY / "Dockerfile").read_text()), "the image lacks the tokens folder owned by fetalhc"


def test_k8s_mounts_the_named_tokens_secret_read_only_and_optional_in_the_api() -> None:
    example = (K8S / "secret.example.yaml").read_text()
    served = 0
    for owner, template in pod_templates():
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("containers", []):
            argv = fetalhc_argv(c) if is_fetalhc_image(c["image"]) else None
            if not argv or argv[0] != "serve":
                assert not any("secret" in volumes.get(m["name"], {}) for m in c.get("volumeMounts", [])), (
                    f"{owner}/{c['name']}: only the API reads the reviewers' tokens")
                continue
            served += 1
            env = container_env(c)
            tokens_file = Path(env["FETALHC_API_TOKENS_FILE"])
            assert "FETALHC_API_TOKEN" in env, f"{owner}: the shared token opens the API without named ones"
            [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == str(tokens_file.parent)]
            assert mount.get("readOnly") is True and "subPath" not in mount, (
                f"{owner}: the tokens folder read-only and whole (a subPath mount never sees the Secret change)")
            secret = volumes[mount["name"]]["secret"]
            assert secret.get("optional") is True, f"{owner}: the pod must start without the tokens Secret"
            mode = secret.get("defaultMode", 0o644)
            assert mode & 0o037 == 0 and mode & 0o040, f"{owner}: tokens file mode {mode:o}: group read only"
            assert spec["securityContext"].get("fsGroup") is not None, f"{owner}: no fsGroup to read it by group"
            key = tokens_file.name
            assert not secret.get("items") or [i["path"] for i in secret["items"]] == [key]
            # the example says how to make it, under the name and key the pod reads
            assert f"generic {secret['secretName']} --from-file={key}=" in example, "secret.example.yaml: no recipe"
    assert served >= 1


def test_the_api_follows_a_secret_volume_as_kubelet_swaps_it(tmp_path: Path) -> None:
    """A Secret volume is ``KEY -> ..data/KEY`` and ``..data -> ..<stamp>``, swapped atomically on a change: the
    API's token book must see a revoke through it, and name nobody while the optional Secret is absent."""
    from worker.core.tokens import TokenBook, add_token, revoke_token

    folder = tmp_path / "tokens"
    folder.mkdir()
    book = TokenBook(folder / "api-tokens")
    assert book.name_of("anything") is None  # the Secret does not exist: an empty folder, nobody named
    source = tmp_path / "api-tokens"
    alice, bob = add_token(source, "alice"), add_token(source, "bob")

    def publish(stamp: str) -> None:
        (folder / stamp).mkdir()
        (folder / stamp / "api-tokens").write_bytes(source.read_bytes())
        (folder / "..data.tmp").symlink_to(stamp)
        (folder / "..data.tmp").replace(folder / "..data")

    publish("..2026_03_01_first")
    (folder / "api-tokens").symlink_to("..data/api-tokens")
    assert book.name_of(alice) == "alice" and book.name_of(bob) == "bob"
    revoke_token(source, "alice")
    publish("..2026_03_02_second")
    assert book.name_of(alice) is None and book.name_of(bob) == "bob"
