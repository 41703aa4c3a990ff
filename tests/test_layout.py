"""The house rules, checked: the import layering and the size of modules.

* ``common/`` is sans-I/O: it imports neither trio, sockets, nor any other package of ours.
* ``tracker/`` and ``peer/`` are the engine: they never import each other, nor the app.
* Only the app (``chunkswarm/``) imports click and rich.
* No module is over about 400 lines: one job each.
* Every third-party import is a declared dependency, and every dependency is used.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("common", "tracker", "peer", "chunkswarm")
#: What each package may not import (top-level module names).
FORBIDDEN = {
    "common": {"tracker", "peer", "chunkswarm", "trio", "socket", "select", "click", "rich"},
    "tracker": {"peer", "chunkswarm", "click", "rich"},
    "peer": {"tracker", "chunkswarm", "click", "rich"},
    "chunkswarm": set(),
}
#: A module a little over this is fine; one twice as large has two jobs.
MAX_LINES = 420


def _modules() -> list[pathlib.Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layering(path: pathlib.Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    wrong = _imports(path) & FORBIDDEN[package]
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}: {package}/ may not"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_own_one_thing(path: pathlib.Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by what it owns"


def test_the_checks_see_every_package() -> None:
    # A typo in PACKAGES would make the tests above pass on nothing.
    found = {path.relative_to(ROOT).parts[0] for path in _modules()}
    assert found == set(PACKAGES)


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """What the packages import is installed by ``pip install .``: every import is in install_requires."""
    import configparser
    import re
    import sys

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    declared = {re.split(r"[<>=!~ ]", line.strip())[0].lower().replace("-", "_")
                for line in setup["options"]["install_requires"].splitlines() if line.strip()}  # fmt: skip
    ours = set(PACKAGES)
    imported = set().union(*(_imports(path) for path in _modules()), _imports(ROOT / "demo.py"), _imports(ROOT / "demo_peer.py"))
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name not in ours and name != "__future__"}
    assert third_party <= declared, f"imported but not in install_requires: {sorted(third_party - declared)}"
    assert declared <= third_party, f"in install_requires but never imported: {sorted(declared - third_party)}"
