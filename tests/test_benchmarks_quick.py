"""Every benchmark script runs end to end in --quick mode and prints the tables it promises.

These prove the scripts work (CI); they time nothing and assert no speed. Each script runs in a
subprocess, as a user would run it. TRL is optional (benchmarks/requirements.txt): the scripts that
compare against it are skipped, with the reason, where it is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
NO_TRL = "trl is not installed: pip install -r benchmarks/requirements.txt (TRL is only a benchmark dependency)"
needs_trl = pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason=NO_TRL)


def run_script(name: str, *args: str, timeout: int = 600) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", DPO_PROFILE="tiny", TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, str(BENCH / name), "--quick", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"{name} --quick failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown table rows whose first cell is ``first_cell``."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == first_cell:
                rows.append(cells)
    return rows


def leading_number(cell: str) -> float:
    """The first number of a cell like ``'1.23x (1.01x-1.40x)'`` or ``'45.1%'``."""
    match = re.search(r"-?\d+(\.\d+)?", cell)
    assert match, f"no number in {cell!r}"
    return float(match.group())


@needs_trl
def test_throughput_quick_compares_both_loops_on_identical_batches():
    out = run_script("throughput.py")
    assert "identical batches checked" in out  # the script asserts it; a mismatch would have failed the run
    for mode in ("held", "precomputed"):
        rows = table_rows(out, mode)
        loops = {r[1] for r in rows}
        assert {"ours (helpers.train)", "TRL DPOTrainer"} <= loops, rows
        for r in rows:
            if r[1] in ("ours (helpers.train)", "TRL DPOTrainer"):
                ms, pairs_s, tokens_s = (leading_number(c) for c in r[2:5])
                assert ms > 0 and pairs_s > 0 and tokens_s > pairs_s  # a pair has more than one token
        ratio_rows = [r for r in rows if r[1].endswith("x") or "x (" in r[1]]
        assert len(ratio_rows) == 1 and leading_number(ratio_rows[0][1]) > 0, rows


def test_throughput_quick_runs_without_trl_side():
    out = run_script("throughput.py", "--no-trl", "--modes", "precomputed")
    rows = table_rows(out, "precomputed")
    assert [r[1] for r in rows] == ["ours (helpers.train)"], rows
    assert leading_number(rows[0][3]) > 0


@needs_trl
def test_memory_quick_measures_each_configuration_in_its_own_process():
    out = run_script("memory.py")
    for loop in ("ours", "trl"):
        rows = table_rows(out, loop)
        modes = [r[1] for r in rows if r[1] in ("held", "precomputed")]
        assert modes == ["held", "precomputed"], rows
        for r in rows:
            if r[1] in ("held", "precomputed"):
                peak, baseline = leading_number(r[2]), leading_number(r[3])
                assert peak >= baseline > 50  # MiB: a Python process with torch loaded is far above 50 MiB
        ratio = [r for r in rows if r[1] not in ("held", "precomputed")]
        assert len(ratio) == 1 and 0 < leading_number(ratio[0][1]) < 2, rows


def test_flops_quick_reports_efficiency_against_measured_matmul_peak():
    out = run_script("flops.py")
    assert re.search(r"Matmul peak \(\d+ x \d+, float32\), measured 4 times", out), out
    rows = table_rows(out, "quick")
    assert [r[2] for r in rows] == ["held", "precomputed"], rows
    held, pre = rows
    # the held reference adds its forward: 8 N tokens vs 6 N tokens per step
    assert leading_number(held[4]) / leading_number(pre[4]) == pytest.approx(8 / 6, rel=0.01)
    for r in rows:
        assert leading_number(r[6]) > 0 and leading_number(r[7]) > 0, r  # GFLOP/s, % of the matmul peak


def test_series_runtime_quick_executes_a_notebook_headless():
    out = run_script("series_runtime.py")
    rows = table_rows(out, "00_quick_check")
    assert len(rows) == 1 and rows[0][2] == "ok", out
    assert leading_number(rows[0][1]) >= 0
    assert table_rows(out, "**total**")


@needs_trl
def test_gpu_check_quick_runs_every_part_on_cpu():
    """The prepared GPU check, on the CPU: every row of its one table, and the notebook's checked
    outputs reproduced exactly on the device that made them."""
    out = run_script("gpu_check.py", "--device", "cpu")
    for first in ("precision chosen", "SFT step by precision", "ours vs TRL, reference held",
                  "ours vs TRL, reference precomputed", "notebook 04_sequence_logprobs.ipynb on cpu (tiny)"):
        assert table_rows(out, first), (first, out)
    assert table_rows(out, "precision chosen")[0][1] == "float32"
    nb = table_rows(out, "notebook 04_sequence_logprobs.ipynb on cpu (tiny)")[0]
    done, total = re.match(r"(\d+)/(\d+) checked cells identical", nb[1]).groups()
    assert done == total and int(total) >= 5, nb
    assert not table_rows(out, "differs")
    steps = [line for line in out.splitlines() if line.startswith("| DPO step, reference")]
    assert len(steps) == 2 and all(" ms | " in line for line in steps), steps


def test_t4_budget_quick_prints_memory_and_time_tables():
    out = run_script("t4_budget.py")
    for part in ("SFT step (32 x 128)", "DPO step, reference held (8 pairs x 96)", "evaluation scoring (256 x 56)"):
        assert leading_number(table_rows(out, part)[0][1]) > 0, part  # GiB the step added
    rows = [r for r in (table_rows(out, p) for p in ("04", "05", "06", "07", "08")) if r]
    assert len(rows) == 5, out
    series = table_rows(out, "04-08, each in a fresh runtime (rebuilds counted)")[0]
    saved = table_rows(out, "04-08, SFT model + pairs built once and loaded from Drive")[0]
    assert leading_number(saved[2]) <= leading_number(series[2])  # loading never costs more than rebuilding


def test_readme_t4_column_is_the_computed_budget():
    """The README's T4 column is data/t4_budget.json (benchmarks/t4_budget.py), rounded, never typed."""
    import json
    import re

    minutes = json.loads((ROOT / "data" / "t4_budget.json").read_text())["minutes"]["T4"]
    sft = minutes["SFT build (every fresh runtime of 04-08)"]
    pairs = minutes["pairs build (fresh runtime of 05-08)"]
    readme = (ROOT / "README.md").read_text()
    for nb in ("04", "05", "06", "07", "08"):
        row = next(line for line in readme.splitlines() if line.startswith(f"| {nb} |"))
        own, rebuild = map(float, re.search(r"(\d+) min \+ (\d+) min rebuild \(computed\) \|$", row).groups())
        assert own == round(minutes[nb]) and rebuild == round(sft + (pairs if nb != "04" else 0)), row
    assert f"**{minutes['series, fresh runtimes']:.0f} min** on a T4" in readme
