"""scripts/run_frontier.py's estimators, against brute force."""

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location("run_frontier", Path(__file__).resolve().parent.parent / "scripts" / "run_frontier.py")
rf = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(rf)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_best_of_n_by_matches_enumerating_every_subset(n):
    rng = np.random.default_rng(0)
    select, value = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    got = rf.best_of_n_by(select, value, n)
    for p in range(3):
        picks = [value[p, max(sub, key=lambda j: select[p, j])] for sub in itertools.combinations(range(6), n)]
        assert got[p] == pytest.approx(np.mean(picks))


def _sample_fn(x):
    """A docstring that is not counted."""
    # a comment that is not counted
    y = x + 1

    return y


def test_code_lines_drops_docstrings_comments_and_blanks():
    assert rf.code_lines([_sample_fn]) == 3  # def, y = ..., return
