"""``getfluxly dev`` end to end: the real command as a subprocess, driven over HTTP and SMTP.

Spec section 7 promises one command that starts everything on one machine with an embedded
SQLite database and a built-in SMTP catcher whose mail shows in the dashboard. These tests run
the installed console script exactly as a newcomer would (clean environment: no ``GETFLUXLY_*``
variable leaks in from the developer's shell or CI) and check what it prints, that the printed
keys drive the documented flow, where it keeps its data, how a second run behaves, and that it
stops cleanly on a signal.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx
import pytest

from fluxmail import FluxMail

#: The console script installed next to the interpreter running the tests (the venv's bin).
GETFLUXLY = Path(sys.executable).with_name("getfluxly")
EXPORT_NAMES = (
    "GETFLUXLY_URL",
    "GETFLUXLY_PROJECT_ID",
    "GETFLUXLY_WORKSPACE_KEY",
    "GETFLUXLY_SERVER_KEY",
    "GETFLUXLY_PUBLISHABLE_KEY",
    "GETFLUXLY_CATCHER_SMTP",
    "GETFLUXLY_DASHBOARD_URL",
    "GETFLUXLY_ADMIN_EMAIL",
    "GETFLUXLY_ADMIN_PASSWORD",
)
#: Characters a bare shell word may hold without quoting (what ``eval`` must survive intact).
SHELL_SAFE = re.compile(r"[A-Za-z0-9_:/.@%+,=-]+")
# Generous: on a machine shared by many test runs, imports alone can take most of 20 s.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
    return port


def clean_env() -> dict[str, str]:
    """HOME and PATH only: a developer's or CI's GETFLUXLY_* must not change what dev does."""
    return {name: os.environ[name] for name in ("HOME", "PATH") if name in os.environ}


class DevProcess:
    """One ``getfluxly dev`` process: started, its nine exports parsed, its API up.

    stdout and stderr go to files rather than pipes: the server logs every SMTP session on
    stderr, and an undrained pipe would eventually block it.
    """

    def __init__(self, data_dir: Path, workdir: Path, *, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.workdir = workdir
        self.port = port or free_port()
        self.stdout_path = workdir / f"dev-{self.port}.out"
        self.stderr_path = workdir / f"dev-{self.port}.err"
        self.exports: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DevProcess:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [str(GETFLUXLY), "dev", "--port", str(self.port), "--data-dir", str(self.data_dir)],
                stdout=out,
                stderr=err,
                env=clean_env(),
                # The default data dir is relative (.getfluxly): run elsewhere than the repo so
                # an ignored --data-dir would show up as a stray directory, not pollute the tree.
                cwd=self.workdir,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while len(self.stdout().splitlines()) < len(EXPORT_NAMES):
            self._check_alive(deadline, "print its exports")
            time.sleep(0.05)
        self.exports = dict(line.split("=", 1) for line in self.stdout().splitlines())
        # The exports are printed before uvicorn binds the port: wait until it answers.
        while True:
            self._check_alive(deadline, "answer /healthz")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)

    def _check_alive(self, deadline: float, what: str) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"getfluxly dev exited ({self.process.returncode}):\n{self.stderr()}")
        if time.monotonic() > deadline:
            self.stop(signal.SIGKILL)
            pytest.fail(f"getfluxly dev did not {what} in {START_TIMEOUT:g} s:\n{self.stderr()}")

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def url(self) -> str:
        return self.exports["GETFLUXLY_URL"]

    def client(self, key: str | None = None) -> httpx.Client:
        """An API client authenticated with ``key`` (default: the printed workspace key)."""
        key = key or self.exports["GETFLUXLY_WORKSPACE_KEY"]
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30.0
        )

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status (negative: by signal)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"getfluxly dev ignored signal {sig} for {STOP_TIMEOUT:g} s")
        return self.process.returncode

    def __enter__(self) -> DevProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A test that failed midway leaves the server running: stop it, politely first.
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    """One dev install shared by the read-mostly tests of this module (starting costs ~1 s)."""
    workdir = tmp_path_factory.mktemp("dev")
    with DevProcess(workdir / "data", workdir) as process:
        yield process


def assert_clean_exit(process: DevProcess, status: int, sig: int) -> None:
    """Stopped by ``sig`` without a traceback.

    Accepted statuses: 0, 130 (KeyboardInterrupt turned into an exit code by the CLI) or
    death by the same signal: uvicorn re-raises the signal it caught after its own graceful
    shutdown, and for SIGTERM the default action ends the process at that point.
    """
    assert status in (0, 128 + sig, -sig), (status, process.stderr())
    stderr = process.stderr()
    assert "Traceback" not in stderr, stderr
    assert " ERROR " not in stderr, stderr


# -- what it prints -----------------------------------------------------------------------------


def test_prints_exactly_the_nine_exports(dev: DevProcess) -> None:
    """stdout is nine NAME=value lines in the documented order, nothing else."""
    lines = dev.stdout().splitlines()
    assert [line.split("=", 1)[0] for line in lines] == list(EXPORT_NAMES)
    assert dev.stdout().endswith("\n")
    for line in lines:
        name, value = line.split("=", 1)
        assert SHELL_SAFE.fullmatch(value), f"{name} needs quoting: {value!r}"
    values = dev.exports
    assert values["GETFLUXLY_URL"] == f"http://127.0.0.1:{dev.port}"
    assert values["GETFLUXLY_PROJECT_ID"].startswith("prj_")
    assert values["GETFLUXLY_WORKSPACE_KEY"].startswith("gf_live_")
    assert values["GETFLUXLY_SERVER_KEY"].startswith("gflux_secret_")
    assert values["GETFLUXLY_PUBLISHABLE_KEY"].startswith("gflux_pub_")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", values["GETFLUXLY_CATCHER_SMTP"])
    assert values["GETFLUXLY_DASHBOARD_URL"] == f"http://127.0.0.1:{dev.port}/"
    assert values["GETFLUXLY_ADMIN_EMAIL"] == "admin@getfluxly.test"
    assert len(values["GETFLUXLY_ADMIN_PASSWORD"]) >= 20


def test_exports_survive_eval_in_bash(dev: DevProcess, tmp_path: Path) -> None:
    """``eval "$(getfluxly dev ...)"`` is the documented use: bash must get every value back."""
    exports = tmp_path / "exports"
    exports.write_text(dev.stdout())
    script = 'eval "$(cat "$1")"; ' + "; ".join(
        f'printf "%s\\n" "${name}"' for name in EXPORT_NAMES
    )
    result = subprocess.run(
        ["bash", "-c", script, "bash", str(exports)],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    )
    assert result.stderr == ""
    assert result.stdout.splitlines() == [dev.exports[name] for name in EXPORT_NAMES]


def test_data_dir_is_honoured(dev: DevProcess) -> None:
    """The SQLite database and the generated encryption key live in --data-dir, nowhere else."""
    assert (dev.data_dir / "getfluxly.db").is_file()
    key_file = dev.data_dir / "encryption.key"
    assert key_file.is_file()
    # The key decrypts every stored provider password: only its owner may read it.
    assert key_file.stat().st_mode & 0o077 == 0
    # So does the database, which holds personal data and key hashes (issue 10, finding 7),
    # and the write-ahead log and shared memory next to it, which hold its recent pages.
    for name in ("getfluxly.db", "getfluxly.db-wal", "getfluxly.db-shm"):
        assert (dev.data_dir / name).is_file(), name
        mode = (dev.data_dir / name).stat().st_mode & 0o777
        assert mode == 0o600, (name, oct(mode))
    assert not (dev.workdir / ".getfluxly").exists()


# -- the spec's flow against it -----------------------------------------------------------------


def catcher_provider(dev: DevProcess) -> dict[str, object]:
    with dev.client() as api:
        response = api.get(f"/v1/projects/{dev.exports['GETFLUXLY_PROJECT_ID']}/email-providers")
    assert response.status_code == 200, response.text
    [provider] = response.json()["email_providers"]
    return dict(provider)


def messages(dev: DevProcess) -> list[dict[str, object]]:
    with dev.client() as api:
        response = api.get("/v1/dev/messages")
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


def wait_for_subject(dev: DevProcess, subject: str, timeout: float = 5.0) -> dict[str, object]:
    """The caught message with ``subject`` (the catcher stores it asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in messages(dev) if m["subject"] == subject]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            pytest.fail(f"no caught message with subject {subject!r}")
        time.sleep(0.05)


def test_catcher_is_the_projects_verified_provider(dev: DevProcess) -> None:
    """The catcher is registered as an SMTP provider, verified, and shows no secret."""
    provider = catcher_provider(dev)
    host, port = dev.exports["GETFLUXLY_CATCHER_SMTP"].split(":")
    assert provider["provider"] == "smtp"
    assert provider["project_id"] == dev.exports["GETFLUXLY_PROJECT_ID"]
    assert (provider["smtp_host"], provider["smtp_port"]) == (host, int(port))
    assert provider["smtp_secure"] == "none"
    assert provider["verified_at"]
    assert provider["secret_set"] is True
    assert "password" not in provider


def test_test_send_lands_in_dev_messages_newest_first(dev: DevProcess) -> None:
    """POST /v1/email-providers/{id}/test goes through the worker and the catcher, and
    GET /v1/dev/messages lists it newest first with its raw source."""
    provider = catcher_provider(dev)
    with dev.client() as api:
        first = api.post(f"/v1/email-providers/{provider['id']}/test", json={"to": "a@example.com"})
        second = api.post(
            f"/v1/email-providers/{provider['id']}/test", json={"to": "b@example.com"}
        )
    for response, to in ((first, "a@example.com"), (second, "b@example.com")):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["accepted"] is True
        assert body["to"] == to
        assert "dev-" in body["reply"]  # the catcher's "250 OK queued as dev-<id>"
        assert isinstance(body["elapsed_ms"], int)
    caught = [m for m in messages(dev) if str(m["subject"]).startswith("GetFluxly test email")]
    assert [m["rcpt_tos"] for m in caught[:2]] == [["b@example.com"], ["a@example.com"]]
    newest = caught[0]
    assert newest["mail_from"] == provider["from_email"]
    raw = str(newest["raw"])
    assert "To: b@example.com" in raw
    assert f"Subject: GetFluxly test email from {provider['display_name']}" in raw
    assert "If you can read it, the provider is connected" in raw
    assert str(newest["received_at"]).endswith("Z")


def test_fluxmail_sending_to_the_catcher_shows_up(dev: DevProcess) -> None:
    """An app using FluxMail with GETFLUXLY_CATCHER_SMTP as its relay sees its mail listed."""
    host, port = dev.exports["GETFLUXLY_CATCHER_SMTP"].split(":")
    mailer = FluxMail("smtp", host, port=int(port), sender="app@example.com")
    subject = f"Hello from the app {time.monotonic_ns()}"
    mailer.create(subject, ["someone@example.com"], "Body of the app's mail").send()
    caught = wait_for_subject(dev, subject)
    assert caught["mail_from"] == "app@example.com"
    assert caught["rcpt_tos"] == ["someone@example.com"]
    assert "Body of the app's mail" in str(caught["raw"])


def test_caught_mail_names_its_ledger_message(dev: DevProcess) -> None:
    """A caught message carrying a ledger id (the X-GetFluxly-Message-Id header every sent
    message has) names it, and ``?message_id=`` finds what was caught for that message; a
    header that is not a ledger id names nothing."""
    from getfluxly_server.storage.models import new_id

    host, port = dev.exports["GETFLUXLY_CATCHER_SMTP"].split(":")
    mailer = FluxMail("smtp", host, port=int(port), sender="app@example.com")
    ledger_id = new_id("msg")
    ours, forged = f"Ledger {time.monotonic_ns()}", f"Forged {time.monotonic_ns()}"
    for subject, header in ((ours, ledger_id), (forged, "msg_<script>")):
        mailer.create(
            subject, ["ada@example.com"], "Hello", headers={"X-GetFluxly-Message-Id": header}
        ).send()
    assert wait_for_subject(dev, ours)["getfluxly_message_id"] == ledger_id
    assert wait_for_subject(dev, forged)["getfluxly_message_id"] is None
    with dev.client() as api:
        found = api.get("/v1/dev/messages", params={"message_id": ledger_id})
        none = api.get("/v1/dev/messages", params={"message_id": new_id("msg")})
    assert found.status_code == 200, found.text
    assert [m["subject"] for m in found.json()["messages"]] == [ours]
    assert none.json()["messages"] == []


def test_dev_messages_need_a_workspace_key(dev: DevProcess) -> None:
    """The caught mail is a workspace's data: no key → 401, a project key → 403."""
    anonymous = httpx.get(f"{dev.url}/v1/dev/messages", timeout=10.0)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthenticated"
    with dev.client(dev.exports["GETFLUXLY_SERVER_KEY"]) as api:
        response = api.get("/v1/dev/messages")
    assert response.status_code == 403
    assert response.json()["error"] == "wrong_key_type"


def test_dev_messages_are_the_callers_workspaces_only(dev: DevProcess) -> None:
    """Another workspace of the same install sees none of the dev workspace's caught mail, and
    mail sent logged in as that workspace shows to it alone (issue 10, finding 7)."""
    from getfluxly_server.domain import tenancy
    from getfluxly_server.storage.db import Database

    db = Database(f"sqlite:///{(dev.data_dir / 'getfluxly.db').as_posix()}")
    try:
        with db.transaction() as session:
            other, other_key = tenancy.create_workspace(session, "Another team")
    finally:
        db.engine.dispose()
    host, port = dev.exports["GETFLUXLY_CATCHER_SMTP"].split(":")
    ours = f"Ours {time.monotonic_ns()}"
    FluxMail("smtp", host, port=int(port), sender="app@example.com").create(
        ours, ["someone@example.com"], "for the dev workspace"
    ).send()
    theirs = f"Theirs {time.monotonic_ns()}"
    FluxMail(
        "smtp", host, port=int(port), sender="team@example.com", username=other.id,
        password="any", allow_plaintext_auth=True,
    ).create(theirs, ["someone@example.com"], "for the other workspace").send()  # fmt: skip

    wait_for_subject(dev, ours)
    with dev.client(other_key.plaintext) as api:
        deadline = time.monotonic() + 5.0
        while True:
            response = api.get("/v1/dev/messages")
            assert response.status_code == 200, response.text
            subjects = [m["subject"] for m in response.json()["messages"]]
            if theirs in subjects or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert subjects == [theirs]
    assert theirs not in [m["subject"] for m in messages(dev)]


# -- lifecycle ------------------------------------------------------------------------------------


def test_second_run_reuses_the_install_with_new_keys(tmp_path: Path) -> None:
    """A second ``dev`` on the same data dir keeps the workspace, project and provider, prints
    new keys, and revokes the keys the first run printed (issue 10, finding 7); keys made
    through the API survive. Each run stops cleanly: the first on SIGINT (Ctrl-C), the
    second on SIGTERM."""
    data_dir = tmp_path / "data"
    with DevProcess(data_dir, tmp_path) as first:
        first_provider = catcher_provider(first)
        with first.client(first.exports["GETFLUXLY_WORKSPACE_KEY"]) as api:
            made = api.post("/v1/keys", json={"kind": "workspace", "name": "ci"})
        assert made.status_code == 201, made.text
        kept_key = made.json()["key"]["key"]
        status = first.stop(signal.SIGINT)
    assert_clean_exit(first, status, signal.SIGINT)
    # Nothing but the exports ever reaches stdout, shutdown included.
    assert first.stdout().splitlines() == [f"{n}={first.exports[n]}" for n in EXPORT_NAMES]

    with DevProcess(data_dir, tmp_path) as second:
        old, new = first.exports, second.exports
        assert new["GETFLUXLY_PROJECT_ID"] == old["GETFLUXLY_PROJECT_ID"]
        for name in (
            "GETFLUXLY_WORKSPACE_KEY",
            "GETFLUXLY_SERVER_KEY",
            "GETFLUXLY_PUBLISHABLE_KEY",
        ):
            assert new[name] != old[name], name
        # Same workspace: the new workspace key (and one made through the API) see the same
        # single project.
        for key in (kept_key, new["GETFLUXLY_WORKSPACE_KEY"]):
            with second.client(key) as api:
                response = api.get("/v1/projects")
            assert response.status_code == 200, response.text
            projects = response.json()["projects"]
            assert [p["id"] for p in projects] == [new["GETFLUXLY_PROJECT_ID"]]
        # The provider row was updated in place (to the new catcher port), not duplicated.
        provider = catcher_provider(second)
        assert provider["id"] == first_provider["id"]
        port = new["GETFLUXLY_CATCHER_SMTP"].rpartition(":")[2]
        assert provider["smtp_port"] == int(port)
        # Every key the first run printed is revoked: unauthenticated wherever it is tried.
        for name, path in (
            ("GETFLUXLY_WORKSPACE_KEY", "/v1/projects"),
            ("GETFLUXLY_SERVER_KEY", "/v1/events"),
            ("GETFLUXLY_PUBLISHABLE_KEY", "/v1/events"),
        ):
            event = {"event": "page_viewed", "anonymous_id": "a-1"}
            with second.client(old[name]) as api:
                refused = api.request("GET" if path == "/v1/projects" else "POST", path, json=event)
            assert refused.status_code == 401, (name, refused.text)
            assert refused.json()["error"] == "unauthenticated"
        # The dev admin got a new password too: the first run's no longer signs in.
        assert new["GETFLUXLY_ADMIN_EMAIL"] == old["GETFLUXLY_ADMIN_EMAIL"]
        assert new["GETFLUXLY_ADMIN_PASSWORD"] != old["GETFLUXLY_ADMIN_PASSWORD"]
        for password, status in (
            (old["GETFLUXLY_ADMIN_PASSWORD"], 401),
            (new["GETFLUXLY_ADMIN_PASSWORD"], 303),
        ):
            with httpx.Client(base_url=second.url, follow_redirects=False) as browser:
                form = browser.get("/login").text
                token = re.search(r'name="csrf_token" value="([^"]+)"', form)
                assert token is not None
                answer = browser.post(
                    "/login",
                    data={"email": new["GETFLUXLY_ADMIN_EMAIL"], "password": password,
                          "csrf_token": token[1]},
                )  # fmt: skip
            assert answer.status_code == status, answer.text[:300]
        with second.client(new["GETFLUXLY_SERVER_KEY"]) as api:
            accepted = api.post("/v1/events", json={"event": "page_viewed", "anonymous_id": "a"})
        assert accepted.status_code == 202, accepted.text
        status = second.stop(signal.SIGTERM)
    assert_clean_exit(second, status, signal.SIGTERM)


def test_catcher_falls_back_when_2525_is_taken(tmp_path: Path) -> None:
    """Another program on 2525 does not stop dev mode: the catcher takes another port, prints
    it, and registers that port as the provider."""
    try:
        blocker: socket.socket | None = socket.create_server(("127.0.0.1", 2525))
    except OSError:
        blocker = None  # already taken by someone else: the situation under test anyway
    try:
        with DevProcess(tmp_path / "data", tmp_path) as process:
            host, port = process.exports["GETFLUXLY_CATCHER_SMTP"].split(":")
            assert host == "127.0.0.1"
            assert int(port) != 2525
            assert catcher_provider(process)["smtp_port"] == int(port)
            mailer = FluxMail("smtp", host, port=int(port), sender="app@example.com")
            mailer.create("via the fallback port", ["x@example.com"], "hi").send()
            wait_for_subject(process, "via the fallback port")
            assert "port 2525 is taken" in process.stderr()
            assert_clean_exit(process, process.stop(signal.SIGINT), signal.SIGINT)
    finally:
        if blocker is not None:
            blocker.close()


def test_a_transactional_send_goes_from_the_api_through_the_worker_to_the_catcher(
    dev: DevProcess,
) -> None:
    """The README's tour, end to end: a template, ``POST /v1/messages`` with the server key,
    the delivery worker of ``getfluxly dev`` sends it through the project's default provider
    (the catcher), the ledger says ``sent`` with its history, and the caught copy names it."""
    project = dev.exports["GETFLUXLY_PROJECT_ID"]
    stamp = time.monotonic_ns()
    with dev.client() as api:
        made = api.post(
            f"/v1/projects/{project}/templates",
            json={
                "name": f"welcome-{stamp}",
                "subject": "Welcome, {{ data.name }}",
                "html": "<p>Hello {{ data.name }}, "
                "your plan is {{ data.plan | default: 'free' }}.</p>",
            },
        )
        assert made.status_code == 201, made.text
        template_id = made.json()["template"]["id"]
    with dev.client(dev.exports["GETFLUXLY_SERVER_KEY"]) as server:
        queued = server.post(
            "/v1/messages",
            json={"to": "ada@example.com", "template_id": template_id, "data": {"name": "Ada"}},
            headers={"Idempotency-Key": f"welcome-{stamp}"},
        )
    assert queued.status_code == 202, queued.text
    message_id = queued.json()["message"]["id"]
    deadline = time.monotonic() + 30
    with dev.client() as api:
        while True:
            message = api.get(f"/v1/messages/{message_id}").json()["message"]
            if message["status"] not in ("queued", "sending"):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"message still {message['status']}: {message}")
            time.sleep(0.05)
        caught = api.get("/v1/dev/messages", params={"message_id": message_id}).json()
    assert message["status"] == "sent", message
    assert message["subject"] == "Welcome, Ada"
    assert [h["status"] for h in message["history"]] == ["queued", "sent"]
    [copy] = caught["messages"]
    assert copy["rcpt_tos"] == ["ada@example.com"]
    assert "Hello Ada, your plan is free." in str(copy["raw"])
