"""deploy/ and the plane classifier (issue 19): compose and Kubernetes mount SonoNet16.npz where the hospital has it,
read-only, at the path FETALHC_PLANE_CLASSIFIER names once set; unset (as shipped) it is off. Nothing is started."""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (the test extra) reads the deploy files")

from tests.test_deploy_files import (  # noqa: E402
    DEPLOY,
    config_data,
    container_env,
    fetalhc_argv,
    is_fetalhc_image,
    objects,
    pod_templates,
)
from worker.core.settings import Settings  # noqa: E402

MOUNT = "/opt/fetalhc/plane-classifier"
FILE = f"{MOUNT}/SonoNet16.npz"
MEASURING = ("worker", "serve")  # what loads the classifier: the workers, and the API (/api/measure, /healthz)


def test_kubernetes_mounts_the_classifier_volume_read_only_where_measuring_runs() -> None:
    [claim] = [c for c in objects("PersistentVolumeClaim") if c["metadata"]["name"] == "fetalhc-plane-classifier"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on any node read it
    assert config_data()["FETALHC_PLANE_CLASSIFIER"] == ""  # shipped off: no file in the volume yet
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert "plane-classifier-pvc.yaml" in kustomization["resources"]
    measuring = 0
    for owner, template in pod_templates():
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("containers", []):
            argv = fetalhc_argv(c) if is_fetalhc_image(c["image"]) else None
            if not argv or argv[0] not in MEASURING:
                continue
            measuring += 1
            mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"] == MOUNT]
            assert len(mounts) == 1 and mounts[0].get("readOnly") is True, f"{owner}/{c['name']}"
            volume = volumes[mounts[0]["name"]]["persistentVolumeClaim"]
            assert (volume["claimName"], volume.get("readOnly")) == ("fetalhc-plane-classifier", True)
            assert "FETALHC_PLANE_CLASSIFIER" in container_env(c)
    assert measuring >= 3  # the CPU workers, the GPU worker, the API


def test_compose_mounts_the_folder_and_passes_the_setting_through_empty_by_default() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name in ("worker", "api"):
        service = compose["services"][name]
        env = service["environment"]
        assert env["FETALHC_PLANE_CLASSIFIER"] == "${FETALHC_PLANE_CLASSIFIER:-}", name
        assert f"./plane-classifier:{MOUNT}:ro" in service["volumes"], name
    folder = DEPLOY / "plane-classifier"
    assert (folder / "README.md").is_file() and "*.npz" in (folder / ".gitignore").read_text().split()
    assert not list(folder.glob("*.npz")) or all(_ignored(p) for p in folder.glob("*.npz"))
    assert FILE in (folder / "README.md").read_text()


def test_an_empty_setting_is_off_and_a_path_is_read_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALHC_PLANE_CLASSIFIER", "")
    assert Settings().plane_classifier is None
    monkeypatch.setenv("FETALHC_PLANE_CLASSIFIER", FILE)
    assert Settings().plane_classifier == Path(FILE)  # checked where it is loaded: /healthz says invalid, not a crash


def _ignored(path: Path) -> bool:
    import subprocess

    return subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=DEPLOY.parent).returncode == 0
