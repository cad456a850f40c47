"""Provider secrets at rest: encrypted in the database, absent from responses and logs, and
still usable across an encryption key rotation.

Contract (spec section 2, crypto.py): the password is encrypted with AES-GCM under a key id
before storage (``gfx1.<kid>.…``) and no response or log line ever shows it again; rotation
is: put the new key first (``GETFLUXLY_ENCRYPTION_KEYS=B,A``), restart, ``getfluxly keys
rotate``, then drop the old key.
"""

from __future__ import annotations

import base64
import secrets
from typing import TYPE_CHECKING

import httpx
import pytest

from flux_testkit.gfserver import GFServer, new_encryption_key

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory

USER = "relay-user"


def _forms(password: str) -> list[bytes]:
    """The password as it could leak: plain, and as AUTH LOGIN / AUTH PLAIN send it."""
    return [
        password.encode(),
        base64.b64encode(password.encode()),
        base64.b64encode(f"\0{USER}\0{password}".encode()),
    ]


def _leaks(haystack: bytes, *passwords: str) -> list[str]:
    return [p for p in passwords for form in _forms(p) if form in haystack]


def test_provider_password_never_leaves_encrypted(
    gf_server_factory: GFServerFactory,
    smtp_server: SMTPServerFactory,
    request: pytest.FixtureRequest,
) -> None:
    password, new_password, wrong = (f"gf-pw-{secrets.token_hex(8)}" for _ in range(3))
    relay = smtp_server(tls="starttls", auth=True, users={USER: password})
    # DEBUG: whatever the server would ever log, it logs now.
    server = gf_server_factory(env={"GETFLUXLY_LOG_LEVEL": "DEBUG"})
    project = server.create_project()
    responses: list[httpx.Response] = []  # every answer, checked at the end
    client = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.workspace_key}"},
        timeout=30,
        event_hooks={"response": [responses.append]},
    )
    request.addfinalizer(client.close)

    def create(password: str) -> httpx.Response:
        body = {
            "provider": "smtp", "display_name": "Relay", "from_email": "hello@example.com",
            "smtp_host": "localhost", "smtp_port": relay.port, "smtp_secure": "starttls",
            "username": USER, "password": password,
        }  # fmt: skip
        return client.post(f"/v1/projects/{project.id}/email-providers", json=body)

    refused = create(wrong)
    assert refused.status_code == 422
    assert refused.json()["error"] == "auth_failed"
    created = create(password)
    assert created.status_code == 201, created.text
    provider = created.json()["email_provider"]
    assert provider["secret_set"] is True
    path = f"/v1/email-providers/{provider['id']}"
    assert client.get(path).status_code == 200
    assert client.get(f"/v1/projects/{project.id}/email-providers").status_code == 200
    assert client.patch(path, json={"display_name": "Renamed"}).status_code == 200
    relay.users[USER] = new_password
    changed = client.patch(path, json={"password": new_password})
    assert changed.status_code == 200, changed.text
    sent = client.post(f"{path}/test", json={"to": "you@example.com"})
    assert sent.status_code == 200, sent.text
    assert sent.json()["accepted"] is True
    [message] = relay.wait_for_messages(1)
    assert (message.auth_user, message.tls) == (USER, True)

    assert len(responses) == 7
    for response in responses:
        leaked = _leaks(response.content, password, new_password, wrong)
        assert not leaked, f"{response.request.method} {response.request.url.path} shows it"
    [row] = server.database.query("SELECT secret FROM email_providers")
    kid = server.encryption_keys.split(":")[0]
    assert row["secret"].startswith(f"gfx1.{kid}.")
    assert not _leaks(server.database.stored_bytes(), password, new_password, wrong)
    logs = server.logs()
    assert "DEBUG" in logs  # the level took effect, so the check below means something
    assert not _leaks(logs.encode(), password, new_password, wrong)


def _test_send(server: GFServer, provider_id: str) -> httpx.Response:
    return server.client().post(
        f"/v1/email-providers/{provider_id}/test", json={"to": "x@y.example"}
    )


# Rotation's SQL is one ORM select and update, and the storage layer runs on PostgreSQL in
# every other test; five server starts make this test costly, so it runs on SQLite only.
@pytest.mark.parametrize("gf_backend", ["sqlite"])
@pytest.mark.slow
def test_secrets_survive_a_key_rotation(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    key_a, key_b = new_encryption_key("a"), new_encryption_key("b")
    relay = smtp_server(tls="none", auth=True)
    server = gf_server_factory(env={"GETFLUXLY_ENCRYPTION_KEYS": key_a})
    project = server.create_project()
    provider_id = server.create_smtp_provider(project.id, relay.host, relay.port)["id"]

    def secret() -> str:
        [row] = server.database.query("SELECT secret FROM email_providers")
        return str(row["secret"])

    assert secret().startswith("gfx1.a.")

    # New key first, old key still listed: old secrets still decrypt.
    server.restart({"GETFLUXLY_ENCRYPTION_KEYS": f"{key_b},{key_a}"})
    assert _test_send(server, provider_id).status_code == 200
    rotated = server.cli("keys", "rotate")
    assert "re-encrypted 1 secret(s) with key 'b'" in rotated.stderr
    assert secret().startswith("gfx1.b.")

    server.restart({"GETFLUXLY_ENCRYPTION_KEYS": key_b})
    response = _test_send(server, provider_id)
    assert response.status_code == 200, response.text
    assert len(relay.wait_for_messages(2)) == 2

    # Only the old key: the secret cannot be read, and the answer says which key to add back.
    server.restart({"GETFLUXLY_ENCRYPTION_KEYS": key_a})
    response = _test_send(server, provider_id)
    assert 400 <= response.status_code < 600
    body = response.json()
    assert set(body) >= {"error", "detail"}
    assert "GETFLUXLY_ENCRYPTION_KEYS" in body["detail"]
    assert "'b'" in body["detail"]
    assert len(relay.messages) == 2
    # The provider itself is still listed (reading it needs no decryption).
    assert server.client().get(f"/v1/email-providers/{provider_id}").status_code == 200


@pytest.mark.parametrize("gf_backend", ["sqlite"])  # no SQL involved: one backend is enough
def test_editing_a_provider_whose_key_is_gone_is_a_clear_error(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    relay = smtp_server(tls="none", auth=True)
    server = gf_server_factory(env={"GETFLUXLY_ENCRYPTION_KEYS": new_encryption_key("b")})
    project = server.create_project()
    provider_id = server.create_smtp_provider(project.id, relay.host, relay.port)["id"]
    server.restart({"GETFLUXLY_ENCRYPTION_KEYS": new_encryption_key("a")})
    response = server.client().patch(
        f"/v1/email-providers/{provider_id}", json={"display_name": "Renamed"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert "GETFLUXLY_ENCRYPTION_KEYS" in response.json()["detail"]
    assert "Traceback" not in server.logs()
