"""Every provider type the platform knows, by the name used in the API."""

from __future__ import annotations

from getfluxly_server.delivery.base import ProviderKind
from getfluxly_server.delivery.smtp import SMTP

PROVIDERS: dict[str, ProviderKind] = {kind.name: kind for kind in (SMTP,)}
