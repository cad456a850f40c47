"""A project's overview: its mail over the last days, charted (``domain.message_stats``)."""

from __future__ import annotations

from fastapi import Response

from getfluxly_server.domain import message_stats, tenancy
from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.web import charts
from getfluxly_server.web.routing import Ctx, page

PERIODS = (7, 30, 90)


@page("/projects/{project_id}")
def overview(ctx: Ctx) -> Response:
    raw = ctx.query.get("days", "30")
    if not raw.isdigit() or int(raw) not in PERIODS:
        raise ValidationFailed(f"days must be one of {', '.join(map(str, PERIODS))}")
    days = int(raw)
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        project = tenancy.project_of(session, ctx.user.principal, project_id)
        activity = message_stats.daily(session, ctx.user.principal, project_id, days)
        name = project.name
    return ctx.render(
        "overview.html",
        project_name=name,
        days=days,
        periods=PERIODS,
        activity=activity,
        series=message_stats.SERIES,
        legend=charts.legend(activity),
        chart=charts.svg(activity, f"{name}: mail per day, last {days} days"),
    )
