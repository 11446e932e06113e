"""DPO_SCALE=smoke shrinks steps and counts through helpers.profiles.sizes, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import profiles as P

ROOT = Path(__file__).resolve().parents[1]


def test_full_scale_is_the_table(monkeypatch):
    monkeypatch.delenv("DPO_SCALE", raising=False)
    assert P.sizes(P.DPO_SIZES, "gpt2") == P.DPO_SIZES["gpt2"]
    assert P.sizes(P.FRONTIER_SIZES, "tiny") == P.FRONTIER_SIZES["tiny"]


def test_smoke_caps_steps_and_counts_only(monkeypatch):
    monkeypatch.setenv("DPO_SCALE", "smoke")
    for table in (P.WORLD_SIZES, P.DPO_SIZES, P.RLHF_SIZES, P.FRONTIER_SIZES, P.SFT_DEMO_SIZES, P.PAIRS_SIZES,
                  P.SFT_EVAL_SIZES):
        for profile in table:
            full, small = table[profile], P.sizes(table, profile)

            def walk(a, b, path=""):
                assert a.keys() == b.keys()
                for k in a:
                    if isinstance(a[k], dict):
                        walk(a[k], b[k], f"{path}{k}.")
                    elif k in P.SMOKE_CAPS and isinstance(a[k], int) and not isinstance(a[k], bool):
                        assert b[k] == min(a[k], P.SMOKE_CAPS[k]), f"{path}{k}"
                    else:  # lengths, learning rates, betas, seeds: untouched
                        assert b[k] == a[k], f"{path}{k}"

            walk(full, small)
    assert P.sizes(P.DPO_SIZES, "gpt2")["max_steps"] == 4
    assert P.sizes(P.WORLD_SIZES, "gpt2")["sft_max_length"] == 128  # a length, not a count


def test_bad_scale_is_refused(monkeypatch):
    monkeypatch.setenv("DPO_SCALE", "huge")
    with pytest.raises(ValueError, match="DPO_SCALE must be one of"):
        P.sizes(P.DPO_SIZES, "tiny")


def test_no_code_branches_on_the_scale():
    """Only helpers/profiles.py reads DPO_SCALE; elsewhere only the cache location names it."""
    readers = []
    for path in list((ROOT / "helpers").rglob("*.py")) + list((ROOT / "scripts").glob("*.py")) + \
            list((ROOT / "notebooks" / "src").glob("*.py")):
        text = path.read_text()
        if re.search(r"DPO_SCALE|\bscale\(\)", text):
            readers.append(path.relative_to(ROOT).as_posix())
    assert sorted(readers) == ["helpers/profiles.py", "helpers/world.py"], readers
    world_src = (ROOT / "helpers" / "world.py").read_text()
    assert world_src.count("scale()") == 2  # default_root's folder name only


def test_smoke_world_lives_apart(monkeypatch, tmp_path):
    from helpers.world import tiny_world

    monkeypatch.setenv("DPO_CACHE", str(tmp_path))
    monkeypatch.delenv("DPO_SCALE", raising=False)
    full = tiny_world()
    monkeypatch.setenv("DPO_SCALE", "smoke")
    smoke = tiny_world()
    assert Path(full.root).name == "tiny" and Path(smoke.root).name == "tiny-smoke"
    assert smoke.sft_steps == 3 and full.sft_steps == 300


def _learning_rates(table, path=""):
    for k, v in table.items():
        if isinstance(v, dict):
            yield from _learning_rates(v, f"{path}{k}.")
        elif k in ("lr", "sweep_lr", "sft_lr"):
            yield f"{path}{k}", v


def test_gpt2_learning_rates_suit_a_pretrained_124m_model():
    """Issue #12 bug 4: the gpt2 profile reused tiny's learning rates (a reward model at 2e-3, PPO at
    1e-4) on a pretrained GPT-2 124M. Every gpt2 lr is now a fine-tuning lr (<= 5e-5, the largest
    anchor: transformers' default for fine-tuning GPT-2), and the gpt2 tables are their own."""
    for name, table in (("WORLD", P.WORLD_SIZES), ("DPO", P.DPO_SIZES), ("RLHF", P.RLHF_SIZES),
                        ("FRONTIER", P.FRONTIER_SIZES)):
        rates = dict(_learning_rates(table["gpt2"]))
        assert rates, name
        for key, lr in rates.items():
            assert lr <= 5e-5, f"{name}_SIZES['gpt2'].{key} = {lr:g}"
    assert P.RLHF_SIZES["gpt2"] is not P.RLHF_SIZES["tiny"]
    assert P.FRONTIER_SIZES["gpt2"]["rl"]["max_new_tokens"] == P.WORLD_SIZES["gpt2"]["max_new_tokens"]
    assert P.FRONTIER_SIZES["gpt2"]["dpo"]["gradient_accumulation_steps"] == P.DPO_SIZES["gpt2"]["gradient_accumulation_steps"]
