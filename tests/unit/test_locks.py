"""Every package the services and the tests install is pinned to one version with its hashes, and what the
services declare is in the lock their images install from."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(lock: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of each requirement in a lock file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", (LOCKS / lock).read_text()):
        first = block.split("\n", 1)[0]
        if not first or first.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)==([^\s\\;]+)", first)
        assert match, f"{lock}: {first!r} is not pinned to one version"
        entries[_normal(match[1])] = (match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return entries


@pytest.mark.parametrize("lock", ["services.lock", "dev.lock", "pgserver.lock"])
def test_every_locked_package_has_one_version_and_its_hashes(lock):
    entries = pinned(lock)
    assert entries
    assert [name for name, (_, hashes) in entries.items() if not hashes] == []


def test_the_dev_lock_pins_every_service_package_at_the_same_version():
    services, dev = pinned("services.lock"), pinned("dev.lock")
    assert {name: version for name, (version, _) in services.items()} == {
        name: dev[name][0] for name in services if name in dev}
    assert set(services) <= set(dev)


def test_every_dependency_a_service_package_declares_is_in_the_images_lock():
    local = set()
    declared = set()
    for pyproject in [*(ROOT / "services").glob("*/pyproject.toml"), *(ROOT / "libs").glob("*/pyproject.toml")]:
        project = tomllib.loads(pyproject.read_text())["project"]
        local.add(_normal(project["name"]))
        declared.update(_normal(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in project.get("dependencies", []))
    assert declared - local - set(pinned("services.lock")) == set()
