"""Each service's Dockerfile, checked without a Docker engine: its build stage is replayed from the
checkout (the COPY steps, and the RUN step that generates the protobuf code), and the runtime stage
keeps its promises (non-root user, exec-form entrypoint, migrations where the service owns tables).

The RUN steps that install from PyPI are not replayed; their arguments must be folders the stage copied.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"billing": "billing", "notifier": "notifier", "webhook-gateway": "gateway"}
OWNS_TABLES = {"billing", "notifier"}
LOCAL_PACKAGES = {
    tomllib.loads((d / "pyproject.toml").read_text())["project"]["name"]: f"services/{d.name}"
    for d in (ROOT / "services").iterdir() if (d / "pyproject.toml").exists()
}


def stages(service: str) -> list[list[dict]]:
    parser = DockerfileParser(path=str(ROOT / "services" / service / "Dockerfile"))
    out: list[list[dict]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            out.append([])
        if instruction["instruction"] != "COMMENT":
            out[-1].append(instruction)
    return out


def local_dependencies(service: str) -> set[str]:
    """The service's own folder and, transitively, the project's packages it depends on."""
    todo, found = [f"services/{service}"], set()
    while todo:
        folder = todo.pop()
        found.add(folder)
        project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
        todo += [LOCAL_PACKAGES[d] for d in project.get("dependencies", []) if d in LOCAL_PACKAGES]
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_build_stage_generates_the_protobuf_code_and_installs_every_local_package(service, tmp_path):
    build, _runtime = stages(service)
    workdir = tmp_path
    generated = False
    for step in build[1:]:
        kind, value = step["instruction"], step["value"]
        if kind == "WORKDIR":
            workdir = tmp_path / value.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif kind == "COPY":
            *sources, destination = shlex.split(value)
            for source in sources:
                origin, target = ROOT / source, workdir / destination
                assert origin.exists(), f"COPY {source}: not in the repository"
                if origin.is_dir():
                    shutil.copytree(origin, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*_pb2*.py*"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(origin, target)
        elif kind == "RUN" and "grpc_tools.protoc" in value:
            command = value.replace("/opt/venv/bin/python", shlex.quote(sys.executable))
            subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=workdir, check=True)
            generated = True
        elif kind == "RUN" and "pip install" in value and "services/" in value:
            installed = set(re.findall(r"(services/[\w-]+)", value))
            assert installed == local_dependencies(service), "the image must install exactly what the service needs"
            for folder in installed:
                assert (workdir / folder / "pyproject.toml").exists(), f"{folder} is installed but was not copied"
    assert generated, "the build stage must generate the protobuf code from protos/"
    contracts = workdir / "services" / "contracts" / "src"
    probe = "import boxcost.billing.v1.billing_pb2_grpc, boxcost.notifier.v1.notifier_pb2_grpc"
    subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True, env={"PYTHONPATH": str(contracts)})


@pytest.mark.parametrize(("service", "package"), SERVICES.items())
def test_runtime_stage_runs_the_service_as_non_root_with_an_exec_form_entrypoint(service, package):
    build, runtime = stages(service)
    assert build[0]["value"].endswith(" AS build") and runtime[0]["value"].startswith("python:3.11-slim")
    by_kind: dict[str, list[str]] = {}
    for step in runtime:
        by_kind.setdefault(step["instruction"], []).append(step["value"])
    user = by_kind["USER"][-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"USER {user} must be a numeric non-root uid:gid"
    assert json.loads(by_kind["ENTRYPOINT"][-1]) == ["python", "-m", package]
    copies = by_kind["COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies
    if service in OWNS_TABLES:
        assert f"services/{service}/migrations/ /app/migrations/" in copies
        assert any("MIGRATIONS_DIR=/app/migrations" in env for env in by_kind["ENV"])


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_installs_packages_only_from_the_lock_with_hashes_checked(service):
    build, _runtime = stages(service)
    installs = [s["value"] for s in build if s["instruction"] == "RUN" and "pip install" in s["value"]]
    assert installs, "the build stage installs its packages"
    for command in installs:
        if "services/" in command:  # the project's own packages: their dependencies come from the lock
            assert "--no-deps" in command, command
        else:
            assert "--require-hashes" in command and "-r services.lock" in command, command
    copied = [s["value"] for s in build if s["instruction"] == "COPY"]
    assert "requirements/services.lock ./" in copied
