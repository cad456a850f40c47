"""The README's library examples run as written, against a local server on the catcher's port."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flux_testkit.smtpd import SMTPTestServer

README = Path(__file__).resolve().parents[3] / "README.md"
#: FluxMail's Python examples (the README's SDK example needs a running GetFluxly server).
BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    if "fluxmail" in block
]


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example(
    index: int, plain_smtp: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README points at ./scripts/dev's catcher on port 2525; here a test server stands in.
    code = BLOCKS[index].replace("2525", str(plain_smtp.port))
    monkeypatch.setenv("FLUXMAIL_HOST", plain_smtp.host)
    before = len(plain_smtp.messages)
    exec(compile(code, f"README.md example {index + 1}", "exec"), {"__name__": "readme"})  # noqa: S102
    if "127.0.0.1" in code and ".send" in code:
        assert len(plain_smtp.messages) > before  # it really delivered
