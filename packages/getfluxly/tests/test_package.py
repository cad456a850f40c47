"""Packaging and architecture rules of the SDK."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import getfluxly

PACKAGE = Path(__file__).resolve().parents[1]


def test_public_names() -> None:
    assert getfluxly.__all__ == ["AsyncClient", "Client", "GFluxError", "__version__"]
    for name in getfluxly.__all__:
        assert hasattr(getfluxly, name)


def test_version_matches_pyproject() -> None:
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    assert getfluxly.__version__ == meta["project"]["version"]


def test_typed() -> None:
    assert (PACKAGE / "src" / "getfluxly" / "py.typed").is_file()


def test_depends_on_neither_fluxmail_nor_the_server() -> None:
    code = (
        "import sys, getfluxly, getfluxly.client, getfluxly.aclient\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fluxmail', 'getfluxly_server', 'flux_testkit'))\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    deps = " ".join(meta["project"]["dependencies"])
    assert "fluxmail" not in deps
    assert "getfluxly-server" not in deps
