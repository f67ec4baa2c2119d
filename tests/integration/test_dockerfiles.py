"""The one Dockerfile, checked for each service without a Docker engine: its build stage is replayed from
the checkout with SERVICE set (the COPY steps, and the RUN step that generates the protobuf code), and the
runtime stage keeps its promises (non-root user, exec-form entrypoint, migrations where the service owns
tables, packages only from the lock).

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
    tomllib.loads((d / "pyproject.toml").read_text())["project"]["name"]: f"{d.parent.name}/{d.name}"
    for top in ("services", "libs") for d in (ROOT / top).iterdir() if (d / "pyproject.toml").exists()
}


def stages(service: str) -> list[list[dict]]:
    """The Dockerfile's stages, each a list of instructions, with SERVICE as a build argument would set it."""
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"), build_args={"SERVICE": service})
    out: list[list[dict]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            out.append([])
        if instruction["instruction"] != "COMMENT":
            value = instruction["value"].replace("${SERVICE}", service).replace("$SERVICE", service)
            out[-1].append({**instruction, "value": value})
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


def _not_in_the_build_context(folder: str, names: list[str]) -> set[str]:
    """What .dockerignore leaves out of a copied folder: caches, and the checkout's generated code."""
    left_out = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(folder).as_posix().endswith("libs/contracts/src"):
        left_out.add("boxcost")
    return left_out


@pytest.mark.parametrize("service", SERVICES)
def test_build_stage_generates_the_protobuf_code_and_installs_every_local_package(service, tmp_path):
    build, _runtime = stages(service)
    workdir = tmp_path
    generated = False
    installed: set[str] = set()
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
                    shutil.copytree(origin, target, dirs_exist_ok=True, ignore=_not_in_the_build_context)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(origin, target)
        elif kind == "RUN" and "grpc_tools.protoc" in value:
            command = value.replace("/opt/venv/bin/python", shlex.quote(sys.executable))
            subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=workdir, check=True)
            generated = True
        elif kind == "RUN" and "pip install" in value and "services/" in value:
            installed = set(re.findall(r"((?:services|libs)/[\w-]+)", value))
            for folder in installed:
                assert (workdir / folder / "pyproject.toml").exists(), f"{folder} is installed but was not copied"
    assert generated, "the build stage must generate the protobuf code from protos/"
    # Every library the service needs (the image holds all of them: one recipe for three services).
    assert local_dependencies(service) <= installed and f"services/{service}" in installed
    contracts = workdir / "libs" / "contracts" / "src"
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
    assert json.loads(by_kind["ENTRYPOINT"][-1]) == ["boxcost-service"]
    # The one command every service installs runs this service's entry point.
    scripts = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"boxcost-service": f"{package}.__main__:run"}
    copies = by_kind["COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies
    assert "--from=build /app/migrations/ /app/migrations/" in copies
    assert any("MIGRATIONS_DIR=/app/migrations" in env for env in by_kind["ENV"])
    migrations_copied = any(f"services/{service}/migrations/. /app/migrations/" in s["value"] for s in build)
    assert migrations_copied and ((ROOT / "services" / service / "migrations").is_dir() == (service in OWNS_TABLES))


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


def test_build_context_leaves_out_the_checkouts_virtualenv_and_generated_code():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "libs/contracts/src/boxcost"} <= set(ignored)
