"""Notebook 08's plots draw what they are given (Agg backend, no display)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from helpers import viz  # noqa: E402


def test_plot_rlhf_frontier_draws_every_method_and_bon():
    runs = [{"method": m, "beta": b, "kl_mean": kl, "kl_se": 0.1, "reward_mean": r, "reward_se": 0.02}
            for m, b, kl, r in [("PPO", 0.1, 3.0, 0.5), ("PPO", 0.3, 1.0, 0.3), ("DPO", 0.5, 4.0, 0.6)]]
    bon = [{"method": "BoN (reward model)", "N": n, "kl_bound": np.log(n) - (n - 1) / n, "reward_mean": 0.1 * n,
            "reward_se": 0.01} for n in (1, 2, 4)]
    ax = viz.plot_rlhf_frontier(runs, bon, {"kl_mean": 0.0, "reward_mean": 0.15, "reward_se": 0.02})
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["PPO", "DPO"] and any("BoN" in s for s in labels) and "SFT (pi_ref)" in labels
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
