"""Runs: entering a profile into an automation, and advancing a run step by step.

Every function here works in the caller's transaction, and everything a step does commits
with the run's new position (see ``storage.models.AutomationRun``): a message recorded
through ``domain.messages.enqueue`` under ``automation_key(automation, step, profile, run)``,
a webhook job queued, traits changed. A crash before the commit leaves the run where it was,
so the step runs again, and the key makes the message the one already recorded if the
previous attempt got as far as committing (it cannot have, but the key makes it certain).

Times are the engine's clock's (``now`` passed in), never the system's, so tests move them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from getfluxly_server.domain import identity
from getfluxly_server.domain.automations import rules
from getfluxly_server.domain.automations.definition import Definition, Step, parse
from getfluxly_server.domain.automations.schedule import next_time, quiet_until, zone_for
from getfluxly_server.domain.automations.segment_sync import TRAITS_CHANGED, TraitsChanged
from getfluxly_server.domain.automations.webhooks import WEBHOOK, CallWebhook
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.messages import (
    Content,
    NewMessage,
    Recipient,
    Source,
    automation_key,
    enqueue,
)
from getfluxly_server.domain.messages.enqueue import BulkRecipient, PreparedCache, enqueue_many
from getfluxly_server.domain.messages.recipients import address_of
from getfluxly_server.storage import automations as store
from getfluxly_server.storage import erasures as erasure_store
from getfluxly_server.storage import jobs
from getfluxly_server.storage import profiles as profile_store
from getfluxly_server.storage import templates as template_store
from getfluxly_server.storage.models import (
    Automation,
    AutomationRun,
    Profile,
    Project,
    Template,
    new_id,
)

log = logging.getLogger("getfluxly.automations")

#: The wake-up kind of due runs, on the job queue's notification channel.
WAKE_KIND = "automations"
#: Steps one run may take in one go (a guard: a definition cannot loop, but branches and
#: zero-length steps chain).
MAX_STEPS_AT_ONCE = 200

_cache: dict[tuple[str, int], Definition] = {}
_cache_lock = threading.Lock()


def definition_of(session: Session, automation_id: str, version: int) -> Definition | None:
    """The parsed definition of one version (versions never change: cached)."""
    key = (automation_id, version)
    with _cache_lock:
        found = _cache.get(key)
    if found is not None:
        return found
    raw = store.version(session, automation_id, version)
    if raw is None:
        return None
    parsed = parse(raw)
    with _cache_lock:
        if len(_cache) > 4096:
            _cache.clear()
        _cache[key] = parsed
    return parsed


def _log(
    run: AutomationRun, step_id: str, outcome: str, at: datetime, **extra: Any
) -> dict[str, Any]:
    return {
        "project_id": run.project_id, "automation_id": run.automation_id, "run_id": run.id,
        "profile_id": run.profile_id, "step_id": step_id, "outcome": outcome, "at": at,
        "message_id": extra.get("message_id"),
    }  # fmt: skip


def wake_runners(session: Session) -> None:
    """Wake idle runners once this transaction commits (a run became due now)."""
    jobs.wake_workers(session, WAKE_KIND)


# -- entering ----------------------------------------------------------------------------------


def may_enter(definition: Definition, last: tuple[datetime, str] | None, now: datetime) -> bool:
    """The re-entry policy: ``once`` (never again), ``always`` (again once the previous
    run ended), ``after`` (again once the previous run ended and it entered that long ago)."""
    if last is None:
        return True
    entered_at, status = last
    if status == store.RUNNING:
        return False
    policy = definition.reentry
    if policy.mode == "once":
        return False
    if policy.mode == "always":
        return True
    assert policy.after is not None
    return now - entered_at >= policy.after


def enter(
    session: Session,
    automation: Automation,
    definition: Definition,
    profile_ids: Iterable[str],
    now: datetime,
    *,
    context: Mapping[str, Any] | None = None,
    contexts: Mapping[str, Mapping[str, Any]] | None = None,
    trigger_key: str | None = None,
) -> list[AutomationRun]:
    """Start a run for each profile the re-entry policy lets in; the new runs are due now.
    Each run's context is ``contexts[profile_id]`` if given there, else ``context``."""
    wanted = list(dict.fromkeys(profile_ids))
    last = store.last_entries(session, automation.id, wanted)
    runs = []
    for profile_id in wanted:
        if not may_enter(definition, last.get(profile_id), now):
            continue
        if trigger_key is not None and store.has_trigger_key(
            session, automation.id, profile_id, trigger_key
        ):
            continue
        run = AutomationRun(
            id=new_id("run"), project_id=automation.project_id, automation_id=automation.id,
            version=automation.version, profile_id=profile_id, status=store.RUNNING,
            step_id=definition.first, waiting=False, wake_at=now,
            context=dict((contexts or {}).get(profile_id) or context or {}),
            trigger_key=trigger_key, failures=0, entered_at=now, updated_at=now,
        )  # fmt: skip
        session.add(run)
        runs.append(run)
    if runs:
        session.flush()
        wake_runners(session)
    return runs


# -- ending ------------------------------------------------------------------------------------


def finish(run: AutomationRun, reason: str, now: datetime) -> None:
    """End the run (``completed`` if it ran to the end, else ``exited`` with ``reason``)."""
    run.status = "completed" if reason == "completed" else "exited"
    run.exit_reason = reason
    run.step_id, run.waiting, run.wait_event, run.wake_at = None, False, None, None
    run.finished_at = run.updated_at = now


def exit_runs(session: Session, runs: Iterable[AutomationRun], reason: str, now: datetime) -> int:
    rows = []
    count = 0
    for run in runs:
        if run.status != store.RUNNING:
            continue
        rows.append(_log(run, run.step_id or "-", "exited", now))
        finish(run, reason, now)
        count += 1
    store.log(session, rows)
    return count


def reconcile_merged(
    session: Session, loser_ids: Iterable[str], survivor_id: str, now: datetime
) -> None:
    """A merge the run noticed itself (``identity.merge`` hands runs over as it merges; this
    covers a run whose profile was merged by other means): see
    ``storage.automations.merge_profiles``."""
    store.merge_profiles(session, list(loser_ids), survivor_id, now)


# -- advancing ---------------------------------------------------------------------------------


@dataclass
class _Turn:
    """One run's advance: what it needs, loaded once."""

    session: Session
    run: AutomationRun
    automation: Automation
    definition: Definition
    now: datetime
    logs: list[dict[str, Any]]
    #: Given by a caller advancing several runs together: the step log rows of the runs
    #: advanced before this one (not inserted yet), and where sends are gathered.
    batch_logs: list[dict[str, Any]] | None = None
    sends: Sends | None = None
    _profile: Profile | None = None
    _project: Project | None = None

    @property
    def profile(self) -> Profile | None:
        if self._profile is None:
            self._profile = profile_store.by_id(self.session, self.run.profile_id)
        return self._profile

    def zone_traits(self) -> tuple[Mapping[str, Any], str | None]:
        if self._project is None:
            self._project = self.session.get(Project, self.run.project_id)
        traits = self.profile.traits if self.profile is not None else {}
        return traits, self._project.timezone if self._project is not None else None

    def record(self, step_id: str, outcome: str, **extra: Any) -> None:
        self.logs.append(_log(self.run, step_id, outcome, self.now, **extra))

    def go(self, step: Step, to: str | None, outcome: str = "completed") -> None:
        self.record(step.id, outcome)
        self.run.step_id, self.run.waiting, self.run.wait_event = to, False, None

    def wait(self, until: datetime, event: str | None = None) -> None:
        self.run.waiting, self.run.wait_event, self.run.wake_at = True, event, until


def advance(
    session: Session,
    run: AutomationRun,
    automation: Automation,
    now: datetime,
    *,
    logs: list[dict[str, Any]] | None = None,
    sends: Sends | None = None,
) -> None:
    """Take the run (held by the caller's transaction) as far as it goes now: through steps
    until one waits or the run ends. Its step log rows are inserted at the end, or, given
    ``logs``, added to that list for the caller to insert with other runs' (in the same
    transaction: :func:`log_steps`). ``sends`` (with ``logs``): its messages are gathered
    there, to be recorded with the other runs' by :meth:`Sends.record` before the log rows
    are inserted."""
    definition = definition_of(session, run.automation_id, run.version)
    if definition is None:
        finish(run, "failed", now)
        run.last_error = f"version {run.version} of the automation is gone"
        return
    turn = _Turn(
        session, run, automation, definition, now, [], logs, sends if logs is not None else None
    )
    profile = turn.profile
    if profile is not None and profile.merged_into is not None:
        survivor = identity.live(session, profile)
        reconcile_merged(session, [profile.id], survivor.id, now)
        turn._profile = None
        if run.status != store.RUNNING:
            _logged(session, turn.logs, logs)
            return
    if turn.profile is None or turn.profile.erased_at is not None:
        exit_runs(session, [run], "erased", now)
        run.context = {}
        return
    for _ in range(MAX_STEPS_AT_ONCE):
        if run.step_id is None:
            finish(run, "completed", now)
            break
        step = definition.by_id.get(run.step_id)
        if step is None:
            finish(run, "failed", now)
            run.last_error = f"step {run.step_id!r} is not in version {run.version}"
            break
        if not run.waiting:
            turn.record(step.id, "entered")
        if not _STEPS[step.type](turn, step):
            break  # it waits
        if run.status != store.RUNNING:
            break
    else:
        run.wake_at = now  # more to do: the next turn goes on
    run.updated_at = now
    _logged(session, turn.logs, logs)


def _logged(
    session: Session, rows: list[dict[str, Any]], into: list[dict[str, Any]] | None
) -> None:
    if into is None:
        store.log(session, rows)
    else:
        into += rows


def log_steps(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert step log rows gathered by :func:`advance` (one statement for many runs)."""
    store.log(session, rows)


def _send_email(turn: _Turn, step: Step) -> bool:
    run, definition, now = turn.run, turn.definition, turn.now
    quiet = definition.quiet_hours
    if quiet is not None:
        traits, project_zone = turn.zone_traits()
        ends = quiet_until(now, quiet, zone_for(traits, project_zone))
        if ends is not None:
            if quiet.action == "skip":
                turn.go(step, definition.next_of[step.id], "skipped")
                return True
            if not run.waiting:
                turn.record(step.id, "postponed")
            turn.wait(ends)
            return False
    cap = definition.frequency_cap
    if cap is not None:
        sent = store.sends_since(turn.session, run.project_id, run.profile_id, now - cap.per)
        sent += sum(1 for row in turn.logs if row["outcome"] == "sent")
        sent += sum(  # this profile's sends by runs advanced just before, not logged yet
            1 for row in turn.batch_logs or ()
            if row["outcome"] == "sent" and row["profile_id"] == run.profile_id
        )  # fmt: skip
        if sent >= cap.max:
            turn.go(step, definition.next_of[step.id], "capped")
            return True
    template = _template(turn.session, step.template_id or "")
    transactional = template is not None and template.kind == "transactional"
    if turn.sends is not None:
        return turn.sends.add(turn, step, transactional)
    new = NewMessage(
        Recipient(profile_id=run.profile_id),
        Content(template_id=step.template_id),
        Source(
            origin="automation", automation_id=run.automation_id, step_id=step.id,
            provider_id=step.provider_id, transactional=transactional,
        ),
        data={"event": run.context.get("event")} if run.context.get("event") else {},
        idempotency_key=automation_key(run.automation_id, step.id, run.profile_id, run.id),
    )  # fmt: skip
    try:
        # (No savepoint: enqueue refuses before it writes anything.)
        recorded = enqueue(turn.session, run.project_id, new, cache=_prepared(turn.session))
    except DomainError as exc:
        # No address, no provider, the template deleted: this person gets no message from
        # this step, and the run goes on (the stats count it as failed).
        log.info("automation %s step %s: no message for %s: %s", run.automation_id, step.id,
                 run.profile_id, exc.detail)  # fmt: skip
        turn.go(step, definition.next_of[step.id], "failed")
        return True
    turn.record(step.id, "sent", message_id=recorded.message.id)
    turn.go(step, definition.next_of[step.id])
    return True


def _prepared(session: Session) -> PreparedCache:
    """The content and provider checks of this transaction's sends, kept on its session:
    the runs advanced together mostly send the same template through the same provider."""
    cache: PreparedCache = session.info.setdefault("automation_prepared", {})
    return cache


def _template(session: Session, template_id: str) -> Template | None:
    """The template, kept on the session for its transaction (the session's identity map
    holds objects weakly: without this, each send would read it again)."""
    kept: dict[str, Template | None] = session.info.setdefault("automation_templates", {})
    if template_id not in kept:
        kept[template_id] = template_store.get(session, template_id)
    return kept[template_id]


class Sends:
    """The messages of send steps of runs advanced together, recorded set-based (one
    ``enqueue_many`` per automation step: suppressions looked up once, the rows inserted in
    multi-row statements) instead of one ``enqueue`` each.

    For runs that began in the caller's transaction, whose idempotency keys (they hold the
    new run's id) no message can have yet. The person's address is checked as ``enqueue``
    checks it (an erased person, one being erased, no valid ``email`` trait: the step fails
    for them and the run goes on). Anything else ``enqueue`` would refuse (the template, the
    provider) makes :meth:`record` raise: the caller then rolls the batch back and advances
    each run on its own (:func:`advance` without ``sends``), as it does for any error.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str, str, str | None, str | None, bool], _Group] = {}
        self._erasing: dict[str, set[str]] = {}  # by project: profiles being erased

    def add(self, turn: _Turn, step: Step, transactional: bool) -> bool:
        run, definition = turn.run, turn.definition
        profile = turn.profile
        assert profile is not None  # (advance checked it)
        erasing = self._erasing.get(run.project_id)
        if erasing is None:
            pending = erasure_store.pending(turn.session, run.project_id)
            erasing = self._erasing[run.project_id] = {p for e in pending for p in e.profile_ids}
        try:
            email = address_of(turn.session, profile, erasing)
        except DomainError as exc:
            log.info("automation %s step %s: no message for %s: %s", run.automation_id,
                     step.id, run.profile_id, exc.detail)  # fmt: skip
            turn.go(step, definition.next_of[step.id], "failed")
            return True
        context = run.context.get("event")
        recipient = BulkRecipient(
            email, automation_key(run.automation_id, step.id, run.profile_id, run.id),
            profile_id=run.profile_id, data={"event": context} if context else {},
        )  # fmt: skip
        key = (run.project_id, run.automation_id, step.id, step.template_id, step.provider_id,
               transactional)  # fmt: skip
        group = self._groups.setdefault(key, _Group())
        turn.record(step.id, "sent", message_id=None)
        group.recipients.append(recipient)
        group.rows.append(turn.logs[-1])
        turn.go(step, definition.next_of[step.id])
        return True

    def record(self, session: Session) -> None:
        """Record the gathered messages, and put their ids in the "sent" step log rows."""
        for (
            project_id,
            automation_id,
            step_id,
            template_id,
            provider_id,
            transactional,
        ), group in self._groups.items():
            result = enqueue_many(
                session, project_id, group.recipients, Content(template_id=template_id),
                Source(origin="automation", automation_id=automation_id, step_id=step_id,
                       provider_id=provider_id, transactional=transactional),
            )  # fmt: skip
            if len(result.created) != len(group.recipients):
                raise RuntimeError(
                    f"automation {automation_id} step {step_id}: {len(group.recipients)} "
                    f"messages, {len(result.created)} recorded; advancing one run at a time"
                )
            for row, message_id in zip(group.rows, result.created, strict=True):
                row["message_id"] = message_id
        self._groups.clear()


@dataclass
class _Group:
    recipients: list[BulkRecipient] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


def _delay(turn: _Turn, step: Step) -> bool:
    if turn.run.waiting:
        turn.go(step, turn.definition.next_of[step.id])
        return True
    if step.duration is not None:
        turn.wait(turn.now + step.duration)
    else:
        assert step.until is not None
        traits, project_zone = turn.zone_traits()
        turn.wait(next_time(turn.now, step.until, zone_for(traits, project_zone)))
    return False


def _wait_for_event(turn: _Turn, step: Step) -> bool:
    if turn.run.waiting:  # woken by the clock: the timeout
        turn.go(step, turn.definition.after(step.on_timeout, step.id), "timed_out")
        return True
    assert step.timeout is not None
    turn.wait(turn.now + step.timeout, step.event)
    return False


def event_arrived(
    session: Session, run: AutomationRun, step: Step, definition: Definition, now: datetime
) -> None:
    """The event a run waits for came: it takes the ``on_event`` path, due now."""
    store.log(session, [_log(run, step.id, "event", now)])
    run.step_id = definition.after(step.on_event, step.id)
    run.waiting, run.wait_event, run.wake_at, run.updated_at = False, None, now, now


def _branch(turn: _Turn, step: Step) -> bool:
    matched = rules.matches(
        turn.session, turn.run.project_id, turn.run.profile_id, step.rule, turn.now
    )
    path = step.then if matched else step.otherwise
    turn.go(step, turn.definition.after(path, step.id), "then" if matched else "else")
    return True


def _update_traits(turn: _Turn, step: Step) -> bool:
    profile = turn.profile
    assert profile is not None
    profile.traits = {**profile.traits, **step.traits}
    profile.updated_at = turn.now
    # Segments re-evaluate the profile once this commits (see segment_sync for why later).
    TRAITS_CHANGED.enqueue(
        turn.session, TraitsChanged(project_id=turn.run.project_id, profile_ids=[profile.id])
    )
    turn.go(step, turn.definition.next_of[step.id])
    return True


def _webhook(turn: _Turn, step: Step) -> bool:
    run = turn.run
    WEBHOOK.enqueue(
        turn.session,
        CallWebhook(
            project_id=run.project_id, automation_id=run.automation_id, run_id=run.id,
            step_id=step.id, profile_id=run.profile_id, url=step.url or "", body=step.body,
        ),
    )  # fmt: skip
    turn.go(step, turn.definition.next_of[step.id])
    return True


def _exit(turn: _Turn, step: Step) -> bool:
    turn.record(step.id, "completed")
    finish(turn.run, "exit_step", turn.now)
    return False


_STEPS = {
    "send_email": _send_email,
    "delay": _delay,
    "wait_for_event": _wait_for_event,
    "branch": _branch,
    "update_traits": _update_traits,
    "webhook": _webhook,
    "exit": _exit,
}


def retry_later(run: AutomationRun, error: str, now: datetime) -> None:
    """A run whose step raised: tried again with backoff, ended after 10 failures."""
    run.failures += 1
    run.last_error = error[:2000]
    if run.failures >= 10:
        finish(run, "failed", now)
    else:
        run.wake_at = now + timedelta(seconds=min(3600, 5 * 2**run.failures))
    run.updated_at = now
