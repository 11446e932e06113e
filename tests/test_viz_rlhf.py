"""Notebook 08's plots draw what they are given (Agg backend, no display)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import viz  # noqa: E402


def test_plot_rlhf_frontier_draws_every_method_and_bon():
    runs = [{"method": m, "beta": b, "kl_mean": kl, "kl_se": 0.1, "reward_mean": r, "reward_se": 0.02}
            for m, b, kl, r in [("PPO", 0.1, 3.0, 0.5), ("PPO", 0.3, 1.0, 0.3), ("DPO", 0.5, 4.0, 0.6)]]
    bon = [{"method": "BoN (reward model)", "N": n, "kl_bound": np.log(n) - (n - 1) / n, "reward_mean": 0.1 * n,
            "reward_se": 0.01} for n in (1, 2, 4)]
    ax = viz.plot_rlhf_frontier(runs, bon, {"kl_mean": 0.0, "reward_mean": 0.15, "reward_se": 0.02})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["PPO", "DPO"] and any("BoN" in s for s in labels) and "SFT ($\\pi_{\\mathrm{ref}}$)" in labels
    ppo_line = ax.get_lines()[0]
    assert list(ppo_line.get_xdata()) == [1.0, 3.0]  # sorted by KL
    assert "KL" in ax.get_xlabel()


def test_plot_rl_history_and_clip_and_toy():
    hist = [{"step": i, "score": 0.1 * i, "kl": 0.2 * i} for i in range(5)]
    ax = viz.plot_rl_history(hist)
    assert list(ax.get_lines()[0].get_ydata()) == [0.1 * i for i in range(5)]
    ax = viz.plot_clipped_objective(0.2)
    y = ax.get_lines()[0].get_ydata()  # A = +1: min(r, clip(r)) is flat at 1.2 beyond r = 1.2
    assert np.isclose(y.max(), 1.2)
    ax = viz.plot_toy_convergence({"PPO": [(0, 0.5), (1, 0.1)], "RLOO": [(0, 0.4), (1, 0.2)]})
    assert len(ax.get_lines()) == 2 and ax.get_yscale() == "log"


def test_the_optimum_is_drawn_through_its_reliable_points_only():
    from helpers.optimum import optimum_frontier

    rng = np.random.default_rng(0)
    optimum = optimum_frontier(rng.uniform(-1, 1, size=(50, 64)), [0.01, 0.1, 0.3, 1.0], min_ess=8)
    reliable = [q for q in optimum if q["reliable"]]
    assert 1 < len(reliable) < len(optimum)  # beta 0.01 piles onto one sample per prompt
    runs = [{"method": "DPO", "beta": 0.1, "kl_mean": 1.0, "kl_se": 0.1, "reward_mean": 0.2, "reward_se": 0.02}]
    for ax in (viz.plot_rlhf_frontier(runs, optimum=optimum), viz.plot_reward_kl_frontier(runs, optimum=optimum)):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "the optimum $\\pi^*$ (from 64 SFT samples/prompt)" in labels and "$\\pi^*$, too few effective samples" in labels
        line = next(ln for ln in ax.get_lines() if ln.get_label().startswith("the optimum"))
        assert list(line.get_xdata()) == [q["kl_mean"] for q in reliable]


def test_the_sft_star_starts_the_optimum_curve():
    """With pi* drawn, pi_ref's star is pi*'s own KL-0 point (the fractions' baseline, same samples),
    not a separate evaluation that would sit off the curve's start by its noise."""
    from helpers.optimum import optimum_frontier

    optimum = optimum_frontier(np.random.default_rng(1).uniform(-1, 1, size=(20, 32)), [0.3, 1.0])
    start = next(q for q in optimum if q["kl_mean"] == 0.0)
    runs = [{"method": "DPO", "beta": 0.1, "kl_mean": 1.0, "kl_se": 0.1, "reward_mean": 0.2, "reward_se": 0.02}]
    for ax in (viz.plot_rlhf_frontier(runs, sft={"kl_mean": 0.0, "reward_mean": 9.0, "reward_se": 0.1}, optimum=optimum),
               viz.plot_reward_kl_frontier(runs, sft_reward=9.0, optimum=optimum)):
        star = next(ln for ln in ax.get_lines() if ln.get_marker() == "*")
        assert list(star.get_xdata()) == [0.0] and star.get_ydata()[0] == pytest.approx(start["reward_mean"])
    ax = viz.plot_reward_kl_frontier(runs, sft_reward=9.0)  # no optimum: the evaluation given
    assert next(ln for ln in ax.get_lines() if ln.get_marker() == "*").get_ydata()[0] == 9.0


def test_pipeline_figure_draws_both_roads_and_the_notes():
    ax = viz.plot_pipelines({"PPO": "4 models in memory", "DPO": "2 models"})
    texts = [t.get_text() for t in ax.texts]
    for step in ("SFT", "sample pairs", "preference labels", "reward model", "PPO", "DPO", "RLHF"):
        assert step in texts, step
    assert "4 models in memory" in texts and "2 models" in texts
    assert len(ax.patches) == 6  # three shared steps, two RLHF steps, one DPO step
