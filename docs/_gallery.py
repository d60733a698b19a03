"""Runs the examples of the gallery while the site builds (markdown-exec calls these).

Each function returns text for a page's code block to print (markdown-exec captures
the block's own ``print``, not a module's): ``source`` an example's file as a fenced
code block (Markdown); ``run`` the example's output in a fresh process, with every
figure and table it wrote (HTML); ``figure`` a matplotlib figure as an inline image;
``results`` the benchmark reports. A failing example raises, and the strict build
fails with it.
"""

from __future__ import annotations

import base64
import html
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import markdown

ROOT = Path(__file__).resolve().parent.parent


def source(script: str) -> str:
    """``script`` (a path from the project's root) as a fenced Python code block."""
    text = (ROOT / script).read_text()
    return f"```python\n{text.rstrip()}\n```"


def figure(fig: Any, alt: str) -> str:
    """A matplotlib figure as an inline PNG (``<img>``); the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return _img(buffer.getvalue(), alt)


def run(script: str, *args: str, out_flag: str | None = None, out_name: str = "", timeout: float = 900) -> str:
    """``python script *args`` run from the project's root: its output (HTML), then the PNG
    figures and Markdown tables it wrote into a fresh folder. The folder (joined with
    ``out_name`` when the script wants a file) goes to the script as ``out_flag folder``,
    or as its last argument when ``out_flag`` is ``""``."""
    with tempfile.TemporaryDirectory() as folder:
        target = str(Path(folder) / out_name) if out_name else folder
        extra = [] if out_flag is None else ([target] if out_flag == "" else [out_flag, target])
        env = dict(os.environ, JAXMIXED_COMPILE_NOTICE="0", MPLBACKEND="Agg")
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(ROOT / script), *args, *extra],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{script} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        command = " ".join(["python", script, *args])
        tables = [p.read_text() for p in sorted(Path(folder).glob("*.md"))]
        printed = done.stdout
        for table in tables:  # a report the script also printed is shown once, laid out below
            printed = printed.replace(table.strip(), "(the report below)")
        parts = [
            f"<p><em>Run while this site was built: <code>{html.escape(command)}</code>, "
            f"{seconds:.0f} s with compilation.</em></p>",
            f"<pre><code>{html.escape(printed.rstrip())}</code></pre>",
        ]
        parts += [_img(path.read_bytes(), path.stem) for path in sorted(Path(folder).glob("*.png"))]
        parts += [markdown.markdown(table, extensions=["tables"]) for table in tables]
        return "\n".join(parts)


def results(folder: str = "benchmarks/results") -> str:
    """Every ``*.md`` report in ``folder`` (Markdown), its headings two levels down, each
    under its title (or file name) with the commit and date of its last change, then the
    PNG figures there, with the same line."""
    root, parts = ROOT / folder, []
    for path in sorted(root.glob("*.md")):
        text = ("\n" + path.read_text()).replace("\n#", "\n###").lstrip("\n")  # under "The reports"
        text = text if text.startswith("###") else f"### {path.stem}\n\n{text}"
        head, _, body = text.partition("\n")
        parts.append(f"{head}\n\n*`{folder}/{path.name}`, {_last_change(path)}.*\n{body}\n")
    for path in sorted(root.glob("*.png")):
        parts.append(f"### {path.stem}\n\n*`{folder}/{path.name}`, {_last_change(path)}.*\n")
        parts.append(_img(path.read_bytes(), path.stem) + "\n")
    return "\n".join(parts)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _last_change(path: Path) -> str:
    """``last written at <commit> on <date>`` from git, or a note that git could not say."""
    done = subprocess.run(
        ["git", "log", "-1", "--format=%h on %cs", "--", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    stamp = done.stdout.strip()
    return f"last written at {stamp}" if done.returncode == 0 and stamp else "not yet committed"
