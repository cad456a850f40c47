"""The machine-readable ingest spec (``getfluxly_server/spec/ingest.json``) for the tests of
every component that validates events: the server, the SDK, the browser script and
:mod:`flux_testkit.ingest_fake`.

The server loads its limits from the file itself; the other components keep their own
copies of the rules (they run where the server is not installed), and their tests compare
those copies with this file: its limits and patterns, and its valid and invalid example
events, each invalid one named by the rule it breaks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Example:
    name: str
    event: dict[str, Any]
    #: For invalid examples: the rule broken (a key of ``rules``) and a word the server's
    #: error detail contains.
    rule: str | None = None
    detail: str | None = None


@cache
def spec() -> dict[str, Any]:
    """The spec as JSON (read once)."""
    text = (resources.files("getfluxly_server") / "spec" / "ingest.json").read_text("utf-8")
    value: dict[str, Any] = json.loads(text)
    return value


def limits() -> dict[str, int]:
    value: dict[str, int] = spec()["limits"]
    return value


def valid() -> list[Example]:
    return [Example(e["name"], e["event"]) for e in spec()["valid"]]


def invalid() -> list[Example]:
    return [Example(e["name"], e["event"], e["rule"], e["detail"]) for e in spec()["invalid"]]


def rules() -> set[str]:
    return set(spec()["rules"])
