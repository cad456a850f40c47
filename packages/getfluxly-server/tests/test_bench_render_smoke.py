"""A short run of the template benchmark (``bench/render_template.py --quick``).

Speed is not asserted (the machine is shared and noisy); that it runs, checks every engine's
output against the others before timing, and prints its one JSON line with every engine and
the ratios, is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "render_template.py"
ENGINES = {"liquid-sandbox", "liquid-message", "liquid-plain", "jinja2-sandbox", "jinja2-plain"}


def test_quick_benchmark_runs_and_reports_every_engine() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "-n", "50"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["benchmark"] == "render_template"
    assert report["outputs_checked"] is True
    assert report["renders"] == 50
    assert set(report["us_per_render"]) == ENGINES
    assert all(value > 0 for value in report["us_per_render"].values())
    assert report["ratio_liquid_sandbox_to_jinja2_sandbox"] > 0
    assert 1500 <= report["template_bytes"] <= 2500  # "a typical ~2 KB HTML template"
    # The table names every engine too.
    table = "\n".join(lines[:-1])
    assert all(engine in table for engine in ENGINES)
