"""The package README (the PyPI page) runs as written, against a local server on its port."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flux_testkit.smtpd import SMTPTestServer

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example(index: int, plain_smtp: SMTPTestServer) -> None:
    # The README points at a catcher on port 2525; here a test server stands in.
    code = BLOCKS[index].replace("2525", str(plain_smtp.port))
    before = len(plain_smtp.messages)
    exec(compile(code, f"README.md example {index + 1}", "exec"), {"__name__": "readme"})  # noqa: S102
    if "127.0.0.1" in code and ".send" in code:
        assert len(plain_smtp.messages) > before  # it really delivered
