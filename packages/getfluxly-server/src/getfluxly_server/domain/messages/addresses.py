"""Addresses as the ledger keeps them: the address alone (a display name is dropped), its
domain lower-cased (domains are case-insensitive; local parts are kept as written, as RFC
5321 asks), so a list filter ``to=`` finds a message by exact comparison."""

from __future__ import annotations

from fluxmail import FluxMailException, parse_address
from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.storage.models import ADDRESS_MAX


def canonical_address(value: str, *, field: str = "to") -> str:
    """The address as the ledger stores it (see the module docstring); ValidationFailed
    naming ``field`` if it is not one address."""
    try:
        address = parse_address(value, role=field).addr_spec
    except FluxMailException as exc:
        raise ValidationFailed(f"{field}: {exc}", field=field) from None
    local, _, domain = address.rpartition("@")
    canonical = f"{local}@{domain.lower()}"
    if len(canonical) > ADDRESS_MAX:
        raise ValidationFailed(f"{field}: longer than {ADDRESS_MAX} characters", field=field)
    return canonical
