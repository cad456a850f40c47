"""No key, URL or session of one tenant reaches another's data: every endpoint, every key.

The endpoints come from the server's own OpenAPI document, so a new endpoint is checked the
moment it exists. Workspace A has projects P1 and P2; P1 has an email provider, a profile (made
by ingesting an event) and keys; workspace B has a project B1. Every ``/v1`` endpoint is called
against A's objects with:

(a) no usable credentials → 401 ``unauthenticated``: no header, another scheme, an unknown key,
    ``?api_key=`` with an unknown key, and on management endpoints ``?api_key=`` with a valid
    workspace key (the query parameter is for ingest only);
(b) B's keys: on management endpoints B's workspace key gets 404 ``not_found`` for A's
    objects, exactly the answer for an id that does not exist (no existence oracle), and
    collections answer B's own objects, never mentioning A's; on project-key endpoints B1's
    secret key gets the same 404 for A's objects;
(c) P1's own project keys on management endpoints, its publishable key on server-key
    endpoints, and A's workspace key on project-key endpoints → 403 ``wrong_key_type``;
(d) P2's keys (another project of the same workspace) on P1's objects → 403
    ``wrong_key_type`` where the key kind is wrong, else 404 ``not_found`` (project scoping).

Afterwards A's objects are unchanged and the relay received nothing. Failures are collected
and reported together, one line per endpoint and caller.
"""

from __future__ import annotations

import base64
import re
import time
from typing import TYPE_CHECKING, Any

import httpx

from flux_testkit.gfserver import GFServer

if TYPE_CHECKING:
    from flux_testkit.pytest_fixtures import GFServerFactory, SMTPServerFactory

#: Endpoints anyone may call; a new one must be added here consciously.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/v1/browser/gflux.js"),  # the browser script, loaded by a <script> tag
    # Relays' feedback posts: no API key, each relay's own signature or credentials, per
    # project (tested relay by relay in test_webhooks.py).
    ("POST", "/webhooks/{relay}/{project_id}"),
    # Links in sent mail: the signed token in the path is the credential (test_tracking.py
    # shows a changed one is refused).
    ("GET", "/t/o/{token}"),
    ("HEAD", "/t/o/{token}"),
    ("GET", "/t/c/{token}"),
    ("HEAD", "/t/c/{token}"),
    ("GET", "/unsubscribe/{token}"),
    ("POST", "/unsubscribe/{token}"),
    ("GET", "/preferences/{token}"),
    ("POST", "/preferences/{token}"),
}
#: Endpoints that take project keys, with the key kinds they accept; every other ``/v1``
#: endpoint is management and takes only a workspace key.
PROJECT_KEY_ENDPOINTS: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/events"): frozenset({"secret", "publishable"}),
    ("POST", "/v1/events/batch"): frozenset({"secret", "publishable"}),
    ("POST", "/v1/identify/alias"): frozenset({"secret"}),
    ("POST", "/v1/profiles/{profile_id}/erase"): frozenset({"secret"}),
    ("POST", "/v1/messages"): frozenset({"secret"}),
}
#: Endpoints whose body, rather than their path, names an object.
BODY_NAMES_AN_OBJECT = {("POST", "/v1/identify/alias")}
#: Endpoints that must exist (a check that the enumeration works).
KNOWN = {
    ("GET", "/v1/projects"),
    ("POST", "/v1/projects"),
    ("GET", "/v1/projects/{project_id}"),
    ("PATCH", "/v1/projects/{project_id}"),
    ("GET", "/v1/projects/{project_id}/keys"),
    ("POST", "/v1/projects/{project_id}/keys"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("DELETE", "/v1/keys/{key_id}"),
    ("POST", "/v1/projects/{project_id}/email-providers"),
    ("GET", "/v1/projects/{project_id}/email-providers"),
    ("GET", "/v1/email-providers/{provider_id}"),
    ("PATCH", "/v1/email-providers/{provider_id}"),
    ("DELETE", "/v1/email-providers/{provider_id}"),
    ("POST", "/v1/email-providers/{provider_id}/test"),
    ("GET", "/v1/projects/{project_id}/messages"),
    ("GET", "/v1/messages/{message_id}"),
    ("POST", "/v1/messages/{message_id}/retry"),
    ("GET", "/v1/projects/{project_id}/subscription-groups"),
    ("PUT", "/v1/projects/{project_id}/subscription-groups"),
    ("GET", "/v1/email-providers/{provider_id}/domain-check"),
    ("POST", "/v1/projects/{project_id}/automations"),
    ("GET", "/v1/automations/{automation_id}"),
    ("POST", "/v1/automations/{automation_id}/activate"),
    *PROJECT_KEY_ENDPOINTS,
}
_METHODS = {"get", "head", "post", "put", "patch", "delete"}
_MISSING = "00000000000000000000"


def _endpoints(openapi: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in openapi["paths"].items()
        for method in operations
        if method in _METHODS
    }


def _bodies(relay_host: str, relay_port: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Valid bodies, so that a leak would succeed (2xx) rather than hide behind a 400;
    ``{name}`` strings are replaced by the ids under test."""
    event = {"event": "isolation_probe", "external_id": "intruder"}
    return {
        ("POST", "/v1/projects"): {"name": "Intruder"},
        ("POST", "/v1/keys"): {"kind": "workspace"},
        ("POST", "/v1/projects/{project_id}/keys"): {"kind": "secret"},
        ("PATCH", "/v1/projects/{project_id}"): {"default_provider_id": "{provider_id}"},
        ("POST", "/v1/projects/{project_id}/email-providers"): {
            "provider": "smtp", "display_name": "Intruder", "from_email": "x@example.com",
            "smtp_host": relay_host, "smtp_port": relay_port, "smtp_secure": "none",
            "username": "user@example.com", "password": "s3cret-pass",
        },
        ("PATCH", "/v1/email-providers/{provider_id}"): {"display_name": "Hijacked"},
        ("POST", "/v1/email-providers/{provider_id}/test"): {"to": "victim@example.com"},
        ("POST", "/v1/events"): event,
        ("POST", "/v1/events/batch"): {"events": [event]},
        ("POST", "/v1/identify/alias"): {"user_id": "{profile_id}", "anonymous_id": "intruder"},
        ("POST", "/v1/profiles/{profile_id}/erase"): {"reason": "internal", "request_id": "x"},
        # Names A's profile and provider: another project's key must learn nothing of them.
        ("POST", "/v1/messages"): {
            "to": {"profile_id": "{profile_id}"}, "provider_id": "{provider_id}",
            "subject": "x", "text": "y",
        },
        ("POST", "/v1/projects/{project_id}/templates"): {
            "name": "intruder", "subject": "s", "text": "x",
        },
        ("PATCH", "/v1/templates/{template_id}"): {"subject": "Hijacked"},
        ("POST", "/v1/templates/{template_id}/preview"): {"profile_id": "{profile_id}"},
        ("POST", "/v1/projects/{project_id}/suppressions"): {"email": "intruder@example.com"},
        ("POST", "/v1/projects/{project_id}/webhooks"): {
            "url": "https://intruder.example/hook", "events": ["message.bounced"],
        },
        ("PATCH", "/v1/webhooks/{webhook_id}"): {"url": "https://intruder.example/hijack"},
        ("POST", "/v1/projects/{project_id}/webhook-secrets"): {"relay": "postmark"},
        ("PUT", "/v1/projects/{project_id}/subscription-groups"): {
            "subscription_groups": [{"name": "intruder", "label": "Intruder"}],
        },
        ("POST", "/v1/projects/{project_id}/automations"): {
            "name": "intruder", "trigger": {"event": "x"}, "steps": [{"id": "s", "type": "exit"}],
        },
        ("PATCH", "/v1/automations/{automation_id}"): {"name": "Hijacked"},
        ("POST", "/v1/projects/{project_id}/segments"): {
            "name": "intruder", "rule": {"trait": "plan", "op": "exists"},
        },
        ("POST", "/v1/projects/{project_id}/segments/preview"): {
            "rule": {"trait": "plan", "op": "exists"},
        },
        ("PATCH", "/v1/segments/{segment_id}"): {"name": "Hijacked", "rule": {"event": "x"}},
        ("POST", "/v1/projects/{project_id}/broadcasts"): {
            "name": "intruder", "template_id": "{template_id}", "segment_id": "{segment_id}",
        },
        ("PATCH", "/v1/broadcasts/{broadcast_id}"): {"name": "Hijacked"},
    }  # fmt: skip


def _fill(value: Any, values: dict[str, str]) -> Any:
    """``value`` with ``{name}`` in its strings (also in nested objects) replaced."""
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


def _profile_of(server: GFServer, project_id: str, external_id: str) -> dict[str, Any]:
    """The profile stitched (by a worker) for ``external_id``, once it exists."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = server.client().get(
            f"/v1/projects/{project_id}/profiles", params={"identity": external_id}
        )
        assert found.status_code == 200, found.text
        if found.json()["profiles"]:
            [profile] = found.json()["profiles"]
            return dict(profile)
        time.sleep(0.05)
    raise AssertionError(f"no profile for {external_id!r} after 20 s")


def test_every_endpoint_keeps_tenants_apart(
    gf_server_factory: GFServerFactory, smtp_server: SMTPServerFactory
) -> None:
    # The matrix sends hundreds of wrong keys from one address: lift the failed-
    # authentication limit (tested in test_rate_limits.py), which would answer 429 instead.
    gf_server = gf_server_factory(env={"GETFLUXLY_AUTH_FAILURE_RATE_LIMIT_BURST": "1000000"})
    relay = smtp_server(tls="none", auth=True)
    owner = gf_server.client()
    p1 = gf_server.create_project("P1")
    p2 = gf_server.create_project("P2")
    provider = gf_server.create_smtp_provider(p1.id, relay.host, relay.port)
    spare = owner.post("/v1/keys", json={"kind": "workspace", "name": "spare"}).json()["key"]
    identify = {"type": "identify", "external_id": "user-1", "traits": {"plan": "pro"}}
    ingested = gf_server.client(p1.secret_key).post("/v1/events", json=identify)
    assert ingested.status_code == 202, ingested.text
    profile = _profile_of(gf_server, p1.id, "user-1")
    other = gf_server.create_workspace("Workspace B")
    b1 = gf_server.create_project("B1", key=other.key)
    template = owner.post(
        f"/v1/projects/{p1.id}/templates", json={"name": "t", "subject": "s", "text": "x"}
    ).json()["template"]
    webhook = owner.post(
        f"/v1/projects/{p1.id}/webhooks",
        json={"url": "https://hooks.example.com/p1", "events": ["message.bounced"]},
    ).json()["webhook"]
    del webhook["secret"]
    automation = owner.post(
        f"/v1/projects/{p1.id}/automations",
        json={"name": "a", "trigger": {"event": "x"}, "steps": [{"id": "s", "type": "exit"}]},
    ).json()["automation"]
    segment = owner.post(
        f"/v1/projects/{p1.id}/segments",
        json={"name": "pros", "rule": {"trait": "plan", "op": "eq", "value": "pro"}},
    ).json()["segment"]
    listed = "listed@example.com"
    owner.post(f"/v1/projects/{p1.id}/suppressions", json={"email": listed})
    # A message of P1 that is never attempted (its address is suppressed), so the relay
    # stays empty whatever workers run.
    sent = gf_server.client(p1.secret_key).post(
        "/v1/messages", json={"to": listed, "subject": "x", "text": "y"}
    )
    assert sent.status_code == 202, sent.text
    message = sent.json()["message"]
    assert message["status"] == "suppressed"
    # A draft broadcast of P1 to its segment.
    made = owner.post(
        f"/v1/projects/{p1.id}/broadcasts",
        json={"name": "b", "template_id": template["id"], "segment_id": segment["id"]},
    )
    assert made.status_code == 201, made.text
    broadcast = made.json()["broadcast"]

    hooks_path = f"/v1/projects/{p1.id}/webhook-secrets"
    hook = owner.post(hooks_path, json={"relay": "postmark"})
    assert hook.status_code == 201, hook.text
    hooks_before = owner.get(hooks_path).json()

    ids = {
        "relay": "postmark",
        "project_id": p1.id,
        "provider_id": provider["id"],
        "key_id": spare["id"],
        "profile_id": profile["id"],
        "message_id": message["id"],
        "template_id": template["id"],
        "automation_id": automation["id"],
        "segment_id": segment["id"],
        "email": listed,
        "webhook_id": webhook["id"],
        "broadcast_id": broadcast["id"],
    }
    missing = {name: f"{value.split('_')[0]}_{_MISSING}" for name, value in ids.items()}
    # (A relay's name is no object of A's: only ids are looked for in B's answers.)
    a_ids = [gf_server.workspace_id, p2.id, *(v for k, v in ids.items() if k != "relay")]

    openapi = gf_server.anonymous_client().get("/openapi.json").json()
    endpoints = _endpoints(openapi)
    assert endpoints >= KNOWN, f"the enumeration missed {KNOWN - endpoints}"
    checked = sorted(endpoints - PUBLIC)
    unknown_params = {
        name for _, path in checked for name in re.findall(r"{(\w+)}", path) if name not in ids
    }
    assert not unknown_params, f"no test object for path parameter(s) {unknown_params}"
    bodies = _bodies(relay.host, relay.port)

    failures: list[str] = []
    anonymous = gf_server.anonymous_client()
    basic = base64.b64encode(f"{gf_server.workspace_key}:".encode()).decode()
    unknown_secret = "gflux_secret_" + "A" * 32

    def call(
        key: str | None, method: str, path: str, values: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        body = bodies.get((method, path))
        if body is not None:
            body = {k: _fill(v, values) for k, v in body.items()}
        client = anonymous if key is None else gf_server.client(key)
        return client.request(method, path.format(**values), json=body, **kwargs)

    def expect(who: str, response: httpx.Response, status: int, code: str) -> None:
        where = f"{response.request.method} {response.request.url.path} as {who}"
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != status or not isinstance(body, dict):
            failures.append(f"{where}: {response.status_code} {response.text[:200]}, want {status}")
        elif body.get("error") != code or not isinstance(body.get("detail"), str):
            failures.append(f"{where}: body {body}, want error {code!r} and a detail")
        elif status == 401 and response.headers.get("www-authenticate") != "Bearer":
            failures.append(f"{where}: 401 without 'WWW-Authenticate: Bearer'")

    def expect_no_oracle(who: str, response: httpx.Response, absent: httpx.Response) -> None:
        expect(who, response, 404, "not_found")
        if response.json() != absent.json():
            failures.append(
                f"{response.request.method} {response.request.url.path} as {who}: "
                f"{response.text} differs from the answer for a missing id, {absent.text} "
                "(it confirms the object exists)"
            )

    def expect_nothing_of_a(who: str, response: httpx.Response) -> None:
        if any(object_id in response.text for object_id in a_ids):
            failures.append(f"{response.request.method} {response.request.url.path} as {who} "
                            f"mentions A's objects: {response.text[:300]}")  # fmt: skip

    for method, path in checked:
        endpoint = (method, path)
        accepts = PROJECT_KEY_ENDPOINTS.get(endpoint, frozenset({"workspace"}))
        names_object = "{" in path or endpoint in BODY_NAMES_AN_OBJECT

        # (a) No usable credentials.
        for who, extra in (
            ("nobody", {}),
            ("Basic auth", {"headers": {"Authorization": f"Basic {basic}"}}),
            ("?api_key=<unknown>", {"params": {"api_key": unknown_secret}}),
        ):
            expect(who, call(None, method, path, ids, **extra), 401, "unauthenticated")
        expect("an unknown key", call(unknown_secret, method, path, ids), 401, "unauthenticated")
        if "workspace" in accepts:
            query = {"params": {"api_key": gf_server.workspace_key}}
            expect("?api_key=<workspace key>", call(None, method, path, ids, **query), 401,
                   "unauthenticated")  # fmt: skip

        # (b) Workspace B.
        outsider, outsider_kind = (
            (other.key, "workspace") if "workspace" in accepts else (b1.secret_key, "secret")
        )
        response = call(outsider, method, path, ids)
        if names_object:
            # The same caller asking for an id that does not exist in its own tenant.
            absent = call(outsider, method, path, missing)
            expect_no_oracle(f"workspace B ({outsider_kind} key)", response, absent)
        else:
            expect_nothing_of_a(f"workspace B ({outsider_kind} key)", response)
        if "workspace" not in accepts:
            expect("workspace B's workspace key", call(other.key, method, path, ids), 403,
                   "wrong_key_type")  # fmt: skip

        # (c) and (d): keys of the wrong kind, and keys of another project.
        for who, key, kind in (
            ("A's workspace key", gf_server.workspace_key, "workspace"),
            ("P1's secret key", p1.secret_key, "secret"),
            ("P1's publishable key", p1.publishable_key, "publishable"),
            ("P2's secret key", p2.secret_key, "secret"),
            ("P2's publishable key", p2.publishable_key, "publishable"),
        ):
            if kind not in accepts:
                expect(who, call(key, method, path, ids), 403, "wrong_key_type")
            elif who.startswith("P2") and names_object:
                expect_no_oracle(
                    who, call(key, method, path, ids), call(key, method, path, missing)
                )

    assert not failures, "\n".join(failures)

    # Nothing of A changed, and no mail left on A's provider.
    current = owner.get(f"/v1/email-providers/{provider['id']}").json()["email_provider"]
    assert current["display_name"] == provider["display_name"]
    assert current["updated_at"] == provider["updated_at"]
    assert [p["name"] for p in owner.get("/v1/projects").json()["projects"]] == ["P1", "P2"]
    keys = owner.get("/v1/keys").json()["keys"]
    assert all(k["revoked_at"] is None for k in keys)
    assert len(keys) == 6  # the workspace key, the spare, and two per project
    providers = owner.get(f"/v1/projects/{p1.id}/email-providers").json()["email_providers"]
    assert [p["id"] for p in providers] == [provider["id"]]
    now = owner.get(f"/v1/projects/{p1.id}/profiles/{profile['id']}").json()["profile"]
    assert (now["erased_at"], now["traits"]) == (None, {"plan": "pro"})
    assert {(i["kind"], i["value"]) for i in now["identities"]} == {("external_id", "user-1")}
    assert owner.get(f"/v1/templates/{template['id']}").json()["template"] == template
    assert owner.get(f"/v1/webhooks/{webhook['id']}").json()["webhook"] == webhook
    assert owner.get(f"/v1/projects/{p1.id}/webhooks").json()["webhooks"] == [webhook]
    found = owner.get(f"/v1/automations/{automation['id']}").json()["automation"]
    assert {k: found[k] for k in automation} == automation  # (the read adds stats and runs)
    kept = owner.get(f"/v1/segments/{segment['id']}").json()["segment"]
    assert {**kept, "count": 0} == segment
    members = owner.get(f"/v1/segments/{segment['id']}/members").json()["members"]
    assert [m["profile_id"] for m in members] in ([], [profile["id"]])
    suppressed = owner.get(f"/v1/projects/{p1.id}/suppressions").json()["suppressions"]
    assert [s["email"] for s in suppressed] == [listed]
    groups = owner.get(f"/v1/projects/{p1.id}/subscription-groups").json()
    assert groups == {"subscription_groups": []}
    assert relay.messages == []
    now_message = owner.get(f"/v1/messages/{message['id']}").json()["message"]
    assert (now_message["status"], now_message["history"]) == (
        message["status"],
        message["history"],
    )
    assert [m["id"] for m in owner.get(f"/v1/projects/{p1.id}/messages").json()["messages"]] == [
        message["id"]
    ]
    assert gf_server.database.query("SELECT id FROM jobs WHERE kind = 'provider.test_send'") == []
    assert owner.get(hooks_path).json() == hooks_before
    assert owner.get(f"/v1/broadcasts/{broadcast['id']}").json()["broadcast"] == broadcast
    listed_broadcasts = owner.get(f"/v1/projects/{p1.id}/broadcasts").json()["broadcasts"]
    assert [b["id"] for b in listed_broadcasts] == [broadcast["id"]]
