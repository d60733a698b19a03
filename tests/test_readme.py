"""The README's example runs and prints what the README shows (the front page's code is
tested, not just shown)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_example_prints_what_the_readme_shows():
    (code,) = _blocks("python")
    (shown,) = _blocks("text")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {})
    # The convergence line's gradient norm is round-off; every number else must match.
    def keep(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip().splitlines() if not line.startswith("Converged:")]

    assert keep(printed.getvalue()) == keep(shown)
    assert "Converged: yes" in printed.getvalue()
