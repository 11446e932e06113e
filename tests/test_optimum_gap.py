"""scripts/optimum_gap.py: its fraction-with-SE against direct computation, its quick run end to end,
and the contract of the saved data/optimum_gap.json that notebooks 08 and 09 read."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.optimum import fraction_of_optimum_bound, optimum_frontier

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("optimum_gap", ROOT / "scripts" / "optimum_gap.py")
og = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(og)

S = {"optimum_betas": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0], "bootstrap": 50}


def _ref(n_prompts=40, m=64, seed=0):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(n_prompts, 1)) * 0.3 + rng.normal(size=(n_prompts, m)) * 0.5
    return {"optimum_rewards": rewards.tolist(), "optimum_lengths": np.full((n_prompts, m), 11.0).tolist()}


def _point(ref, gain, kl, seed):
    rng = np.random.default_rng(seed)
    base = np.asarray(ref["optimum_rewards"]).mean(1)
    n = len(base)
    return {"prompt_rewards": (base + gain + rng.normal(size=n) * 0.05).tolist(),
            "prompt_kls": (kl + rng.normal(size=n) * 0.1).tolist(), "reward_se": 0.03, "kl_token_mean": kl,
            "length_mean": 12.0, "eos_rate": 1.0, "calibration_slope": 0.8}


def test_fraction_with_se_is_the_mean_of_each_seeds_fraction():
    ref = _ref()
    points = [_point(ref, 0.2, 0.8, seed) for seed in range(3)]
    out = og.fraction_with_se(points, ref, S)
    frontier = optimum_frontier(np.asarray(ref["optimum_rewards"]), S["optimum_betas"])
    each = [fraction_of_optimum_bound(frontier, np.mean(p["prompt_kls"]), np.mean(p["prompt_rewards"]))[0]
            for p in points]
    assert out["fraction"] == pytest.approx(np.mean(each))
    assert out["fraction_se_seeds"] == pytest.approx(np.std(each, ddof=1) / np.sqrt(3))
    assert out["fraction_se"] >= max(out["fraction_se_seeds"], out["fraction_se_prompts"]) > 0
    assert out["seeds"] == 3 and out["kl"] == pytest.approx(np.mean([np.mean(p["prompt_kls"]) for p in points]))
    assert out["optimum_length"] == pytest.approx(11.0)
    # a subset of prompts is summarised on that subset only
    sub = og.fraction_with_se(points, ref, S, prompts=np.arange(10))
    assert sub["reward"] == pytest.approx(np.mean([np.mean(p["prompt_rewards"][:10]) for p in points]))


def test_the_prompt_bootstrap_shrinks_with_more_prompts():
    small, large = _ref(n_prompts=20, seed=1), _ref(n_prompts=320, seed=1)
    outs = [og.fraction_with_se([_point(r, 0.1, 0.3, 0)], r, S) for r in (small, large)]
    assert all(o["fraction_exact"] for o in outs)  # 0.3 nats: inside the estimate's reach
    assert outs[1]["fraction_se_prompts"] < outs[0]["fraction_se_prompts"] / 2  # 16x the prompts: ~1/4 the SE


def test_quick_run_writes_every_field_the_notebooks_read(tmp_path):
    out = tmp_path / "gap.json"
    env = dict(os.environ, DPO_PROFILE="tiny", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "optimum_gap.py"), "--quick", "--jobs", "2",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    check_contract(json.loads(out.read_text()), quick=True)


def check_contract(gap: dict, quick: bool = False) -> None:
    from helpers.targets import TARGETS
    from helpers.world import saved_results_world, world_fingerprint

    assert gap["world_fingerprint"] == world_fingerprint(saved_results_world())
    assert {r["target"] for r in gap["rows"]} == set(TARGETS)
    for r in gap["rows"]:
        for key in ("method", "target", "seeds", "kl", "kl_se", "reward", "reward_se", "fraction", "fraction_se",
                    "length", "eos_rate", "step", "kl_token", "calibration_slope", "optimum_length"):
            assert key in r, (key, r)
        assert r["seeds"] == len(gap["meta"]["settings"]["seeds"])
    headline = [r for r in gap["rows"] if r.get("headline")]
    assert all(r["kl"] <= gap["meta"]["settings"]["kl_budget"] for r in headline)
    assert len({r["target"] for r in headline}) == len(headline)
    ms = {q["m"] for q in gap["optimum_m_sensitivity"]}
    assert ms == set(gap["meta"]["settings"]["m_sensitivity"]["ms"])
    for q in gap["optimum_m_sensitivity"]:
        assert {"m", "beta", "reward", "kl"} <= set(q)
    assert gap["amortisation"] and gap["optimum"][0]["kl_mean"] == 0.0
    assert gap["meta"]["quick"] is quick


def test_the_saved_results_hold_the_contract_and_three_seeds():
    gap = json.loads((ROOT / "data" / "optimum_gap.json").read_text())
    check_contract(gap)
    assert len(gap["meta"]["settings"]["seeds"]) >= 3
    # pi*'s estimate only rises with M at a fixed beta (nested samples), up to its noise
    sens = gap["optimum_m_sensitivity"]
    for beta in {q["beta"] for q in sens}:
        rewards = [q["reward"] for q in sorted((q for q in sens if q["beta"] == beta), key=lambda q: q["m"])]
        assert rewards[-1] >= rewards[0] - 0.02
