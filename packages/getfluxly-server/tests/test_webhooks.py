"""Inbound feedback webhooks, relay by relay, on SQLite and PostgreSQL (engine spec section 7).

Contract: ``POST /webhooks/{relay}/{project_id}`` for postmark, sendgrid, mailgun, ses (SNS),
smtp2go, resend, brevo, mailtrap and the generic ``smtp`` schema, each in the relay's
documented payload and authentication (flux_testkit.webhook_cases, signed with keys made in
the test: an ECDSA key for SendGrid, an RSA certificate served over HTTPS by a local SNS
stand-in, ...). A valid post is 200, stored once, and processed by the inbox job into the
message's status, its events and the suppression list. A tampered body, a wrong signature or
credentials, a timestamp older than 5 minutes, a relay with no secret: 401 and nothing
changes. A replayed post: 200 ``duplicate`` and nothing changes. An unknown project or relay:
404. The app runs in-process on the test's database; processing is the job's own function.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from flux_testkit import certs, ledger
from flux_testkit.gfserver import GFDatabase
from flux_testkit.webhook_cases import NAMES, TOPIC, Case, Generic, Sent, Ses, every_case, iso
from flux_testkit.webhook_signers import AppServer, FakeSns, SnsSigner
from getfluxly_server.app import create_app
from getfluxly_server.crypto import Keyring
from getfluxly_server.domain.feedback import inbox
from getfluxly_server.domain.feedback.config import FeedbackConfig, config_of
from getfluxly_server.settings import Settings
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    Job,
    Message,
    MessageEvent,
    Suppression,
    WebhookInbox,
    WebhookSecret,
)
from getfluxly_server.storage.models import now as utcnow


@pytest.fixture(scope="module")
def sns() -> Iterator[FakeSns]:
    with FakeSns(SIGNER.certificate_pem) as fake:
        yield fake


SIGNER = SnsSigner()


@dataclass
class Hooks:
    """The app in-process on the test's database, with a workspace key."""

    db: Database
    client: httpx.Client
    key: str
    workspace_id: str
    config: FeedbackConfig

    def project(self) -> str:
        return ledger.make_project(self.db, self.workspace_id)

    def sent(self, project_id: str, email: str = "ada@example.com") -> Sent:
        """A message the relay took (``sent``, with the relay's id and the Message-ID)."""
        (message_id,) = ledger.queue_messages(self.db, project_id, None, [email])
        sent = Sent(message_id, email, f"relay-{message_id}", f"{message_id}@mail.example.org")
        with self.db.transaction() as session:
            session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status="sent", provider_message_id=sent.provider_id,
                        smtp_message_id=sent.smtp_id, due_at=None)
            )  # fmt: skip
        return sent

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"}
        return self.client.request(method, path, headers=headers, **kwargs)

    def configure(self, project_id: str, case: Case) -> dict[str, Any]:
        answer = self.api("POST", f"/v1/projects/{project_id}/webhook-secrets", json=case.setup())
        assert answer.status_code == 201, answer.text
        issued: dict[str, Any] = answer.json()["webhook_secret"]
        case.keep(issued)
        return issued

    def post(self, relay: str, project_id: str, body: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(f"/webhooks/{relay}/{project_id}", content=body, headers=headers)

    def process(self, project_id: str) -> dict[str, Any]:
        return inbox.process(
            self.db, project_id, self.config.relays, rules=self.config.rules, sns=self.config.sns
        )

    def state(self, project_id: str) -> tuple[int, int, int, int, list[str]]:
        """What a refused post must not change: stored posts, jobs, feedback rows,
        suppressions, and the statuses of the project's messages."""
        with self.db.read() as session:
            count = lambda model, *where: session.scalar(  # noqa: E731
                select(func.count()).select_from(model).where(*where)
            )
            statuses = session.scalars(
                select(Message.status).where(Message.project_id == project_id).order_by(Message.id)
            ).all()
            return (
                count(WebhookInbox, WebhookInbox.project_id == project_id),
                count(Job, Job.kind == inbox.PROCESS_JOB),
                count(MessageEvent, MessageEvent.project_id == project_id),
                count(Suppression, Suppression.project_id == project_id),
                list(statuses),
            )


@pytest.fixture
def hooks(gf_database: GFDatabase, gf_db: Database, sns: FakeSns) -> Iterator[Hooks]:
    settings = Settings(
        database_url=gf_database.sqlalchemy_url, keyring=Keyring.parse(Keyring.generate()),
        public_url="https://getfluxly.example.org", sns_cert_hosts=sns.hosts,
        sns_subscribe_hosts=sns.hosts, sns_ca_file=certs.ca_pem_path(), max_body_bytes=512 * 1024,
    )  # fmt: skip
    with AppServer(create_app(settings, gf_db)) as url, httpx.Client(base_url=url) as client:
        yield Hooks(gf_db, client, gf_database.workspace.key, gf_database.workspace.id,
                    config_of(settings))  # fmt: skip


def _case(name: str, sns: FakeSns) -> Case:
    return {case.relay: case for case in every_case(sns, SIGNER)}[name]


def _status(hooks: Hooks, message_id: str) -> str:
    with hooks.db.read() as session:
        message = session.get(Message, message_id)
        assert message is not None
        return message.status


@pytest.mark.parametrize("relay", NAMES)
def test_a_valid_post_is_accepted_and_processed(hooks: Hooks, sns: FakeSns, relay: str) -> None:
    case = _case(relay, sns)
    project = hooks.project()
    issued = hooks.configure(project, case)
    assert issued["url"] == f"https://getfluxly.example.org/webhooks/{relay}/{project}"
    bounced, bystander = hooks.sent(project), hooks.sent(project, "grace@example.com")

    body, headers = case.post(bounced)
    answer = hooks.post(relay, project, body, headers)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": True, "duplicate": False}
    assert _status(hooks, bounced.id) == "sent"  # processed in the background, not here

    assert hooks.process(project)["events"] == 1
    assert _status(hooks, bounced.id) == "bounced"
    assert _status(hooks, bystander.id) == "sent"
    with hooks.db.read() as session:
        [event] = session.scalars(select(MessageEvent)).all()
        assert (event.message_id, event.email, event.type, event.bounce_type, event.source) == (
            bounced.id, "ada@example.com", "bounced", "hard", relay,
        )  # fmt: skip
        assert event.reason is not None
        assert "5.1.1" in event.reason
        entry = session.get(Suppression, (project, "ada@example.com"))
        assert entry is not None
        assert (entry.reason, entry.message_id) == ("hard_bounce", bounced.id)
        [stored] = session.scalars(select(WebhookInbox)).all()
        assert (stored.payload.encode(), stored.events, stored.error) == (body, 1, None)
        assert stored.processed_at is not None


@pytest.mark.parametrize("relay", NAMES)
def test_bad_posts_are_refused_and_change_nothing(hooks: Hooks, sns: FakeSns, relay: str) -> None:
    case = _case(relay, sns)
    project, bare = hooks.project(), hooks.project()
    hooks.configure(project, case)
    sent = hooks.sent(project)
    before = hooks.state(project)

    def refused(body: bytes, headers: dict[str, str], project_id: str = project) -> str:
        answer = hooks.post(relay, project_id, body, headers)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "unauthenticated"
        assert hooks.state(project) == before
        return str(answer.json()["detail"])

    body, headers = case.post(sent)
    if case.body_signed:
        refused(case.tamper(body), headers)
    refused(*case.post(sent, wrong=True))
    if case.timestamped:
        assert "5 minutes" in refused(*case.post(sent, ts=int(time.time()) - 6 * 60))
    # A project without a secret for the relay refuses every post, even a well-signed one.
    assert "No webhook secret" in refused(body, headers, bare)
    # An empty secret never verifies (a row whose secret is "" is as good as none).
    assert hooks.state(bare)[:3] == (0, 0, 0)

    # Accepted once; the same post again is a replay: acknowledged, nothing changes.
    first = hooks.post(relay, project, body, headers)
    assert first.json() == {"accepted": True, "duplicate": False}
    hooks.process(project)
    after = hooks.state(project)
    again = hooks.post(relay, project, body, headers)
    assert (again.status_code, again.json()) == (200, {"accepted": True, "duplicate": True})
    assert hooks.process(project)["posts"] == 0
    assert hooks.state(project) == after

    # After the relay's secrets are deleted, its posts are refused.
    deleted = hooks.api("DELETE", f"/v1/projects/{project}/webhook-secrets/{relay}")
    assert deleted.status_code == 204
    before = hooks.state(project)
    refused(*case.post(sent))


def test_unknown_projects_and_relays_are_not_found(hooks: Hooks, sns: FakeSns) -> None:
    case = Generic()
    project = hooks.project()
    hooks.configure(project, case)
    body, headers = case.post(hooks.sent(project))
    for path in (f"/webhooks/smtp/prj_{'0' * 20}", f"/webhooks/sparkpost/{project}"):
        answer = hooks.client.post(path, content=body, headers=headers)
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found")
    # The generic schema is ours: a signed body that breaks it says what is wrong.
    bad = json.dumps({"events": [{"id": "x", "type": "exploded", "email": "a@example.com",
                                  "timestamp": 1}]}).encode()  # fmt: skip
    answer = hooks.post("smtp", project, bad, case.headers(bad, int(time.time())))
    assert (answer.status_code, answer.json()["error"]) == (400, "validation_error")
    assert "events.0.type" in answer.json()["detail"]
    # Over the body cap: 413 before anything is read.
    huge = b"{" + b" " * (600 * 1024) + b"}"
    answer = hooks.post("smtp", project, huge, case.headers(huge, int(time.time())))
    assert (answer.status_code, answer.json()["error"]) == (413, "payload_too_large")
    assert hooks.state(project)[:3] == (0, 0, 0)


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_are_shown_once_listed_without_them_rotated_and_deleted(
    hooks: Hooks, gf_database: GFDatabase
) -> None:
    project = hooks.project()
    path = f"/v1/projects/{project}/webhook-secrets"
    first = hooks.api("POST", path, json={"relay": "smtp"}).json()["webhook_secret"]
    assert first["secret"].startswith("whsec_")
    assert first["expires_at"] is None
    postmark = hooks.api("POST", path, json={"relay": "postmark"}).json()["webhook_secret"]
    assert postmark["secret"].startswith("gfwh_")

    listed = hooks.api("GET", path).json()["webhook_secrets"]
    assert [(s["relay"], s["id"]) for s in listed] == [("postmark", postmark["id"]),
                                                       ("smtp", first["id"])]  # fmt: skip
    assert all("secret" not in s for s in listed)
    # Encrypted at rest: the secret is nowhere in the database.
    assert first["secret"].encode() not in gf_database.stored_bytes()
    assert postmark["secret"].encode() not in gf_database.stored_bytes()

    # Rotation: the new one and the old one both verify, the old one for 24 hours.
    rotated = hooks.api("POST", path, json={"relay": "smtp"}).json()["webhook_secret"]
    assert rotated["secret"] != first["secret"]
    smtp = [s for s in hooks.api("GET", path).json()["webhook_secrets"] if s["relay"] == "smtp"]
    assert [s["id"] for s in smtp] == [rotated["id"], first["id"]]
    assert smtp[0]["expires_at"] is None
    assert smtp[1]["expires_at"] is not None
    sent = hooks.sent(project)
    for secret in (first["secret"], rotated["secret"]):
        case = Generic(secret=secret)
        answer = hooks.post("smtp", project, *case.post(sent))
        assert answer.status_code == 200, answer.text
    with hooks.db.transaction() as session:  # 24 hours later
        session.execute(
            update(WebhookSecret)
            .where(WebhookSecret.id == first["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    old = hooks.post("smtp", project, *Generic(secret=first["secret"]).post(sent))
    assert old.status_code == 401
    assert (
        hooks.post("smtp", project, *Generic(secret=rotated["secret"]).post(sent)).status_code
        == 200
    )

    assert hooks.api("DELETE", f"{path}/smtp").status_code == 204
    assert hooks.api("DELETE", f"{path}/smtp").status_code == 404
    assert [s["relay"] for s in hooks.api("GET", path).json()["webhook_secrets"]] == ["postmark"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"relay": "sparkpost"}, "relay"),
        ({"relay": "sendgrid"}, "public_key"),
        ({"relay": "sendgrid", "public_key": "bm90IGEga2V5"}, "public_key"),
        ({"relay": "mailgun"}, "secret"),
        ({"relay": "resend", "secret": "not-whsec"}, "secret"),
        ({"relay": "ses"}, "topic_arn"),
        ({"relay": "ses", "topic_arns": ["arn:aws:sns:us-east-1:1:x"]}, "topic_arns"),
        ({"relay": "postmark", "secret": "chosen-by-me"}, "secret"),
        ({"relay": "smtp", "public_key": "x"}, "public_key"),
        ({"relay": "mailgun", "secret": ""}, "secret"),
        ({"relay": "smtp", "colour": "red"}, "colour"),
    ],
)
def test_a_secret_request_that_does_not_fit_its_relay_is_refused(
    hooks: Hooks, body: dict[str, Any], field: str
) -> None:
    project = hooks.project()
    answer = hooks.api("POST", f"/v1/projects/{project}/webhook-secrets", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "validation_error"
    assert answer.json()["field"] == field
    assert hooks.api("GET", f"/v1/projects/{project}/webhook-secrets").json() == {
        "webhook_secrets": []
    }


def test_provider_made_material_is_never_echoed(hooks: Hooks, sns: FakeSns) -> None:
    project = hooks.project()
    for relay in ("sendgrid", "mailgun", "resend", "ses", "mailtrap"):
        case = _case(relay, sns)
        issued = hooks.configure(project, case)
        assert issued["secret"] is None
    ses = [s for s in hooks.api("GET", f"/v1/projects/{project}/webhook-secrets").json()[
        "webhook_secrets"] if s["relay"] == "ses"]  # fmt: skip
    assert ses[0]["topic_arns"] == [TOPIC]


# -- SNS ---------------------------------------------------------------------------------------


def test_sns_signature_version_1_verifies_too(hooks: Hooks, sns: FakeSns) -> None:
    case = Ses(sns, SIGNER, version="1")
    project = hooks.project()
    hooks.configure(project, case)
    sent = hooks.sent(project)
    assert hooks.post("ses", project, *case.post(sent)).status_code == 200
    hooks.process(project)
    assert _status(hooks, sent.id) == "bounced"


def test_sns_subscription_is_confirmed_only_once_verified(hooks: Hooks, sns: FakeSns) -> None:
    project = hooks.project()
    hooks.configure(project, Ses(sns, SIGNER))
    now = int(time.time())

    def confirmation(token: str, signer: SnsSigner, subscribe: str) -> bytes:
        message = {
            "Type": "SubscriptionConfirmation", "MessageId": f"sub-{token}", "Token": token,
            "TopicArn": TOPIC, "Timestamp": iso(now),
            "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
            "SubscribeURL": subscribe,
        }  # fmt: skip
        return json.dumps(signer.sign(message, sns.cert_url)).encode()

    seen = len(sns.requests)  # the fake serves the whole module
    forged_url = f"{sns.base}/confirm?Token=forged"
    forged = hooks.post("ses", project, confirmation("forged", SnsSigner(), forged_url), {})
    assert forged.status_code == 401
    good_url = f"{sns.base}/confirm?Token=good"
    assert hooks.post("ses", project, confirmation("good", SIGNER, good_url), {}).status_code == 200
    hooks.process(project)
    confirms = [r for r in sns.requests[seen:] if r.startswith("/confirm")]
    assert confirms == ["/confirm?Token=good"]
    with hooks.db.read() as session:
        [stored] = session.scalars(select(WebhookInbox)).all()
        assert stored.error == "subscription confirmed"


def test_sns_certificates_come_only_from_the_allowed_host(hooks: Hooks, sns: FakeSns) -> None:
    project = hooks.project()
    case = Ses(sns, SIGNER)
    hooks.configure(project, case)
    sent = hooks.sent(project)
    message = case.message(sent, int(time.time()), "elsewhere")
    fetched = len(sns.requests)
    for url in (
        f"https://localhost:{sns.port}/SimpleNotificationService-test.pem",  # another host
        f"http://127.0.0.1:{sns.port}/SimpleNotificationService-test.pem",  # not HTTPS
        f"https://127.0.0.1:{sns.port}/cert.txt",  # not a .pem
    ):
        body = json.dumps(SIGNER.sign(message, url)).encode()
        answer = hooks.post("ses", project, body, {})
        assert answer.status_code == 401, answer.text
        assert "SigningCertURL" in answer.json()["detail"]
    assert len(sns.requests) == fetched  # refused before anything was fetched
    # A topic the project did not allow: refused whatever the signature.
    other = {**message, "TopicArn": "arn:aws:sns:us-east-1:123456789012:someone-else"}
    answer = hooks.post("ses", project, json.dumps(SIGNER.sign(other, sns.cert_url)).encode(), {})
    assert answer.status_code == 401
    assert "TopicArn" in answer.json()["detail"]
    assert hooks.state(project)[:3] == (0, 0, 0)


def test_every_relay_has_a_case() -> None:
    from getfluxly_server.domain.feedback.relays import NAMES as SERVED

    assert tuple(NAMES) == SERVED
