"""The import rules (root ``pyproject.toml``, ``[tool.importlinter]``) hold, and would catch a
breach: the real ``lint-imports`` runs as a subprocess on the tree as it is, and on a copy of
the server with one API module reaching into storage."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import getfluxly_server

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
ROOT = Path(__file__).resolve().parents[3]
SERVER = Path(getfluxly_server.__file__).parent


def lint_imports(
    config: Path, *, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath) if pythonpath else ""}
    return subprocess.run(
        [str(LINT_IMPORTS), str(config), "--no-cache", "--no-logo"],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=config.parent,
    )  # fmt: skip


def test_the_tree_keeps_every_contract() -> None:
    run = lint_imports(ROOT / "pyproject.toml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_an_api_module_importing_storage_breaks_the_layering(tmp_path: Path) -> None:
    copy = tmp_path / "src" / "getfluxly_server"
    shutil.copytree(SERVER, copy, ignore=shutil.ignore_patterns("__pycache__"))
    offender = copy / "api" / "projects.py"
    source = offender.read_text()
    marker = "from __future__ import annotations\n"
    offender.write_text(
        source.replace(marker, marker + "from getfluxly_server.storage import tenancy as _x\n", 1)
    )
    config = tmp_path / "pyproject.toml"
    shutil.copy(ROOT / "pyproject.toml", config)

    run = lint_imports(config, pythonpath=tmp_path / "src")
    assert run.returncode != 0, run.stdout
    assert "getfluxly_server.api is not allowed to import getfluxly_server.storage" in run.stdout
    assert "getfluxly_server.api.projects -> getfluxly_server.storage.tenancy" in run.stdout

    # The same copy without the offending line keeps every contract: the failure above is
    # that line's, not the copy's.
    offender.write_text(source)
    clean = lint_imports(config, pythonpath=tmp_path / "src")
    assert clean.returncode == 0, clean.stdout + clean.stderr
