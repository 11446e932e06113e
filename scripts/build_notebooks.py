"""Build notebooks from their percent-format sources and execute them (tiny profile, fixed seeds).

    python scripts/build_notebooks.py            # every notebooks/src/NN_*.py
    python scripts/build_notebooks.py 02 03      # just these
    python scripts/build_notebooks.py --no-run   # write the .ipynb without executing

A source is a Python file: ``# %%`` opens a code cell, ``# %% [markdown]`` a markdown cell whose
lines are ``# ``-commented. The first markdown cell gets the Open-in-Colab badge; the standard
setup cell (SETUP_CELL below, identical in every notebook) is inserted right after it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
from helpers.config import COLAB_URL, REPO_URL  # noqa: E402

SRC = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"

SETUP_CELL = f'''\
# Setup (the same cell in every notebook). In Colab: fetch the course once and install only what
# Colab lacks. Locally: find the repository root. Either way, make `import helpers` work.
import importlib.util, os, subprocess, sys
REPO_URL = os.environ.get("DPO_COURSE_REPO", "{REPO_URL}")
if "google.colab" in sys.modules:
    root = os.environ.get("DPO_COURSE_DIR", "/content/dpo-from-scratch")
    if not os.path.isdir(os.path.join(root, "helpers")):
        subprocess.run(["git", "clone", "--depth", "1", "--quiet", REPO_URL, root], check=True)
    needed = {{"vaderSentiment": "vaderSentiment", "nbval": "nbval"}}
    missing = [pkg for pkg, mod in needed.items() if importlib.util.find_spec(mod) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
else:
    root = os.getcwd()
    while not os.path.isdir(os.path.join(root, "helpers")) and os.path.dirname(root) != root:
        root = os.path.dirname(root)
if root not in sys.path:
    sys.path.insert(0, root)
import helpers
print("helpers", helpers.__version__, "from", root)'''


def badge(name: str) -> str:
    url = f"{COLAB_URL}/notebooks/{name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def parse_source(text: str) -> list[tuple[str, str]]:
    """Split a percent-format file into [(kind, source)], kind in {'code', 'markdown'}."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = re.match(r"^# %%(.*)$", line)
        if m:
            kind = "markdown" if "[markdown]" in m.group(1) else "code"
            cells.append((kind, []))
            continue
        if not cells:  # a module docstring or blank lines before the first marker are dropped
            continue
        cells[-1][1].append(line)
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [re.sub(r"^# ?", "", ln) for ln in lines]
        body = "\n".join(lines).strip("\n")
        if body.strip():
            out.append((kind, body))
    return out


def build(src: Path) -> Path:
    name = src.stem + ".ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    cells = parse_source(src.read_text(encoding="utf-8"))
    setup_done = False
    for i, (kind, body) in enumerate(cells):
        if kind == "markdown":
            if i == 0:
                body = badge(name) + "\n\n" + body
            nb.cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(body))
        if i == 0:
            nb.cells.append(nbformat.v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\n" + SETUP_CELL))
            setup_done = True
    assert setup_done, f"{src}: empty source"
    path = OUT / name
    nbformat.write(nb, path)
    return path


def execute(path: Path, timeout: int = 900) -> float:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_profile = os.environ.setdefault("DPO_PROFILE", "tiny")
    t0 = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(OUT)}}).execute()
    dt = time.time() - t0
    nbformat.write(nb, path)
    print(f"{path.name}: executed in {dt:.0f} s (profile {env_profile})")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="notebook number prefixes, e.g. 02 03")
    ap.add_argument("--no-run", action="store_true", help="build without executing")
    args = ap.parse_args()
    sources = sorted(SRC.glob("[0-9][0-9]_*.py"))
    if args.only:
        sources = [s for s in sources if any(s.name.startswith(p) for p in args.only)]
    if not sources:
        sys.exit("no notebook sources matched")
    for src in sources:
        path = build(src)
        print(f"built {path.relative_to(ROOT)}")
        if not args.no_run:
            execute(path)


if __name__ == "__main__":
    main()
