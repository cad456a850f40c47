"""Charts as inline SVG, drawn on the server: no chart library, nothing to load. Every chart
comes with the same numbers as a table (screen readers, copying, small screens)."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

from getfluxly_server.domain.message_stats import SERIES, Activity

#: A colour per series, told apart by people with the common colour-vision deficiencies.
COLOURS = {
    "sent": "#2f5bd3",
    "delivered": "#127a3b",
    "bounced": "#b42318",
    "complained": "#8f3fb8",
    "opened": "#d97706",
    "clicked": "#0e7490",
}
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28


@dataclass(frozen=True)
class Legend:
    name: str
    label: str
    colour: str
    total: int


def legend(activity: Activity) -> list[Legend]:
    return [Legend(n, label, COLOURS[n], activity.total(n)) for n, label in SERIES]


def _nice_max(value: int) -> int:
    """The axis top: ``value`` rounded up to 1, 2 or 5 times a power of ten."""
    if value <= 4:
        return 4
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def svg(activity: Activity, title: str) -> Markup:
    """A line per series over the days; y from 0 to a round maximum."""
    days = activity.days
    top = _nice_max(max((max(v) for v in activity.counts.values()), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(days) - 1, 1)

    def x(i: int) -> float:
        return LEFT + i * step

    def y(v: int) -> float:
        return TOP + plot_h - (v / top) * plot_h

    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{escape(title)}</title>',
    ]
    for tick in range(5):
        value = top * tick // 4
        ty = y(value)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}" '
            'stroke="#e3e7ee" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{ty + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#5b6474">{value}</text>'
        )
    label_every = max(1, len(days) // 6)
    for i, day in enumerate(days):
        if i % label_every == 0 or i == len(days) - 1:
            parts.append(
                f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" font-size="11" text-anchor="middle" '
                f'fill="#5b6474">{day:%m-%d}</text>'
            )
    for name, _label in SERIES:
        values = activity.counts[name]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline data-series="{name}" fill="none" stroke="{COLOURS[name]}" '
            f'stroke-width="2" points="{points}"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped text only
