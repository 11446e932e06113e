"""Wall time of every notebook of the series, executed headless in the tiny profile.

    python benchmarks/series_runtime.py                # every notebooks/NN_*.ipynb
    python benchmarks/series_runtime.py --only 03 05   # just these
    python benchmarks/series_runtime.py --from-sources # build from notebooks/src/ first (into a temp folder)
    python benchmarks/series_runtime.py --quick        # one two-cell notebook: proves the machinery (CI)

Each notebook is executed with nbclient (as ``scripts/build_notebooks.py`` does) in a fresh kernel
whose working directory is ``notebooks/`` (so its setup cell finds the repository), from an
in-memory copy: the committed notebooks are never rewritten. With ``--keep DIR`` the executed copies
are written to DIR. Artifacts the notebooks build go where they always go
(``helpers.config.cache_dir()``), so a notebook that finds them already built is faster than on a
fresh machine: run ``python -m helpers.build build`` first (as CI does) for comparable numbers.
Wall time includes the kernel start (~1-2 s).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

from common import ROOT, apply_threads, base_parser, command_line, machine_info, md_table, resolve_device

NOTEBOOKS = ROOT / "notebooks"
SOURCES = NOTEBOOKS / "src"


def find_notebooks(only: list[str] | None, from_sources: bool, tmp: Path) -> tuple[list[Path], list[str]]:
    """The notebooks to run (sorted) and notes on what is missing."""
    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    built = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    notes = []
    if from_sources:
        sys.path.insert(0, str(ROOT / "scripts"))
        import build_notebooks

        build_notebooks.OUT = tmp  # build() writes OUT / name: a temp folder, never notebooks/
        paths = [build_notebooks.build(src) for src in sources]
    else:
        paths = built
        missing = sorted({s.stem for s in sources} - {p.stem for p in built})
        if missing:
            notes.append(f"sources without an executed .ipynb (not run): {', '.join(missing)}")
    if only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in only)]
    return paths, notes


def quick_notebook(tmp: Path) -> Path:
    """A two-cell notebook with the series' standard setup cell: executes in seconds."""
    import nbformat

    sys.path.insert(0, str(ROOT / "scripts"))
    from build_notebooks import SETUP_CELL

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP_CELL),
                nbformat.v4.new_code_cell("from helpers.config import cache_dir\nprint(cache_dir())")]
    path = tmp / "00_quick_check.ipynb"
    nbformat.write(nb, path)
    return path


def execute(path: Path, timeout: int, keep: Path | None) -> tuple[float, str]:
    """Run one notebook in a fresh kernel (cwd notebooks/); return (seconds, status)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.perf_counter()
    try:
        client.execute()
        status = "ok"
    except CellTimeoutError:
        status = f"timeout (a cell ran past {timeout} s)"
    except CellExecutionError as err:
        status = f"error: {str(err).strip().splitlines()[-1][:120]}"
    except Exception as err:  # noqa: BLE001 -- a kernel that fails to start, etc.: report, go on
        status = f"error: {type(err).__name__}: {err}"[:140]
        traceback.print_exc()
    seconds = time.perf_counter() - t0
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, keep / path.name)
    return seconds, status


def main(argv=None) -> None:
    parser = base_parser(__doc__, default_steps=1)
    parser.set_defaults(steps=1)
    parser.add_argument("--only", nargs="*", help="notebook number prefixes, e.g. 03 05")
    parser.add_argument("--from-sources", action="store_true",
                        help="build notebooks/src/*.py into a temp folder and run those")
    parser.add_argument("--timeout", type=int, default=900, help="per-cell timeout, seconds")
    parser.add_argument("--keep", type=Path, default=None, help="write the executed copies here")
    args = parser.parse_args(argv)
    apply_threads(args)
    # --steps: how many times each notebook is executed (the median is reported)
    os.environ["DPO_PROFILE"] = "tiny"  # inherited by every kernel
    if args.device:
        os.environ["DPO_DEVICE"] = args.device
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.quick:
            paths, notes = [quick_notebook(tmp)], ["--quick: a two-cell notebook, not the series"]
        else:
            paths, notes = find_notebooks(args.only, args.from_sources, tmp)
        if not paths:
            raise SystemExit("no notebooks found (notebooks/NN_*.ipynb)")
        rows, total = [], 0.0
        for path in paths:
            runs = []
            status = "ok"
            for _ in range(max(1, args.steps)):
                seconds, status = execute(path, args.timeout, args.keep)
                runs.append(seconds)
                print(f"{path.name}: {seconds:.1f} s ({status})", file=sys.stderr, flush=True)
                if status != "ok":
                    break
            median = statistics.median(runs)
            total += median
            rows.append([path.stem, f"{median:.0f}", status])
        rows.append(["**total**", f"**{total:.0f}** ({total / 60:.1f} min)", ""])
    source = ("a generated notebook" if args.quick else "notebooks/src/*.py built into a temp folder"
              if args.from_sources else "the committed notebooks/*.ipynb")
    print("\n".join([
        "## Series runtime (tiny profile, headless)", "", f"Command: `{command_line()}`", "",
        f"Machine: {machine_info(device)}", "", *[f"- {n}" for n in notes],
        f"- source: {source}; "
        f"wall time per notebook incl. kernel start{'; median of ' + str(args.steps) + ' runs' if args.steps > 1 else ''}",
        "", md_table(["notebook", "wall s", "status"], rows)]))


if __name__ == "__main__":
    main()
