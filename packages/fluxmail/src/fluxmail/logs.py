"""FluxMail's logging: the ``fluxmail`` logger, and per-mailer levels that change nothing global."""

from __future__ import annotations

import logging

log = logging.getLogger("fluxmail")
# A library stays silent until the application configures logging: without this, Python's
# last-resort handler would print FluxMail's warnings (a partial refusal...) to stderr.
log.addHandler(logging.NullHandler())

#: What FluxMail code logs through: a Logger, or the per-mailer view below.
Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


class LevelView(logging.LoggerAdapter[logging.Logger]):
    """The ``fluxmail`` logger seen through one mailer's ``log_level``.

    A record gets through when it reaches both this mailer's level and the logger's own
    configuration, so ``FluxMail(log_level="DEBUG")`` shows one mailer's conversation without
    touching the level the application set on ``fluxmail``.
    """

    def __init__(self, logger: logging.Logger, level: int) -> None:
        super().__init__(logger, {})
        self.level = level

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's own name
        return level >= self.level and self.logger.isEnabledFor(level)


def level_view(log_level: str | int) -> LevelView:
    """``fluxmail`` seen at ``log_level`` ("DEBUG", "warning", 10, ...); ValueError if unknown."""
    level = logging.getLevelName(log_level.upper()) if isinstance(log_level, str) else log_level
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {log_level!r}")
    return LevelView(log, level)
