"""Amazon SES over the SES API v2 (REST/JSON, API version 2019-09-27), signed with AWS
Signature Version 4 (implemented here with hashlib/hmac; no AWS SDK).

Settings: ``access_key_id`` (an IAM access key id; not secret, like a user name),
``secret_access_key`` (secret), ``region`` (e.g. ``eu-west-1``; identities, quotas and the
sandbox are per region), ``api_url`` (optional; default ``https://email.{region}.amazonaws.com``,
e.g. for a VPC endpoint or a local fake). Temporary credentials (session tokens) are not
supported: a stored provider needs long-lived keys.

- Verify: ``GetAccount``, ``GET /v2/email/account``. 200 -> fine, with warnings when the
  account is still in the sandbox (``ProductionAccessEnabled`` false: only verified
  recipients), sending is paused (``SendingEnabled`` false) or ``EnforcementStatus`` is not
  ``HEALTHY``. The IAM identity needs ``ses:GetAccount`` for this and ``ses:SendEmail`` to send.
- Send: ``SendEmail``, ``POST /v2/email/outbound-emails`` with JSON ``{FromEmailAddress,
  Destination: {ToAddresses}, ReplyToAddresses, Content: {Simple: {Subject: {Data, Charset},
  Body: {Text, Html}, Headers: [{Name, Value}]}}}``, every Content in UTF-8. A non-ASCII
  display name is sent as an RFC 2047 encoded-word, as SES requires. SES takes at most 15
  custom headers; more are refused here before sending. Success is 200 ``{"MessageId"}``.
- Errors: the type comes in the ``X-Amzn-ErrorType`` header (``Type:namespace``) or the
  body's ``__type``/``code``, the text in the body's ``message``. 403 types (bad key id, bad
  signature, expired signature, missing IAM permission) -> ``auth_failed``;
  ``TooManyRequestsException``/``LimitExceededException``/throttling and 5xx -> ``deferred``;
  ``MessageRejected``, ``MailFromDomainNotVerifiedException``, ``BadRequestException``,
  ``SendingPausedException``, ``AccountSuspendedException``, ``NotFoundException`` ->
  ``rejected``.

SigV4 (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html): signed headers
``content-type`` (when there is a body), ``host`` and ``x-amz-date``; payload hash over the
exact body bytes sent; the canonical URI is the path as sent, URI-encoded once more (for every
service but S3); the query (unused here) sorted by encoded name and value. :func:`signature_v4`
is checked against AWS's published test vectors in the tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

from getfluxly_server.delivery.base import (
    MESSAGE_ID_FIELD,
    BuildContext,
    ClientBase,
    DeliveryError,
    DeliveryResult,
    Field,
    Outcome,
    OutgoingEmail,
    ProviderKind,
)
from getfluxly_server.delivery.http import (
    API_URL,
    HTTPAPI,
    Answer,
    credential,
    mailbox,
    require_body,
    status_line,
)

SERVICE = "ses"
MAX_HEADERS = 15
# Region names go into the default host name, so nothing but a region may get through.
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_THROTTLED = {
    "TooManyRequestsException",
    "LimitExceededException",
    "ThrottlingException",
    "Throttling",
}
_REJECTED = {
    "MessageRejected",
    "MailFromDomainNotVerifiedException",
    "BadRequestException",
    "SendingPausedException",
    "AccountSuspendedException",
    "NotFoundException",
}
_AUTH_ADVICE = {
    "UnrecognizedClientException": "AWS does not know this access_key_id (deleted, inactive, "
    "or from another partition)",
    "InvalidClientTokenId": "AWS does not know this access_key_id",
    "InvalidSignatureException": "Check secret_access_key (it must belong to access_key_id)",
    "SignatureDoesNotMatch": "Check secret_access_key (it must belong to access_key_id)",
    "AccessDeniedException": "The IAM identity needs the ses:SendEmail and ses:GetAccount "
    "permissions in this region",
}


def _uri_encode(text: str, *, safe: str = "") -> str:
    """RFC 3986 encoding as SigV4 wants it: only A-Z a-z 0-9 - _ . ~ stay as they are."""
    return quote(text, safe="-_.~" + safe)


def signature_v4(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    payload: bytes,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    service: str,
    amz_date: str,
) -> str:
    """The ``Authorization`` header value for a request, signing every header in ``headers``.

    ``path`` and ``query`` are as sent on the wire (already percent-encoded); ``headers`` must
    hold ``host`` and ``x-amz-date`` (= ``amz_date``, ``YYYYMMDD'T'HHMMSS'Z'``).
    """
    canonical_headers: dict[str, str] = {}
    for name, value in headers.items():
        canonical_headers[name.lower()] = " ".join(value.split())
    signed = ";".join(sorted(canonical_headers))
    pairs = sorted(
        (_uri_encode(k), _uri_encode(v)) for k, v in parse_qsl(query, keep_blank_values=True)
    )
    canonical_request = "\n".join(
        [
            method.upper(),
            _uri_encode(path or "/", safe="/"),
            "&".join(f"{k}={v}" for k, v in pairs),
            "".join(f"{name}:{canonical_headers[name]}\n" for name in sorted(canonical_headers)),
            signed,
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    key = f"AWS4{secret_access_key}".encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return (
        f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )


def _error_type(answer: Answer) -> str:
    raw = answer.headers.get("X-Amzn-ErrorType") or ""
    if not raw:
        data = answer.object()
        raw = str(data.get("__type") or data.get("code") or data.get("Code") or "")
    # "MessageRejected:http://internal.amazon.com/..." or "com.amazon...#MessageRejected"
    return raw.split(":", 1)[0].rsplit("#", 1)[-1]


class SESProvider(ClientBase):
    """Amazon SES in one region, reached with an IAM access key."""

    def __init__(
        self, config: Mapping[str, Any], secrets: Mapping[str, str], context: BuildContext
    ) -> None:
        self.access_key_id = credential(config, "access_key_id")
        self._secret = credential(secrets, "secret_access_key")
        self.region = str(config["region"]).strip().lower()
        if not _REGION.fullmatch(self.region):
            raise DeliveryError(
                "validation_error", "region must be an AWS region name such as us-east-1"
            )
        default_url = f"https://email.{self.region}.amazonaws.com"
        self._api = HTTPAPI(
            "Amazon SES", config.get("api_url"), default_url, context, [self._secret]
        )

    def __repr__(self) -> str:
        return (
            f"SESProvider(access_key_id={self.access_key_id!r}, region={self.region!r}, "
            f"api_url={str(self._api.base)!r})"
        )

    def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None, *, delivers: bool = False
    ) -> Answer:
        payload = b"" if body is None else json.dumps(body).encode("utf-8")
        url = self._api.url(path)
        # Sign exactly the Host header httpx will send (the port only when not the default).
        headers = {
            "Host": url.netloc.decode("ascii"),
            "X-Amz-Date": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"),
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        headers["Authorization"] = signature_v4(
            method=method,
            path=url.raw_path.decode("ascii").split("?", 1)[0],
            query=url.query.decode("ascii"),
            headers=headers,
            payload=payload,
            access_key_id=self.access_key_id,
            secret_access_key=self._secret,
            region=self.region,
            service=SERVICE,
            amz_date=headers["X-Amz-Date"],
        )
        return self._api.call(
            method,
            path,
            headers={"Accept": "application/json", **headers},
            content=payload or None,
            delivers=delivers,
        )

    def _error(self, answer: Answer) -> DeliveryError:
        kind = _error_type(answer)
        data = answer.object()
        message = str(data.get("message") or data.get("Message") or answer.text())
        # Only a documented error type is named back, never the answer's own text.
        known = kind in _THROTTLED or kind in _REJECTED or kind in _AUTH_ADVICE
        text = kind if known else None  # named back (see HTTPAPI.error's ``name``)
        if answer.status == 403 or kind in _AUTH_ADVICE:
            advice = _AUTH_ADVICE.get(kind, "Check access_key_id and secret_access_key")
            if "expired" in message.lower() or "RequestExpired" in kind:
                advice = "The signing time is too far from AWS's clock: check this server's clock"
            return self._api.error(answer, name=text, code="auth_failed", advice=advice)
        if kind in _THROTTLED:  # some throttling answers are 400s
            return self._api.error(answer, name=text, code="deferred", transient=True)
        if "not verified" in message.lower() or kind == "MailFromDomainNotVerifiedException":
            return self._api.error(
                answer,
                name=text,
                code="rejected",
                advice=f"Verify from_email (or its domain) in SES for {self.region}; while the "
                "account is in the sandbox every recipient must be verified too",
            )
        if kind in _REJECTED:
            return self._api.error(answer, name=text, code="rejected", transient=False)
        return self._api.error(answer, name=text)

    def verify(self) -> list[str]:
        warnings: list[str] = []
        answer = self._call("GET", "/v2/email/account", None)
        if not answer.ok:
            raise self._error(answer)
        account = answer.object()
        if not account:
            raise self._api.unexpected(answer, "without the account details")
        if account.get("ProductionAccessEnabled") is False:
            warnings.append(
                f"This SES account is in the sandbox in {self.region}: it only delivers to "
                "verified addresses, at most 200 messages a day; request production access"
            )
        if account.get("SendingEnabled") is False:
            warnings.append(f"Sending is paused for this SES account in {self.region}")
        status = account.get("EnforcementStatus")
        if status not in (None, "HEALTHY"):
            shown = status if status in ("PROBATION", "SHUTDOWN") else "not HEALTHY"
            warnings.append(f"SES reports the account's enforcement status as {shown}")
        return warnings

    def send(self, email: OutgoingEmail) -> DeliveryResult:
        require_body("Amazon SES", email.text, email.html)
        headers = email.all_headers()
        if len(headers) > MAX_HEADERS:
            raise DeliveryError(
                "rejected",
                f"Amazon SES takes at most {MAX_HEADERS} custom headers; this message has "
                f"{len(headers)}",
            )
        body: dict[str, Any] = {}
        if email.text:
            body["Text"] = {"Data": email.text, "Charset": "UTF-8"}
        if email.html:
            body["Html"] = {"Data": email.html, "Charset": "UTF-8"}
        simple: dict[str, Any] = {
            "Subject": {"Data": email.subject, "Charset": "UTF-8"},
            "Body": body,
        }
        if headers:
            simple["Headers"] = [{"Name": k, "Value": v} for k, v in headers.items()]
        request: dict[str, Any] = {
            "FromEmailAddress": mailbox(email.from_email, email.from_name, encode_non_ascii=True),
            "Destination": {"ToAddresses": list(email.to)},
            "Content": {"Simple": simple},
        }
        if email.reply_to:
            request["ReplyToAddresses"] = [email.reply_to]
        if email.message_id:  # message tags: what SES's event publishing reports back
            request["EmailTags"] = [{"Name": MESSAGE_ID_FIELD, "Value": email.message_id}]
        answer = self._call("POST", "/v2/email/outbound-emails", request, delivers=True)
        if not answer.ok:
            raise self._error(answer)
        message_id = answer.object().get("MessageId")
        if not message_id:
            raise self._api.unexpected(answer, "without a MessageId", outcome=Outcome.UNKNOWN)
        return DeliveryResult(
            provider_message_id=str(message_id) if message_id else None,
            reply=status_line(answer.status),
            elapsed_ms=answer.elapsed_ms,
        )

    def close(self) -> None:
        self._api.close()


SES = ProviderKind(
    name="ses",
    label="Amazon SES",
    fields=(
        Field("access_key_id"),
        Field("secret_access_key", secret=True),
        Field("region"),
        API_URL,
    ),
    build=SESProvider,
)
