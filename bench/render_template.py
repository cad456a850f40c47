"""Template rendering: GetFluxly's sandboxed Liquid next to Jinja2's sandbox, per message.

Usage (from the repository root; ``bench/README.md`` has the details)::

    .venv/bin/python bench/render_template.py            # N=5,000 renders, R=5 rounds
    .venv/bin/python bench/render_template.py --quick    # N=200, R=1: a smoke run, < 10 s

One process, one thread, one template of about 2 KB of HTML (a receipt: greeting, a loop over
order lines, a conditional block, a button, a footer with the unsubscribe link; what a
lifecycle email looks like), written once in Liquid and once in Jinja2 with the same output.
Each render gets its own recipient's data, built before the clock starts. The engines:

* ``liquid-sandbox``: GetFluxly's renderer for the HTML part
  (``domain/templates/sandbox.render_field``: limits, deadline, autoescape), from a template
  compiled once, as the worker's cache holds it;
* ``liquid-message``: the whole message as a worker makes it (``render_message``: subject,
  HTML, and the text part derived from the HTML, plus the copy of the data to plain values);
* ``liquid-plain``: python-liquid with autoescape and no sandbox, to show the sandbox's cost;
* ``jinja2-sandbox``: ``jinja2.sandbox.SandboxedEnvironment(autoescape=True)``, the peer;
* ``jinja2-plain``: ``jinja2.Environment(autoescape=True)``, for scale.

Rounds are interleaved (each round runs every engine once) and an engine's figure is its
median over the rounds, so a noisy stretch of the shared machine hits all alike. Every
engine's output is checked against the others' (same text after normalising whitespace) before
anything is timed. stdout: a table, then one JSON line; notes go to stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import jinja2
import jinja2.sandbox
import liquid

from getfluxly_server.domain.templates import (
    TemplateFields,
    compile_template,
    html_to_text,
    render_message,
    variables,
)
from getfluxly_server.domain.templates.sandbox import render_field

SUBJECT = "Your order {{ data.order_id }}, {{ profile.first_name | default: 'there' }}"

LIQUID_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Your receipt</title>
<style>body{font-family:Helvetica,Arial,sans-serif;color:#222}td{padding:4px 8px}</style>
</head><body>
<table width="100%" cellpadding="0" cellspacing="0" role="presentation"><tr><td align="center">
<table width="600" cellpadding="0" cellspacing="0" role="presentation" style="max-width:600px">
<tr><td style="padding:24px 0"><img src="https://cdn.example.com/logo.png" alt="{{ project.name }}"
 width="120"></td></tr>
<tr><td><h1 style="font-size:22px">Thanks, {{ profile.first_name | default: "there" }}!</h1>
<p>We received your order <strong>{{ data.order_id }}</strong> on {{ data.date }}. Here is
what you bought; we will write again when it ships to {{ data.city }}.</p></td></tr>
<tr><td><table width="100%" cellpadding="0" cellspacing="0" style="border-collapse:collapse">
<tr><th align="left">Item</th><th align="right">Qty</th><th align="right">Price</th></tr>
{% for line in data.lines %}<tr><td>{{ line.name }}</td><td align="right">{{ line.qty }}</td>
<td align="right">{{ line.price }} {{ data.currency }}</td></tr>
{% endfor %}<tr><td colspan="2" align="right"><strong>Total</strong></td>
<td align="right"><strong>{{ data.total }} {{ data.currency }}</strong></td></tr>
</table></td></tr>
{% if profile.plan == "pro" %}<tr><td style="background:#f5f5f5;padding:12px">
<p>As a Pro member you get free returns for 60 days.</p></td></tr>{% endif %}
<tr><td style="padding:24px 0" align="center"><a href="{{ data.order_url }}"
 style="background:#3b5bdb;color:#fff;padding:12px 20px;border-radius:4px;text-decoration:none">
View your order</a></td></tr>
<tr><td style="font-size:12px;color:#777;padding-top:32px">
<p>{{ project.name }}, 1 Example Street, Springfield. You receive this because you ordered
from us as {{ profile.email }}.</p>
<p><a href="{{ preferences_url }}">Email preferences</a> |
<a href="{{ unsubscribe_url }}">Unsubscribe</a></p></td></tr>
</table></td></tr></table>
</body></html>
"""

# The same template in Jinja2: only the syntax differs.
JINJA_HTML = (
    LIQUID_HTML.replace('| default: "there"', '| default("there")')
    .replace("{% for line in data.lines %}", "{% for line in data.lines %}")
    .replace('{% if profile.plan == "pro" %}', '{% if profile.plan == "pro" %}')
)


def recipients(count: int) -> list[dict[str, Any]]:
    """Each render's variables, built before any clock starts."""
    out = []
    for i in range(count):
        lines = [
            {"name": f"Item {i}-{k} <deluxe>", "qty": k + 1, "price": f"{(k + 1) * 9.5:.2f}"}
            for k in range(1 + i % 4)
        ]
        out.append(
            variables(
                profile_id=f"prof_{i}",
                email=f"user{i}@example.com",
                traits={"first_name": f"User {i}", "plan": "pro" if i % 3 == 0 else "free"},
                data={
                    "order_id": f"A-{100000 + i}",
                    "date": "2026-12-02",
                    "city": "Springfield & Co",
                    "lines": lines,
                    "total": f"{sum(float(line['price']) for line in lines):.2f}",
                    "currency": "EUR",
                    "order_url": f"https://shop.example.com/orders/{i}?ref=mail&u={i}",
                },
                project={"id": "proj_1", "name": "Example Shop"},
                unsubscribe_url=f"https://gf.example.com/u/{i}?sig=abc&x=1",
                preferences_url=f"https://gf.example.com/p/{i}?sig=abc",
            )
        )
    return out


def engines() -> dict[str, Callable[[dict[str, Any]], str]]:
    compiled = compile_template(TemplateFields(SUBJECT, html=LIQUID_HTML))
    assert compiled.html is not None
    html_template = compiled.html
    plain_liquid = liquid.Environment(autoescape=True).from_string(LIQUID_HTML)
    jinja_sandbox = jinja2.sandbox.SandboxedEnvironment(autoescape=True).from_string(JINJA_HTML)
    jinja_plain = jinja2.Environment(autoescape=True).from_string(JINJA_HTML)

    def liquid_message(values: dict[str, Any]) -> str:
        message = render_message(compiled, values)
        return message.html or ""

    return {
        "liquid-sandbox": lambda values: render_field(html_template, values, field="html"),
        "liquid-message": liquid_message,
        "liquid-plain": lambda values: plain_liquid.render(**values),
        "jinja2-sandbox": lambda values: jinja_sandbox.render(**values),
        "jinja2-plain": lambda values: jinja_plain.render(**values),
    }


_WS = re.compile(r"\s+")


def _normal(html: str) -> str:
    # Jinja2 writes &#34;/&#39; as markupsafe does; python-liquid uses markupsafe too, so only
    # whitespace around tags may differ.
    return _WS.sub(" ", html).strip()


def check_outputs(render: dict[str, Callable[[dict[str, Any]], str]], data: list[Any]) -> None:
    for values in data[:20]:
        outputs = {name: _normal(fn(values)) for name, fn in render.items()}
        reference = outputs["liquid-sandbox"]
        for name, out in outputs.items():
            if out != reference:
                raise SystemExit(f"{name} renders differently from liquid-sandbox:\n{out[:600]}")
        if "<deluxe>" in reference or "&amp;x=1" not in reference:
            raise SystemExit("the output is not escaped as it must be")


def check_text(data: list[Any]) -> None:
    """The worker's text part (from the text template derived at compile time) must read as
    the rendered HTML does."""
    compiled = compile_template(TemplateFields(SUBJECT, html=LIQUID_HTML))
    if compiled.text_from_html is None:
        raise SystemExit("the text template was not derived from the HTML template")
    for values in data[:20]:
        message = render_message(compiled, values)
        if message.text != html_to_text(message.html or ""):
            raise SystemExit(f"the text part differs from the HTML's text:\n{message.text}")


def time_engine(fn: Callable[[dict[str, Any]], str], data: list[Any]) -> tuple[float, float]:
    """Microseconds per render over ``data``: wall clock, and this process's CPU time (less
    disturbed by other work on a shared machine; one thread, so the two agree when quiet)."""
    cpu = time.process_time()
    start = time.perf_counter()
    for values in data:
        fn(values)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    return wall / len(data) * 1e6, cpu / len(data) * 1e6


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--renders", type=int, default=None, help="renders per run")
    parser.add_argument("-r", "--repeats", type=int, default=None, help="rounds (median)")
    parser.add_argument("--quick", action="store_true", help="N=200, R=1: a smoke run")
    args = parser.parse_args(argv)
    args.renders = args.renders or (200 if args.quick else 5000)
    args.repeats = args.repeats or (1 if args.quick else 5)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = recipients(args.renders)
    render = engines()
    check_outputs(render, data)
    check_text(data)
    size = len(LIQUID_HTML.encode())
    print(
        f"template: {size} bytes of HTML, {args.renders} renders x {args.repeats}", file=sys.stderr
    )
    for fn in render.values():  # warm up: first-call costs out of the measurement
        time_engine(fn, data[:50])
    runs: dict[str, list[float]] = {name: [] for name in render}
    cpu_runs: dict[str, list[float]] = {name: [] for name in render}
    for round_ in range(args.repeats):
        for name, fn in render.items():
            wall, cpu = time_engine(fn, data)
            runs[name].append(wall)
            cpu_runs[name].append(cpu)
        print(f"round {round_ + 1}/{args.repeats} done", file=sys.stderr)
    median = {name: statistics.median(values) for name, values in runs.items()}
    cpu_median = {name: statistics.median(values) for name, values in cpu_runs.items()}
    peer = median["jinja2-sandbox"]
    cpu_peer = cpu_median["jinja2-sandbox"]
    print(
        f"{'engine':<16} {'us/render':>10} {'renders/s':>10} {'vs jinja2-sandbox':>18}"
        f" {'cpu us':>8} {'cpu vs peer':>12}"
    )
    for name, us in median.items():
        cpu_us = cpu_median[name]
        print(
            f"{name:<16} {us:>10.1f} {1e6 / us:>10.0f} {us / peer:>17.2f}x"
            f" {cpu_us:>8.1f} {cpu_us / cpu_peer:>11.2f}x"
        )
    report = {
        "benchmark": "render_template",
        "template_bytes": size,
        "renders": args.renders,
        "repeats": args.repeats,
        "us_per_render": {name: round(us, 2) for name, us in median.items()},
        "runs_us": {name: [round(v, 2) for v in values] for name, values in runs.items()},
        "cpu_us_per_render": {name: round(us, 2) for name, us in cpu_median.items()},
        "ratio_cpu_liquid_sandbox_to_jinja2_sandbox": round(
            cpu_median["liquid-sandbox"] / cpu_peer, 3
        ),
        "ratio_liquid_sandbox_to_jinja2_sandbox": round(median["liquid-sandbox"] / peer, 3),
        "ratio_liquid_message_to_jinja2_sandbox": round(median["liquid-message"] / peer, 3),
        "sandbox_overhead_vs_liquid_plain": round(
            median["liquid-sandbox"] / median["liquid-plain"], 3
        ),
        "outputs_checked": True,
        "versions": {
            "python": platform.python_version(),
            "python-liquid": version("python-liquid"),
            "jinja2": version("jinja2"),
        },
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
