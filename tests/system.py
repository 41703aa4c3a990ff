"""The real programs some tests run beside chunkswarm, found or explained.

``tests/system_packages.sh`` (the first step of the README's test command) installs them from
Debian's packages. A test that needs one calls :func:`program`: where the program is missing it
skips with the reason and the remedy, except under ``CI=true``, where a missing program is a
failure, so a CI run cannot pass by testing less.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

#: The Debian package that brings each program (for the skip reason).
PACKAGE_OF = {
    "chromium": "chromium",
    "redis-server": "redis-server",
    "aria2c": "aria2",
    "opentracker": "opentracker",
    "wrk": "wrk",
    "syncthing": "syncthing",
    "mktorrent": "mktorrent",
    "ip": "iproute2",
    "curl": "curl",
}

#: Debian's python3-libtorrent is built for the system Python, not for the test venv.
SYSTEM_PYTHON = "/usr/bin/python3"


def _missing(what: str, package: str) -> None:
    reason = (
        f"{what} is not installed (Debian package {package}; "
        "`sh tests/system_packages.sh` as root installs it)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def program(name: str) -> str:
    """The path of program ``name``, or skip (fail under CI) saying how to install it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        _missing(name, PACKAGE_OF.get(name, name))
        raise AssertionError("unreachable")  # pytest.skip/fail raise
    return path


def libtorrent_python() -> str:
    """A Python that imports Debian's libtorrent bindings, or skip (fail under CI)."""
    if os.path.exists(SYSTEM_PYTHON):
        probe = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import libtorrent"], check=False, capture_output=True, timeout=30
        )
        if probe.returncode == 0:
            return SYSTEM_PYTHON
    _missing("libtorrent for Python", "python3-libtorrent")
    raise AssertionError("unreachable")
