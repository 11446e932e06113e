"""Pair, sync and execute the notebooks (tiny profile, fixed seeds).

    python scripts/build_notebooks.py            # every notebooks/NN_*.ipynb
    python scripts/build_notebooks.py 02 03      # just these
    python scripts/build_notebooks.py --no-run   # sync only: no execution (a Markdown typo)

Each ``notebooks/NN_*.ipynb`` is paired by jupytext with ``notebooks/src/NN_*.py`` (py:percent;
``[tool.jupytext]`` in pyproject.toml). Edit either -- in an editor, JupyterLab or Colab -- then this
script syncs the pair (outputs and cell ids are kept) and executes the notebook in place with nbclient.

Which side's inputs win is decided by *content*, never by which file was saved last:
``notebooks/src/.sync_state.json`` records a digest of each pair's inputs at its last sync. If only
one side differs from it, that side wins; if both do, the script stops and names them (keep one
with ``--prefer ipynb`` or ``--prefer src``; the other side's edits are then discarded). A
``notebooks/NN_*.ipynb`` without a source is reported, not skipped in silence. ``tests/test_notebooks_meta.py`` fails when a pair
disagrees or when a notebook's setup cell is not ``SETUP_CELL`` below (every notebook carries the
same one; ``--update-setup`` writes it into every source).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat

from helpers.config import COLAB_URL

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "notebooks" / "src"
OUT = ROOT / "notebooks"
STATE = SRC / ".sync_state.json"  # each pair's inputs digest at its last sync

SETUP_CELL = '''\
# Setup (the same cell in every notebook). In Colab: fetch the course once and install only what
# Colab lacks. Locally: find the repository root. Either way, make `import helpers` work.
import importlib.util
import os
import subprocess
import sys

REPO_URL = os.environ.get("DPO_COURSE_REPO", "https://github.com/dpo-course/dpo-from-scratch")
if "google.colab" in sys.modules:
    root = os.environ.get("DPO_COURSE_DIR", "/content/dpo-from-scratch")
    if not os.path.isdir(os.path.join(root, "helpers")):
        subprocess.run(["git", "clone", "--depth", "1", "--quiet", REPO_URL, root], check=True)
    needed = {"vaderSentiment": "vaderSentiment"}  # what Colab lacks to run the notebooks
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

print("helpers", helpers.__version__, "from", os.path.relpath(root))  # relative: no machine's paths'''
SETUP_SOURCE = "# NBVAL_IGNORE_OUTPUT\n" + SETUP_CELL


def badge(name: str) -> str:
    url = f"{COLAB_URL}/notebooks/{name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def build(src: Path) -> Path:
    """``OUT/<name>.ipynb`` freshly made from its source, no outputs (for runs outside notebooks/)."""
    nb = jupytext.read(src)
    path = OUT / (src.stem + ".ipynb")
    nbformat.write(nb, path)
    return path


def update_setup(src: Path) -> None:
    """Write ``SETUP_CELL`` into a source's setup cell (the first code cell)."""
    nb = jupytext.read(src)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[0].source = SETUP_SOURCE
    jupytext.write(nb, src, fmt="py:percent")


class SyncConflict(Exception):
    """Both files of a pair changed since their last sync: picking one would drop the other's edits."""


def inputs_digest(cells) -> str:
    """What a sync carries between the two files: each cell's type and source (not outputs or ids)."""
    text = json.dumps([(c.cell_type, c.source) for c in cells], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def read_state(state_path: Path) -> dict:
    if not state_path.exists():
        return {}
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        sys.exit(f"{state_path}: not the JSON this script writes ({exc}); delete it and sync with --prefer")
    if not isinstance(state, dict):
        sys.exit(f"{state_path}: expected an object of digests; delete it and sync with --prefer")
    return state


def write_state(state_path: Path, state: dict) -> None:
    state_path.write_text(json.dumps(dict(sorted(state.items())), indent=1) + "\n", encoding="utf-8")


def winner(src: Path, path: Path, last: str | None, prefer: str | None) -> str | None:
    """Which side's inputs the sync keeps: "src", "ipynb", or None when the two already agree.

    Raises:
        SyncConflict: both differ from their last synced inputs (or no sync was recorded) and
            ``prefer`` does not say which to keep.
    """
    if not path.exists():
        return "src"
    in_nb = inputs_digest(nbformat.read(path, as_version=4).cells)
    in_src = inputs_digest(jupytext.read(src).cells)
    if in_nb == in_src:
        return None
    if prefer:
        return prefer
    if last == in_nb:
        return "src"  # only the source changed since the last sync
    if last == in_src:
        return "ipynb"
    why = "both changed since their last sync" if last else "they differ and no earlier sync is recorded"
    raise SyncConflict(f"{path.relative_to(path.parent.parent)} and {src.relative_to(src.parent.parent.parent)}: {why}, "
                       "so one side's edits would be lost. Keep one with --prefer ipynb or --prefer src (the other's "
                       "edits are discarded), or copy the edits into one file by hand first.")


def unpaired(out: Path = OUT, src_dir: Path = SRC) -> list[Path]:
    """The ``NN_*.ipynb`` notebooks in ``out`` without a source in ``src_dir``."""
    return [p for p in sorted(out.glob("[0-9][0-9]_*.ipynb")) if not (src_dir / (p.stem + ".py")).exists()]


def sync(src: Path, out: Path = OUT, state_path: Path = STATE, prefer: str | None = None) -> Path:
    """Sync one pair (a missing .ipynb is created); the side chosen by ``winner`` keeps its inputs, the
    .ipynb keeps its outputs and cell ids. Records the pair's synced inputs in ``state_path``."""
    path = out / (src.stem + ".ipynb")
    state = read_state(state_path)
    side = winner(src, path, state.get(src.stem), prefer)
    if side is not None:
        now = time.time()
        newer, older = (src, path) if side == "src" else (path, src)
        if older.exists():
            os.utime(older, (now - 2, now - 2))
        os.utime(newer, (now, now))  # jupytext --sync takes the newer file's inputs: make it the chosen one
        target = path if path.exists() else src
        subprocess.run([sys.executable, "-m", "jupytext", "--sync", "--quiet", str(target)], check=True)
    nb = nbformat.read(path, as_version=4)
    state[src.stem] = inputs_digest(nb.cells)
    write_state(state_path, state)
    if nb.cells[1].source != SETUP_SOURCE:
        sys.exit(f"{src.name}: the second cell is not the standard setup cell (run with --update-setup)")
    if badge(path.name) not in nb.cells[0].source:
        sys.exit(f"{src.name}: the first cell lacks its Colab badge: {badge(path.name)}")
    return path


# a tqdm bar's text: "desc:  40%|####      | 4/10 [00:01<00:02, 3.1it/s]"
PROGRESS_BAR = re.compile(r"^[^\n|]*\d+%\|[^|]*\| *\d+/\d+ \[[^\]]*\]\s*$")


def drop_progress_bars(nb) -> int:
    """Remove progress bars from a notebook's saved outputs: live they move, but saved they stay
    frozen at their first frame ("0%") -- which is all a reader on GitHub would see. Returns how many
    outputs were dropped or trimmed. Widgets that are not progress bars (sliders, browsers) stay."""
    changed = 0
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "display_data" and "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                if PROGRESS_BAR.match(str(out["data"].get("text/plain", ""))):
                    changed += 1
                    continue
            if out.get("output_type") == "stream":
                lines = re.split(r"(?<=[\n\r])", out["text"])
                rest = [ln for ln in lines if not PROGRESS_BAR.match(ln.strip("\r\n") or "x")]
                if len(rest) != len(lines):
                    changed += 1
                    if not "".join(rest).strip():
                        continue
                    out["text"] = "".join(rest)
            kept.append(out)
        if "outputs" in cell:
            cell["outputs"] = kept
    return changed


def execute(path: Path, timeout: int = 900) -> float:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_profile = os.environ.setdefault("DPO_PROFILE", "tiny")
    t0 = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(OUT)}}).execute()
    dt = time.time() - t0
    drop_progress_bars(nb)
    nbformat.write(nb, path)
    print(f"{path.name}: executed in {dt:.0f} s (profile {env_profile})")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help="notebook number prefixes, e.g. 02 03")
    ap.add_argument("--no-run", action="store_true", help="sync without executing")
    ap.add_argument("--update-setup", action="store_true", help="write SETUP_CELL into every source first")
    ap.add_argument("--prefer", choices=("ipynb", "src"), default=None,
                    help="where both files of a pair changed since their last sync: keep this side's inputs "
                         "(the other side's edits are discarded)")
    args = ap.parse_args()
    sources = sorted(SRC.glob("[0-9][0-9]_*.py"))
    alone = unpaired()
    if args.only:
        sources = [s for s in sources if any(s.name.startswith(p) for p in args.only)]
        alone = [p for p in alone if any(p.name.startswith(o) for o in args.only)]
    for p in alone:
        print(f"{p.relative_to(ROOT)} has no source in notebooks/src/ and is not synced or executed: pair it with "
              f"`jupytext --set-formats ipynb,src//py:percent {p.relative_to(ROOT)}`", file=sys.stderr)
    if not sources:
        sys.exit("no notebook sources matched")
    for src in sources:
        if args.update_setup:
            update_setup(src)
        try:
            path = sync(src, prefer=args.prefer)
        except SyncConflict as exc:
            sys.exit(f"not synced: {exc}")
        print(f"synced {path.relative_to(ROOT)} <-> {src.relative_to(ROOT)}")
        if not args.no_run:
            execute(path)
            sync(src)  # execution changed outputs only: the pair agrees, and the record says so
    if alone:
        sys.exit(1)


if __name__ == "__main__":
    main()
