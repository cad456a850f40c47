"""Rate limits of the routes that take no key, through the real server on SQLite and
PostgreSQL (issue 13's gaps).

Contract: the open pixel, the click redirect, the unsubscribe one-click and the preference
page are limited per client address (``GETFLUXLY_PUBLIC_RATE_LIMIT_*``): past the burst an
address is answered 429 ``rate_limited`` with ``Retry-After``, and another address is not
affected. Feedback webhooks count only failed posts (401: not verified; 404: unknown
project), per client address and project: past the burst of failures that address is
refused (429 with ``Retry-After``) before anything is verified, while a relay posting
validly from its own address goes on being accepted however often it posts.

The server runs behind a trusted proxy (this test process on loopback), so the client
address is what ``X-Forwarded-For`` says; buckets of 3 refilled at 0.01 per second, so one
token comes back only after 100 s, far longer than the test: the counts below do not
depend on timing. Nothing here measures time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from flux_testkit.gfserver import BACKENDS, GFProject, GFServer, Harness, expect_error
from flux_testkit.relayed import relayed_server
from flux_testkit.webhook_cases import Generic, Sent

#: A real server and a real relay per backend, on a busy machine.
pytestmark = pytest.mark.timeout(400)
BURST = 3
ENV = {
    "GETFLUXLY_TRUSTED_PROXIES": "127.0.0.1, ::1",
    "GETFLUXLY_PUBLIC_RATE_LIMIT_PER_SECOND": "0.01",
    "GETFLUXLY_PUBLIC_RATE_LIMIT_BURST": str(BURST),
    "GETFLUXLY_WEBHOOK_FAILURE_RATE_LIMIT_PER_SECOND": "0.01",
    "GETFLUXLY_WEBHOOK_FAILURE_RATE_LIMIT_BURST": str(BURST),
    "GETFLUXLY_TRACKING_SCANNER_SECONDS": "0",
}


@dataclass
class Limited:
    server: GFServer
    project: GFProject
    #: The tracked links of one marketing message the relay received.
    click: str
    pixel: str
    unsubscribe: str
    preferences: str


@pytest.fixture(scope="module", params=BACKENDS, ids=BACKENDS)
def limited(
    request: pytest.FixtureRequest, gf_harness: Harness, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Limited]:
    directory = tmp_path_factory.mktemp(f"gf-public-limits-{request.param}")
    with relayed_server(gf_harness, request.param, directory, "Public limits", ENV) as relayed:
        server, project = relayed.server, relayed.project
        sent = server.client(project.secret_key).post("/v1/messages", json={
            "to": "reader@example.com", "subject": "News", "transactional": False,
            "html": '<p><a href="https://example.com/news">Read</a></p>'
                    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> '
                    '<a href="{{ preferences_url }}">Preferences</a></p>',
        })  # fmt: skip
        assert sent.status_code == 202, sent.text
        html = relayed.html(sent.json()["message"]["id"])
        found = {
            kind: re.findall(rf'"(http://127\.0\.0\.1:\d+/{kind}/[^"]+)"', html)
            for kind in ("t/c", "t/o", "unsubscribe", "preferences")
        }
        yield Limited(server, project, found["t/c"][0], found["t/o"][0],
                      found["unsubscribe"][0], found["preferences"][0])  # fmt: skip


def _from(address: str) -> dict[str, str]:
    # The proxy appends the peer it saw; what the client wrote before is not believed.
    return {"X-Forwarded-For": f"203.0.113.250, {address}", "User-Agent": "Mozilla/5.0"}


def _refused(response: httpx.Response) -> str:
    detail = expect_error(response, 429, "rate_limited")
    assert response.headers["Retry-After"].isdigit()
    assert int(response.headers["Retry-After"]) >= 1
    return detail


@pytest.mark.parametrize(
    ("page", "method", "answer", "number"),
    [
        ("click", "GET", 302, 1),
        ("pixel", "GET", 200, 2),
        ("pixel", "HEAD", 200, 3),
        ("unsubscribe", "GET", 200, 4),
        ("preferences", "GET", 200, 5),
    ],
)
def test_a_public_page_is_limited_per_address(
    limited: Limited, page: str, method: str, answer: int, number: int
) -> None:
    url = getattr(limited, page)
    reader = limited.server.anonymous_client()
    flooding, other = f"198.51.100.{number}", f"192.0.2.{number}"
    for _ in range(BURST):
        assert reader.request(method, url, headers=_from(flooding)).status_code == answer
    refused = reader.request(method, url, headers=_from(flooding))
    if method == "GET":
        assert "this address" in _refused(refused)
    else:
        assert refused.status_code == 429
    # Tampered tokens spend too (a flood of made-up tokens is refused the same way).
    assert reader.get(url[:-3] + "AAA", headers=_from(flooding)).status_code == 429
    # Another reader is not affected.
    fine = reader.request(method, url, headers=_from(other))
    assert fine.status_code == answer, fine.text


def test_one_click_unsubscribe_is_limited_per_address(limited: Limited) -> None:
    reader = limited.server.anonymous_client()
    body = {"content": b"List-Unsubscribe=One-Click",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"}}  # fmt: skip
    tampered = limited.unsubscribe[:-3] + "AAA"
    for _ in range(BURST):
        response = reader.post(tampered, content=body["content"],
                               headers={**body["headers"], **_from("198.51.100.240")})  # fmt: skip
        assert response.status_code == 404
    refused = reader.post(limited.unsubscribe, content=body["content"],
                          headers={**body["headers"], **_from("198.51.100.240")})  # fmt: skip
    _refused(refused)
    suppressions = (
        limited.server.client()
        .get(f"/v1/projects/{limited.project.id}/suppressions")
        .json()["suppressions"]
    )
    assert suppressions == []  # the refused post changed nothing
    # The mailbox provider's one-click, from its own address, goes through.
    done = reader.post(limited.unsubscribe, content=body["content"],
                       headers={**body["headers"], **_from("192.0.2.90")})  # fmt: skip
    assert done.status_code == 200, done.text


def _webhook(limited: Limited) -> tuple[GFProject, Generic]:
    project = limited.server.create_project("Webhook limits")
    case = Generic()
    issued = limited.server.client().post(
        f"/v1/projects/{project.id}/webhook-secrets", json=case.setup()
    )
    assert issued.status_code == 201, issued.text
    case.keep(issued.json()["webhook_secret"])
    return project, case


def _post(
    limited: Limited, project_id: str, case: Generic, n: int, address: str, *, wrong: bool
) -> httpx.Response:
    sent = Sent(f"msg_limits{n:04d}", "ada@example.com", "", f"limits-{n}@example.com")
    ts = int(time.time())
    body = case.payload(sent, ts, f"evt-limits-{n}")
    headers = {**case.headers(body, ts, wrong=wrong), **_from(address)}
    return limited.server.anonymous_client().post(
        f"/webhooks/smtp/{project_id}", content=body, headers=headers
    )


def test_failed_webhook_verifications_are_throttled_while_the_relay_keeps_posting(
    limited: Limited,
) -> None:
    project, case = _webhook(limited)
    attacker, relay = "198.51.100.66", "192.0.2.25"
    for n in range(BURST):
        expect_error(_post(limited, project.id, case, n, attacker, wrong=True), 401,
                     "unauthenticated")  # fmt: skip
    detail = _refused(_post(limited, project.id, case, 10, attacker, wrong=True))
    assert "failed verifications" in detail
    # Refused before verification: even a valid post from that address waits its turn.
    _refused(_post(limited, project.id, case, 11, attacker, wrong=False))
    # The relay posts validly from its own address, more often than any failure budget.
    for n in range(20, 20 + 3 * BURST):
        accepted = _post(limited, project.id, case, n, relay, wrong=False)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"accepted": True, "duplicate": False}
    # The budget is per project: the same address is verified as usual at another project.
    other, other_case = _webhook(limited)
    expect_error(_post(limited, other.id, other_case, 30, attacker, wrong=True), 401,
                 "unauthenticated")  # fmt: skip
    # Made-up project ids share one budget per address: no fresh budget per id.
    anonymous = limited.server.anonymous_client()
    for n in range(BURST):
        missing = anonymous.post(f"/webhooks/smtp/prj_nosuch{n}", content=b"{}",
                                 headers=_from("198.51.100.67"))  # fmt: skip
        expect_error(missing, 404, "not_found")
    _refused(anonymous.post("/webhooks/smtp/prj_nosuch99", content=b"{}",
                            headers=_from("198.51.100.67")))  # fmt: skip
    stored = limited.server.database.query(
        "SELECT COUNT(*) AS n FROM webhook_inbox WHERE project_id = :p", p=project.id
    )
    assert stored[0]["n"] == 3 * BURST  # the relay's posts, and nothing of the attacker's
    assert "Traceback" not in limited.server.logs()


def test_the_settings_are_read_and_checked() -> None:
    from getfluxly_server.crypto import Keyring
    from getfluxly_server.settings import Settings, SettingsError

    key = Keyring.generate()
    defaults = Settings.from_env({"GETFLUXLY_ENCRYPTION_KEYS": key})
    assert (defaults.public_rate_per_second, defaults.public_rate_burst) == (50.0, 500)
    assert (defaults.webhook_failure_rate_per_second, defaults.webhook_failure_rate_burst) == (
        1.0, 30,
    )  # fmt: skip
    read = Settings.from_env({"GETFLUXLY_ENCRYPTION_KEYS": key, **ENV})
    assert (read.public_rate_per_second, read.public_rate_burst) == (0.01, BURST)
    assert (read.webhook_failure_rate_per_second, read.webhook_failure_rate_burst) == (
        0.01, BURST,
    )  # fmt: skip
    bad = {
        "GETFLUXLY_PUBLIC_RATE_LIMIT_PER_SECOND": "0",
        "GETFLUXLY_PUBLIC_RATE_LIMIT_BURST": "lots",
        "GETFLUXLY_WEBHOOK_FAILURE_RATE_LIMIT_PER_SECOND": "-1",
        "GETFLUXLY_WEBHOOK_FAILURE_RATE_LIMIT_BURST": "0",
    }
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"GETFLUXLY_ENCRYPTION_KEYS": key, **bad})
    assert len(info.value.problems) == len(bad)
    for name in bad:
        assert name in str(info.value)
