"""Telling machine opens and clicks from people's: heuristics, each one documented.

A machine's open or click is still recorded (``machine=True`` in ``message_events``), so the
ledger shows it, but segments and statistics leave it out. A request is a machine's when:

- it is a ``HEAD`` request (a scanner checking where a link goes; people's clients GET);
- it has no ``User-Agent``, or one of a known scanner, preview fetcher or HTTP library
  (:data:`SCANNER_AGENTS`: security gateways such as Barracuda, Mimecast, Proofpoint;
  link previews of chat apps; ``curl``, ``python-requests``, ...);
- an open comes from Apple Mail Privacy Protection, which fetches every image of every
  message through Apple's proxies whether or not it is read: its ``User-Agent`` is the bare
  ``Mozilla/5.0``, or it comes from Apple's network (17.0.0.0/8);
- it comes within ``scanner_seconds`` of the relay accepting the message
  (``GETFLUXLY_TRACKING_SCANNER_SECONDS``, default 5): security gateways open and follow
  every link on arrival, before anyone can have read the message.

Gmail's and Yahoo's image proxies fetch when the reader opens the message: people's opens.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

#: Lower-cased substrings of the User-Agents of machines that open or click.
SCANNER_AGENTS: tuple[str, ...] = (
    "barracuda", "mimecast", "proofpoint", "symantec", "messagelabs", "trend micro",
    "trendmicro", "forcepoint", "fortinet", "sophos", "zscaler", "cisco", "ironport",
    "appriver", "safelinks", "safe links", "bot", "crawler", "spider", "preview",
    "facebookexternalhit", "slack", "whatsapp", "telegram", "discord", "skypeuripreview",
    "microsoft office", "ms-office", "curl/", "wget/", "python-requests", "python-httpx",
    "python-urllib", "go-http-client", "java/", "okhttp", "libwww-perl", "headlesschrome",
    "phantomjs",
)  # fmt: skip
#: Apple Mail Privacy Protection's fetcher sends exactly this.
APPLE_PROXY_AGENT = "Mozilla/5.0"
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")


@dataclass(frozen=True)
class Hit:
    """What a tracking request tells about who made it."""

    method: str
    user_agent: str
    address: str
    at: datetime
    #: When the relay accepted the message (None: not known).
    sent_at: datetime | None = None


def _scanner_agent(agent: str) -> bool:
    lowered = agent.strip().lower()
    return not lowered or any(token in lowered for token in SCANNER_AGENTS)


def _too_soon(hit: Hit, scanner_seconds: float) -> bool:
    return hit.sent_at is not None and (hit.at - hit.sent_at).total_seconds() < scanner_seconds


def _apple(hit: Hit) -> bool:
    if hit.user_agent.strip() == APPLE_PROXY_AGENT:
        return True
    try:
        return ipaddress.ip_address(hit.address) in APPLE_NETWORK
    except ValueError:
        return False


def machine_open(hit: Hit, scanner_seconds: float) -> bool:
    return (
        hit.method == "HEAD"
        or _scanner_agent(hit.user_agent)
        or _apple(hit)
        or _too_soon(hit, scanner_seconds)
    )


def machine_click(hit: Hit, scanner_seconds: float) -> bool:
    return hit.method == "HEAD" or _scanner_agent(hit.user_agent) or _too_soon(hit, scanner_seconds)
