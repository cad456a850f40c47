"""Segment rules as a branch step uses them: the segments feature's grammar, its check of
the automations and broadcasts a rule names (``domain.segments.references``) and its
evaluation (``domain.segments.rules``), parsed once per rule text."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain.segments import references
from getfluxly_server.domain.segments import rules as segment_rules


def parse_rule(rule: Any, path: str) -> segment_rules.Rule:
    """``rule`` checked against the segment grammar (``validation_error`` whose field is the
    JSON path of the fault, under ``path``)."""
    return segment_rules.parse(rule, path)


def check_references(session: Session, project_id: str, rule: Any, path: str) -> None:
    """The automations and broadcasts a (parsed) ``rule`` names are the project's: the
    segments' own check, so a branch refuses another project's id, or a missing one, in the
    same words, with the JSON path under ``path`` (``steps[2].rule.any[0].broadcast_id``)."""
    references.check(session, project_id, rule, path)


@lru_cache(maxsize=1024)
def _parsed(text: str) -> segment_rules.Rule:
    return segment_rules.parse(json.loads(text))


def matches(session: Session, project_id: str, profile_id: str, rule: Any, now: datetime) -> bool:
    """Whether the profile matches ``rule`` (the JSON of a stored definition) at ``now``."""
    parsed = _parsed(json.dumps(rule, sort_keys=True))
    return segment_rules.matches(session, project_id, profile_id, parsed, now)
