"""``getfluxly dev``: one command from nothing to a working install on this machine.

It creates (or reuses) the SQLite database in the data dir, migrates it, makes sure a workspace
and a project exist, issues fresh keys (printed once, as ``NAME=value`` lines a shell can
``eval``) and revokes the ones the previous run printed (keys named :data:`DEV_KEY_NAME`;
keys made through the API are left alone), starts a built-in SMTP catcher whose mail the API
lists at /v1/dev/messages, and
registers the catcher as the project's email provider, verified like any other. It also
makes sure the dashboard's dev admin (:data:`DEV_ADMIN_EMAIL`, role admin) exists with a
fresh password, printed with the keys (the previous run's password stops working).

Caught mail belongs to one workspace: the one the sender logged in as (the catcher takes a
workspace id as its AUTH login, any password: the provider registered here logs in with its
own workspace's), else the dev install's own workspace (an app sending without AUTH).
``GET /v1/dev/messages`` shows a workspace its own mail only.

Dev mode starts with ``GETFLUXLY_MULTI_TENANT_GUARD`` on too: :func:`with_catcher` allows the
catcher's exact address (127.0.0.1 and its port) under the guard, and nothing else on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import warnings
from dataclasses import dataclass, replace
from email import policy
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import select

from getfluxly_server.app import build_context
from getfluxly_server.domain import providers, tenancy, users
from getfluxly_server.domain.dev_messages import MESSAGE_ID_HEADER, ledger_id
from getfluxly_server.settings import Settings
from getfluxly_server.storage import dev_messages
from getfluxly_server.storage import tenancy as tenancy_store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import EmailProvider, Project, Workspace

log = logging.getLogger("getfluxly.dev")
CATCHER_NAME = "Dev catcher"
#: The catcher accepts any password; its AUTH login names the workspace the mail is for.
CATCHER_PASSWORD = "dev"  # noqa: S105 - not a secret: the catcher checks no password
#: The name of the keys ``getfluxly dev`` prints: each run revokes the previous run's.
DEV_KEY_NAME = "getfluxly dev"
#: The dashboard's dev admin: each run gives it a fresh password (printed) and ends its sessions.
DEV_ADMIN_EMAIL = "admin@getfluxly.test"


class _Store:
    """aiosmtpd handler: every message into the dev_messages table, accepted."""

    def __init__(self, db: Database) -> None:
        self.db = db
        #: Whose mail an unauthenticated sender's is (set by :func:`prepare`).
        self.workspace_id: str | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = bytes(envelope.original_content or envelope.content)
        message = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        subject = str(message.get("Subject", ""))
        ledger_message = ledger_id(message.get(MESSAGE_ID_HEADER))

        login = session.auth_data if isinstance(session.auth_data, str) else None

        def save() -> int:
            with self.db.transaction() as session_:
                owner = self.workspace_id
                if login is not None and dev_messages.workspace_exists(session_, login):
                    owner = login
                row = dev_messages.add(
                    session_,
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    subject,
                    raw,
                    owner,
                    getfluxly_message_id=ledger_message,
                )
                return row.id

        # The database call blocks; keep the catcher's event loop free meanwhile.
        message_id = await asyncio.get_running_loop().run_in_executor(None, save)
        log.info("caught message %s for %s: %s", message_id, ", ".join(envelope.rcpt_tos), subject)
        return f"250 OK queued as dev-{message_id}"


def _any_login(
    _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
) -> AuthResult:
    """Any login succeeds; the login is kept (``session.auth_data``) to say whose mail it is."""
    login = getattr(data, "login", b"")
    text = login.decode("utf-8", "replace") if isinstance(login, bytes) else str(login)
    return AuthResult(success=True, auth_data=text)


class Catcher:
    """The built-in SMTP server of dev mode, on 127.0.0.1 (AUTH accepted without TLS)."""

    def __init__(self, db: Database, port: int = 0) -> None:
        self._store = _Store(db)
        with warnings.catch_warnings():
            # aiosmtpd warns that AUTH without TLS is unsafe: true, and the point here.
            warnings.simplefilter("ignore")
            self._controller = Controller(
                self._store,
                hostname="127.0.0.1",
                port=_port_or_free(port),
                authenticator=_any_login,
                auth_require_tls=False,
            )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._controller.port}"

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def workspace_id(self) -> str | None:
        """The workspace that mail sent without AUTH (or as an unknown login) belongs to."""
        return self._store.workspace_id

    @workspace_id.setter
    def workspace_id(self, value: str | None) -> None:
        self._store.workspace_id = value

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


def _port_or_free(preferred: int) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port (0 means any)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            log.warning("port %d is taken; the catcher listens on another port", preferred)
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class DevInstall:
    project_id: str
    workspace_key: str
    server_key: str
    publishable_key: str
    provider_id: str
    admin_email: str = DEV_ADMIN_EMAIL
    admin_password: str = ""


def with_catcher(settings: Settings, catcher: Catcher) -> Settings:
    """``settings`` whose network policy lets providers reach the catcher even under the
    multi-tenant guard (by its exact host and port, nothing else on this machine)."""
    allowed = settings.private_relay_allowlist.with_endpoint("127.0.0.1", catcher.port)
    return replace(settings, private_relay_allowlist=allowed)


def prepare(settings: Settings, db: Database, catcher: Catcher) -> DevInstall:
    """Workspace, project and fresh keys; the catcher registered (and verified) as provider."""
    with db.transaction() as session:
        workspace = session.scalars(select(Workspace).order_by(Workspace.created_at)).first()
        if workspace is None:
            workspace = tenancy_store.add_workspace(session, "Dev workspace")
        else:
            # The previous run printed keys to a terminal (and maybe a shell history):
            # only this run's keys work from now on.
            revoked = tenancy_store.revoke_named(session, workspace.id, DEV_KEY_NAME)
            log.info("revoked the %d keys the previous dev run printed", revoked)
        query = select(Project).where(Project.workspace_id == workspace.id)
        project = session.scalars(query.order_by(Project.created_at)).first()
        if project is None:
            project = tenancy_store.add_project(session, workspace.id, "Dev project")
        workspace_key = tenancy.issue_key(session, "workspace", workspace.id, None, DEV_KEY_NAME)
        secret = tenancy.issue_key(session, "secret", workspace.id, project.id, DEV_KEY_NAME)
        publishable = tenancy.issue_key(
            session, "publishable", workspace.id, project.id, DEV_KEY_NAME
        )
        principal = tenancy.authenticate(session, workspace_key.plaintext)
        # Like the keys, the previous run's password stops working now.
        admin_password = secrets.token_urlsafe(18)
        users.ensure_user(session, workspace.id, DEV_ADMIN_EMAIL, "admin", admin_password)
        existing = session.scalars(
            select(EmailProvider).where(
                EmailProvider.project_id == project.id,
                EmailProvider.display_name == CATCHER_NAME,
            )
        ).first()
        existing_id = existing.id if existing is not None else None
    catcher.workspace_id = workspace.id
    body = {
        "provider": "smtp",
        "display_name": CATCHER_NAME,
        "from_email": "hello@getfluxly.test",
        "from_name": "GetFluxly Dev",
        "smtp_host": "127.0.0.1",
        "smtp_port": catcher.port,
        "smtp_secure": "none",
        "username": workspace.id,  # the catcher files what it logs in with under this workspace
        "password": CATCHER_PASSWORD,
    }
    draft = providers.parse(body)
    providers.verify(draft, build_context(settings))
    with db.transaction() as session:
        if existing_id is None:
            provider_id = providers.save_new(
                session, principal, project.id, draft, settings.keyring
            ).id
        else:
            row = providers.find(session, principal, existing_id)
            providers.apply(row, draft, settings.keyring, verified=True)
            provider_id = row.id
    return DevInstall(
        project.id,
        workspace_key.plaintext,
        secret.plaintext,
        publishable.plaintext,
        provider_id,
        admin_password=admin_password,
    )


def exports(settings: Settings, install: DevInstall, catcher: Catcher) -> str:
    """The ``NAME=value`` lines ``getfluxly dev`` prints (shell-safe: no quoting needed)."""
    values = {
        "GETFLUXLY_URL": f"http://{settings.host}:{settings.port}",
        "GETFLUXLY_PROJECT_ID": install.project_id,
        "GETFLUXLY_WORKSPACE_KEY": install.workspace_key,
        "GETFLUXLY_SERVER_KEY": install.server_key,
        "GETFLUXLY_PUBLISHABLE_KEY": install.publishable_key,
        "GETFLUXLY_CATCHER_SMTP": catcher.address,
        "GETFLUXLY_DASHBOARD_URL": f"http://{settings.host}:{settings.port}/",
        "GETFLUXLY_ADMIN_EMAIL": install.admin_email,
        "GETFLUXLY_ADMIN_PASSWORD": install.admin_password,
    }
    return "".join(f"{name}={value}\n" for name, value in values.items())


__all__ = ["Catcher", "DevInstall", "exports", "prepare", "with_catcher"]
