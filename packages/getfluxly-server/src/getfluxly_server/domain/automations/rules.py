"""Segment rules as a branch step uses them: the segments feature's grammar and evaluation
(``domain.segments.rules``), behind two functions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import ValidationFailed


def parse_rule(rule: Any, path: str) -> Any:
    """``rule`` checked against the segment grammar (``validation_error`` naming the path)."""
    if not isinstance(rule, dict) or not rule:
        raise ValidationFailed(f"{path}: must be a segment rule (a JSON object)", field=path)
    return rule


def matches(session: Session, project_id: str, profile_id: str, rule: Any, now: datetime) -> bool:
    """Whether the profile matches ``rule`` at ``now``."""
    raise NotImplementedError("segment rules arrive with domain.segments.rules")
