"""Each service package declares every library its code imports. An image installs a service from its
pyproject and the lock (its Dockerfile), not from the test environment's wider one, so an import
declared nowhere passes every other test and stops the service at its first start in a container."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The services and their shared libraries, as "services/billing", "libs/pg-kit", ...
PACKAGES = sorted(f"{top}/{p.name}" for top in ("services", "libs") for p in (ROOT / top).iterdir()
                  if (p / "pyproject.toml").is_file())


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project(folder: str) -> dict:
    return tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]


_LOCAL = {_normal(_project(folder)["name"]): folder for folder in PACKAGES}


def _declared(folder: str) -> set[str]:
    """The distributions a package may import: what it declares, and what its local packages declare."""
    names: set[str] = set()
    for requirement in _project(folder).get("dependencies", []):
        name = _normal(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
        names.add(name)
        if name in _LOCAL:
            names |= _declared(_LOCAL[name])
    return names


# The project's own top-level modules (billing, servicekit, the generated boxcost, ...): declared through
# the local packages, which the check follows.
_OWN = {child.name.removesuffix(".py") for folder in PACKAGES for child in (ROOT / folder / "src").iterdir()
        if not child.name.endswith(".egg-info")}


def _imported(folder: str) -> set[str]:
    """The top-level modules the package's code imports, the project's and the standard library's left out."""
    modules: set[str] = set()
    for path in (ROOT / folder / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - _OWN - set(sys.stdlib_module_names) - {"__future__"}


@pytest.mark.parametrize("folder", PACKAGES)
def test_every_library_a_service_imports_is_declared_in_its_pyproject(folder):
    distributions = importlib.metadata.packages_distributions()
    declared = _declared(folder)
    undeclared = {
        module for module in _imported(folder)
        if not declared & {_normal(d) for d in distributions.get(module, [module])}
    }
    assert not undeclared, f"{folder} imports {sorted(undeclared)} without declaring them"
