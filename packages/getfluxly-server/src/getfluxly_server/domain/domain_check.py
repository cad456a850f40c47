"""The domain check (``GET /v1/email-providers/{id}/domain-check``): whether the DNS of a
provider's ``from_email`` domain lets its mail reach the inbox.

Three checks, each ``ok``, ``missing`` or ``wrong``, with the records found and, unless ok,
the exact record to publish:

- SPF: a TXT record ``v=spf1 ...`` at the domain (for Resend, at ``send.<domain>``, the
  envelope domain it sends from). Exactly one; for a relay GetFluxly knows, it includes the
  relay's SPF domain (directly or through another include); evaluating it takes at most 10
  DNS lookups (RFC 7208 4.6.4: ``include``, ``a``, ``mx``, ``ptr``, ``exists``,
  ``redirect``, counted through every include); it does not end in ``+all``.
- DKIM: a TXT record ``v=DKIM1; ... p=<key>`` at ``<selector>._domainkey.<domain>`` (CNAMEs
  followed), for the selector given (``?dkim_selector=``), else the selectors the relay is
  known to use, else common ones. ``p=`` empty means the key was revoked: wrong.
- DMARC: one TXT record ``v=DMARC1; p=...`` at ``_dmarc.<domain>`` (or, if there is none,
  at a parent domain: the organisational domain's policy covers its subdomains), with a
  policy of none, quarantine or reject.

The relay is the provider's kind (SES, SendGrid, ...) or, for SMTP, recognised from the host
name (``smtp.sendgrid.net``, ``email-smtp.<region>.amazonaws.com``, ...). DNS answers come
from the system's resolvers, or from ``GETFLUXLY_DNS_RESOLVER``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.providers import find
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.storage.models import EmailProvider

Status = Literal["ok", "missing", "wrong"]
#: RFC 7208 4.6.4: the most DNS lookups evaluating an SPF record may take.
SPF_LOOKUP_LIMIT = 10
_LOOKUP_TERMS = ("include", "a", "mx", "ptr", "exists")
#: Selectors tried when neither the caller nor the relay names one.
COMMON_SELECTORS = ("default", "selector1", "selector2", "google", "k1", "s1", "s2", "dkim",
                    "mail", "smtp")  # fmt: skip


@dataclass(frozen=True)
class Relay:
    """What a relay asks of its senders' DNS."""

    name: str
    spf_include: str
    dkim_selectors: tuple[str, ...] = ()
    #: The SPF record belongs at this subdomain of the from domain ("" for the domain).
    spf_subdomain: str = ""


RELAYS: dict[str, Relay] = {
    "ses": Relay("Amazon SES", "amazonses.com"),
    "sendgrid": Relay("SendGrid", "sendgrid.net", ("s1", "s2")),
    "mailgun": Relay("Mailgun", "mailgun.org", ("smtp", "mx", "k1", "krs", "pic")),
    "postmark": Relay("Postmark", "spf.mtasv.net"),
    "resend": Relay("Resend", "amazonses.com", ("resend",), spf_subdomain="send"),
    "smtp2go": Relay("SMTP2GO", "spf.smtp2go.com"),
    "brevo": Relay("Brevo", "spf.brevo.com", ("brevo1", "brevo2", "mail")),
    "mailtrap": Relay("Mailtrap", "_spf.smtp.mailtrap.live", ("rwmt1", "rwmt2")),
    "google": Relay("Google Workspace", "_spf.google.com", ("google",)),
    "microsoft": Relay("Microsoft 365", "spf.protection.outlook.com", ("selector1", "selector2")),
}
#: SMTP host names (suffixes) of known relays.
SMTP_HOSTS: tuple[tuple[str, str], ...] = (
    (".amazonaws.com", "ses"), ("sendgrid.net", "sendgrid"), ("mailgun.org", "mailgun"),
    ("postmarkapp.com", "postmark"), ("resend.com", "resend"), ("smtp2go.com", "smtp2go"),
    ("brevo.com", "brevo"), ("sendinblue.com", "brevo"), ("mailtrap.io", "mailtrap"),
    ("gmail.com", "google"), ("googlemail.com", "google"), ("office365.com", "microsoft"),
    ("outlook.com", "microsoft"),
)  # fmt: skip


@dataclass(frozen=True)
class Record:
    """A DNS record to publish."""

    type: str
    name: str
    value: str


@dataclass(frozen=True)
class Check:
    status: Status
    #: The DNS name looked at (the first that answered, for DKIM and DMARC).
    name: str
    detail: str
    found: Sequence[str] = ()
    #: What to publish (None when ok).
    publish: Record | None = None
    #: SPF: the DNS lookups evaluating it takes; DMARC: the policy; DKIM: the selector.
    lookups: int | None = None
    policy: str | None = None
    selector: str | None = None


@dataclass(frozen=True)
class DomainReport:
    domain: str
    relay: str | None
    spf: Check
    dkim: Check
    dmarc: Check


class TxtLookup(Protocol):
    def __call__(self, name: str) -> list[str] | None:
        """The TXT records at ``name`` (CNAMEs followed), None if the name does not exist or
        has none; raises DomainError ``dns_unavailable`` when DNS cannot answer."""
        ...


def resolver(address: tuple[str, int] | None, timeout: float = 5.0) -> TxtLookup:
    """TXT lookups through the system's resolvers, or the DNS server at ``address``."""
    # Imported here: only this endpoint needs dnspython (kept out of every process's start).
    import dns.exception
    import dns.resolver

    try:
        engine = dns.resolver.Resolver(configure=address is None)
    except dns.exception.DNSException:
        raise _unavailable("no DNS resolver is configured on the server") from None
    if address is not None:
        engine.nameservers = [address[0]]
        engine.port = address[1]
    engine.lifetime = timeout
    engine.timeout = timeout / 2

    def txt(name: str) -> list[str] | None:
        try:
            answer = engine.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout):
            raise _unavailable(f"DNS did not answer for {name}") from None
        except dns.exception.DNSException as exc:
            raise _unavailable(f"DNS failed for {name} ({type(exc).__name__})") from None
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]

    return txt


def _unavailable(why: str) -> DomainError:
    return DomainError(
        "dns_unavailable", f"The domain could not be checked: {why}. Try again later."
    )


def relay_of(provider: EmailProvider) -> str | None:
    """The known relay behind ``provider``, if any."""
    if provider.provider in RELAYS:
        return provider.provider
    host = str(provider.config.get("smtp_host") or "").lower().rstrip(".")
    for suffix, relay in SMTP_HOSTS:
        if host == suffix.lstrip(".") or host.endswith(
            suffix if suffix[0] == "." else "." + suffix
        ):
            return relay
    return None


def for_provider(session: Session, principal: Principal, provider_id: str) -> EmailProvider:
    """The provider to check, if the caller may see it (``not_found`` otherwise)."""
    return find(session, principal, provider_id)


def check(
    provider: EmailProvider, lookup: TxtLookup, dkim_selector: str | None = None
) -> DomainReport:
    """The report for ``provider``'s from domain (see the module docstring)."""
    domain = provider.from_email.rpartition("@")[2].strip().lower().rstrip(".")
    relay_name = relay_of(provider)
    relay = RELAYS.get(relay_name) if relay_name else None
    host = str(provider.config.get("smtp_host") or "") if relay is None else ""
    return DomainReport(
        domain=domain,
        relay=relay_name,
        spf=check_spf(domain, relay, host, lookup),
        dkim=check_dkim(domain, relay, dkim_selector, lookup),
        dmarc=check_dmarc(domain, lookup),
    )


# SPF.


def _spf_records(records: list[str] | None) -> list[str]:
    return [r.strip() for r in records or [] if r.strip().lower().split(" ")[0] == "v=spf1"]


def _mechanism(term: str) -> tuple[str, str]:
    """(name lower-cased without qualifier, value) of an SPF term: ``~all`` -> (all, "")."""
    body = term.lstrip("+-~?")
    name, sep, value = body.partition(":") if ":" in body else body.partition("=")
    return name.lower(), value if sep else ""


@dataclass
class _Walk:
    lookups: int = 0
    reached: set[str] = field(default_factory=set)
    broken: list[str] = field(default_factory=list)


def _walk(record: str, lookup: TxtLookup, walk: _Walk, depth: int = 0) -> None:
    """Count the record's lookups, following includes and redirects (as a receiver would)."""
    for term in record.split()[1:]:
        name, value = _mechanism(term)
        if name in _LOOKUP_TERMS or name == "redirect":
            walk.lookups += 1
        if name in ("include", "redirect") and value:
            target = value.lower().rstrip(".")
            walk.reached.add(target)
            if walk.lookups > SPF_LOOKUP_LIMIT or depth > SPF_LOOKUP_LIMIT:
                return
            found = _spf_records(lookup(target))
            if len(found) != 1:
                walk.broken.append(target)
                continue
            _walk(found[0], lookup, walk, depth + 1)


def _suggested_spf(relay: Relay | None, host: str) -> str:
    if relay is not None:
        return f"v=spf1 include:{relay.spf_include} ~all"
    if host:
        try:
            address = ipaddress.ip_address(host)
            return f"v=spf1 ip{address.version}:{address} ~all"
        except ValueError:
            return f"v=spf1 a:{host.lower()} ~all"
    return "v=spf1 mx ~all"


def _with_include(record: str, include: str) -> str:
    """``record`` with ``include:`` added before its ``all`` (or ``redirect``), else at the end."""
    terms = record.split()
    for index, term in enumerate(terms[1:], start=1):
        if _mechanism(term)[0] in ("all", "redirect"):
            return " ".join([*terms[:index], f"include:{include}", *terms[index:]])
    return " ".join([*terms, f"include:{include}", "~all"])


def _merged(records: Sequence[str]) -> str:
    """One record with every mechanism of ``records`` (in a stable order: DNS gives records
    in any order), ending in the strictest ``all`` among them."""
    terms: list[str] = []
    endings = {"-all": 0, "~all": 1, "?all": 2}
    ending = "~all"
    for record in sorted(records):
        for term in record.split()[1:]:
            if _mechanism(term)[0] != "all":
                if term not in terms:
                    terms.append(term)
            elif endings.get(term.lower(), 9) < endings[ending]:
                ending = term.lower()
    return " ".join(["v=spf1", *terms, ending])


def check_spf(domain: str, relay: Relay | None, host: str, lookup: TxtLookup) -> Check:
    name = f"{relay.spf_subdomain}.{domain}" if relay and relay.spf_subdomain else domain
    found = _spf_records(lookup(name))
    suggested = _suggested_spf(relay, host)
    if not found:
        return Check("missing", name, "No SPF record: publish one authorising your relay.",
                     publish=Record("TXT", name, suggested))  # fmt: skip
    if len(found) > 1:
        return Check(
            "wrong", name,
            f"{len(found)} SPF records: receivers treat that as an error (RFC 7208 3.2); "
            "publish one record in their place.",
            found, Record("TXT", name, _merged(found)),
        )  # fmt: skip
    record = found[0]
    walk = _Walk()
    _walk(record, lookup, walk)
    problems: list[str] = []
    fixed = record
    if walk.lookups > SPF_LOOKUP_LIMIT:
        problems.append(
            f"evaluating it takes {walk.lookups} DNS lookups, over the limit of "
            f"{SPF_LOOKUP_LIMIT} (receivers fail it): remove includes you no longer use"
        )
    if walk.broken:
        problems.append(
            "these includes have no single SPF record: " + ", ".join(sorted(walk.broken))
        )
    if relay is not None and relay.spf_include not in walk.reached:
        problems.append(f"it does not include {relay.name}'s {relay.spf_include}")
        fixed = _with_include(record, relay.spf_include)
    if any(t.lower() in ("all", "+all") for t in record.split()[1:]):
        problems.append("it ends in +all, which lets anyone send as this domain")
        fixed = " ".join("~all" if t.lower() in ("all", "+all") else t for t in fixed.split())
    if problems:
        return Check("wrong", name, "The SPF record is wrong: " + "; ".join(problems) + ".",
                     found, Record("TXT", name, fixed), lookups=walk.lookups)  # fmt: skip
    return Check("ok", name, "One SPF record, authorising your relay.", found,
                 lookups=walk.lookups)  # fmt: skip


# DKIM.


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def check_dkim(domain: str, relay: Relay | None, selector: str | None, lookup: TxtLookup) -> Check:
    if selector:
        selectors: tuple[str, ...] = (selector,)
    elif relay is not None and relay.dkim_selectors:
        selectors = relay.dkim_selectors
    else:
        selectors = COMMON_SELECTORS
    for name in selectors:
        where = f"{name}._domainkey.{domain}"
        found = [r for r in lookup(where) or [] if "p=" in r.replace(" ", "")]
        if not found:
            continue
        tags = _tags(found[0])
        version = tags.get("v", "DKIM1")
        if version != "DKIM1" or not tags.get("p"):
            why = "its key is empty (revoked)" if not tags.get("p") else f"v={version}"
            return Check("wrong", where, f"The DKIM record for selector {name!r} is wrong: {why}.",
                         found, _dkim_record(where, relay), selector=name)  # fmt: skip
        return Check("ok", where, f"A DKIM key is published for selector {name!r}.", found,
                     selector=name)  # fmt: skip
    first = f"{selectors[0]}._domainkey.{domain}"
    tried = ", ".join(selectors)
    return Check(
        "missing", first,
        f"No DKIM key at the selector(s) tried ({tried}). Publish the key your relay gives "
        "you; if it uses another selector, check it with ?dkim_selector=.",
        publish=_dkim_record(first, relay), selector=selectors[0],
    )  # fmt: skip


def _dkim_record(name: str, relay: Relay | None) -> Record:
    source = f"{relay.name}'s domain settings" if relay else "your relay's DKIM settings"
    return Record("TXT", name, f"v=DKIM1; k=rsa; p=<the public key from {source}>")


# DMARC.


def _dmarc_records(records: list[str] | None) -> list[str]:
    return [
        r.strip()
        for r in records or []
        if r.strip().replace(" ", "").upper().startswith("V=DMARC1")
    ]


def check_dmarc(domain: str, lookup: TxtLookup) -> Check:
    labels = domain.split(".")
    own = f"_dmarc.{domain}"
    suggested = Record("TXT", own, f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}")
    # The domain's own record, else its parents' (down to two labels): a policy published
    # at the organisational domain covers its subdomains.
    for start in range(0, max(1, len(labels) - 1)):
        where = "_dmarc." + ".".join(labels[start:])
        found = _dmarc_records(lookup(where))
        if not found:
            continue
        if len(found) > 1:
            return Check("wrong", where, f"{len(found)} DMARC records: receivers ignore them "
                         "all (RFC 7489 6.6.3); publish one.", found,
                         Record("TXT", where, sorted(found)[0]))  # fmt: skip
        policy = _tags(found[0]).get("p", "").lower()
        if policy not in ("none", "quarantine", "reject"):
            fixed = f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"
            return Check("wrong", where, "The DMARC record has no valid policy (p=none, "
                         "quarantine or reject).", found, Record("TXT", where, fixed))  # fmt: skip
        detail = f"A DMARC policy of p={policy}" + (
            f" (from {where[len('_dmarc.') :]}, covering this domain)" if start else ""
        )
        if policy == "none":
            detail += ": reports only; move to quarantine once your mail passes"
        return Check("ok", where, detail + ".", found, policy=policy)
    return Check("missing", own, "No DMARC record: Gmail and Yahoo require one of bulk senders. "
                 "Publish this (with a mailbox of yours for the reports).",
                 publish=suggested)  # fmt: skip
