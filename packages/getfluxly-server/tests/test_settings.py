"""Booting with a bad environment: ``getfluxly serve`` refuses to start, clearly.

Contract (spec section 7, cli.py): a bad or missing ``GETFLUXLY_*`` value makes the command
exit 1 before anything starts, with ``Invalid GetFluxly configuration:`` and one ``- `` line per
problem naming its variable; never a traceback, never the value of a secret. The logic is unit
tested in test_settings_unit.py; these tests run the real command as a subprocess, several at
once (each start costs about a second of imports).
"""

from __future__ import annotations

import base64
import secrets
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flux_testkit.gfserver import Harness, ServerEnv, free_port, new_encryption_key
from flux_testkit.smtpd import closed_port

#: A key of the wrong length (16 bytes): its material must never be echoed back.
SHORT_KEY = base64.b64encode(secrets.token_bytes(16)).decode()

#: case → environment overrides; the message must name each of their variables, once. Few
#: cases, each with several problems: every run costs a second of CPU on a two-core machine.
BAD_ENVIRONMENTS: dict[str, dict[str, str | None]] = {
    "everything at once": {
        "GETFLUXLY_PORT": "80a",  # malformed
        "GETFLUXLY_PUBLIC_URL": "getfluxly.example.com",  # not a URL
        "GETFLUXLY_ENCRYPTION_KEYS": f"k1:{SHORT_KEY}",  # 16 bytes, not 32
        "GETFLUXLY_JOB_LEASE_SECONDS": "0",
        "GETFLUXLY_WORKER_THREADS": "0",
        "GETFLUXLY_SMTP_TIMEOUT": "soon",
        "GETFLUXLY_TEST_SEND_TIMEOUT": "-1",
        "GETFLUXLY_LOG_LEVEL": "LOUD",
        "GETFLUXLY_MULTI_TENANT_GUARD": "maybe",
        "GETFLUXLY_PRIVATE_RELAY_ALLOWLIST": "relay.internal,10.0.0.0/33",  # no such CIDR
    },
    "missing key outside dev": {"GETFLUXLY_ENCRYPTION_KEYS": None},
}


def _serve_all(
    harness: Harness, tmp_path: Path, cases: Mapping[str, ServerEnv]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """``getfluxly serve`` once per case, all at once, each on its own (unmigrated) SQLite
    file and free port, with a valid key unless the case says otherwise."""

    def serve(name: str, overrides: ServerEnv) -> subprocess.CompletedProcess[str]:
        env = harness.base_env(
            {
                "GETFLUXLY_DATABASE_URL": f"sqlite:///{tmp_path / name.replace(' ', '-')}.db",
                "GETFLUXLY_ENCRYPTION_KEYS": new_encryption_key(),
            },
            overrides,
        )
        port = str(free_port())
        return harness.run_cli(["serve", "--port", port], env, check=False, timeout=60)

    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(serve, name, env) for name, env in cases.items()}
        return {name: future.result() for name, future in futures.items()}


def test_serve_refuses_a_bad_environment_naming_each_variable(
    gf_harness: Harness, tmp_path: Path
) -> None:
    cases: dict[str, ServerEnv] = {**BAD_ENVIRONMENTS, "not migrated": {}}
    results = _serve_all(gf_harness, tmp_path, cases)

    failures = []
    for name, overrides in BAD_ENVIRONMENTS.items():
        result, variables = results[name], list(overrides)
        lines = result.stderr.strip().splitlines()
        problems = [line for line in lines[1:] if line.startswith("- ")]
        if result.returncode != 1 or "Traceback" in result.stderr or result.stdout:
            failures.append(f"{name}: exit {result.returncode}\n{result.stderr}")
        elif lines[:1] != ["Invalid GetFluxly configuration:"]:
            failures.append(f"{name}: no heading\n{result.stderr}")
        elif len(problems) != len(variables) or not all(
            any(line.startswith(f"- {variable}") for line in problems) for variable in variables
        ):
            failures.append(f"{name}: want one line for each of {variables}\n{result.stderr}")
        elif SHORT_KEY in result.stderr:
            failures.append(f"{name}: the key material was echoed\n{result.stderr}")
    assert not failures, "\n\n".join(failures)

    missing = results["missing key outside dev"].stderr
    assert "getfluxly keys generate-encryption-key" in missing  # says what to do

    # A good environment on a database nobody migrated: refused too, and it says what to run.
    unmigrated = results["not migrated"]
    assert unmigrated.returncode == 2, unmigrated.stderr
    assert "run `getfluxly migrate` first" in unmigrated.stderr
    assert "Traceback" not in unmigrated.stderr


def test_serve_refuses_a_bad_database_url_clearly(gf_harness: Harness, tmp_path: Path) -> None:
    password = f"pw-{secrets.token_hex(4)}"
    # Also a traceback today: "nonsense" (ArgumentError), "mysql://..." (no MySQLdb).
    results = _serve_all(
        gf_harness,
        tmp_path,
        {
            "unreachable": {
                "GETFLUXLY_DATABASE_URL": f"postgresql://u:{password}@127.0.0.1:{closed_port()}/db"
            },
        },
    )
    for name, result in results.items():
        assert result.returncode == 1, f"{name}: exit {result.returncode}"
        assert "Traceback" not in result.stderr, f"{name}:\n{result.stderr}"
        assert "GETFLUXLY_DATABASE_URL" in result.stderr, name
        assert password not in result.stderr


def test_generating_the_first_encryption_key_needs_no_configuration(
    gf_harness: Harness,
) -> None:
    result = gf_harness.run_cli(["keys", "generate-encryption-key"], gf_harness.base_env())
    kid, _, key = result.stdout.strip().partition(":")
    assert kid
    assert len(base64.b64decode(key)) == 32
