"""The notebook 05-07 plots and the token browser: they draw what they are given, label their axes,
and the widget follows the picker."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from helpers import viz

ROWS = [
    {"prompt": "the film", "response": " was great.", "tokens": [" was", " great", ".", "<|endoftext|>"],
     "rewards": [0.1, 0.8, -0.05, -0.3], "total": 0.55},
    {"prompt": "a <b>nurse</b>", "response": " cries.", "tokens": [" cries", ".", "<|endoftext|>"],
     "rewards": [-0.6, 0.0, 0.2], "total": -0.4},
]
METRICS = [{"step": s, "loss": 0.69 - 0.01 * s, "rewards/accuracies": 0.5 + 0.02 * s, "rewards/chosen": -0.01 * s,
            "rewards/rejected": -0.03 * s, "rewards/margins": 0.02 * s} for s in range(1, 11)]
METRICS[4].update({"eval/reward_mean": 0.3, "eval/kl_mean": 1.0})
METRICS[9].update({"eval/reward_mean": 0.5, "eval/kl_mean": 2.0})


def test_smooth_is_a_trailing_mean():
    v = np.array([1.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(viz._smooth(v, 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(viz._smooth(v, 1), v)


def test_dpo_metrics_plot_draws_every_panel():
    fig = viz.plot_dpo_metrics(METRICS, smooth=3)
    axes = fig.axes
    assert len(axes) == 5  # loss, accuracy, rewards, eval + its twin axis
    assert axes[0].get_ylabel().startswith("loss")
    eval_line = axes[3].get_lines()[0]
    assert list(eval_line.get_xdata()) == [5, 10] and list(eval_line.get_ydata()) == [0.3, 0.5]
    fig_no_eval = viz.plot_dpo_metrics([{k: v for k, v in m.items() if not k.startswith("eval/")} for m in METRICS])
    assert len(fig_no_eval.axes) == 3


def test_dpo_eval_panel_starts_at_step_0_with_error_bars():
    metrics = [dict(m) for m in METRICS]
    metrics[4].update({"eval/reward_se": 0.05, "eval/kl_se": 0.1})
    metrics[9].update({"eval/reward_se": 0.04, "eval/kl_se": 0.2})
    start = {"reward_mean": 0.25, "reward_se": 0.06, "kl_mean": 0.0, "kl_se": 0.0}
    fig = viz.plot_dpo_metrics(metrics, smooth=3, start=start)
    eval_ax = fig.axes[3]
    line = eval_ax.get_lines()[0]
    assert list(line.get_xdata()) == [0, 5, 10] and list(line.get_ydata()) == [0.25, 0.3, 0.5]
    bars = eval_ax.collections[0].get_segments()  # one vertical segment per point: mean +- SE
    assert [tuple(np.round(seg[:, 1], 3)) for seg in bars] == [(0.19, 0.31), (0.25, 0.35), (0.46, 0.54)]
    assert "SE" in eval_ax.get_ylabel()


def test_chosen_rejected_and_margin_plots():
    ax = viz.plot_chosen_rejected(METRICS, smooth=1)
    ys = [list(line.get_ydata()) for line in ax.get_lines()[:3]]
    assert ys[0] == pytest.approx([-0.01 * s for s in range(1, 11)])
    ax = viz.plot_margin_histogram(np.array([-1.0, 0.5, 2.0, 3.0]))
    assert "75%" in ax.get_title()


def test_implicit_vs_true_reports_pearson():
    x = np.arange(10.0)
    ax = viz.plot_implicit_vs_true(2 * x + 1, x)
    assert "r = 1.00" in ax.get_title()


def test_frontier_plot_labels_points():
    dpo = [{"beta": 0.1, "kl_mean": 5.0, "reward_mean": 0.8, "kl_se": 0.2, "reward_se": 0.02},
           {"beta": 1.0, "kl_mean": 1.0, "reward_mean": 0.4}]
    bon = [{"n": 1, "kl_bound": 0.0, "reward_mean": 0.1}, {"n": 4, "kl_bound": 0.636, "reward_mean": 0.6}]
    ax = viz.plot_reward_kl_frontier(dpo, bon, sft_reward=0.1)
    texts = [t.get_text() for t in ax.texts]
    assert "beta=0.1" in texts and "N=4" in texts
    assert ax.get_xlabel().startswith("KL")


def test_token_heatmap_and_html():
    ax = viz.plot_token_heatmap(ROWS)
    drawn = [t.get_text() for t in ax.texts]
    assert " great" in drawn and "⏎" in drawn and "+0.55" in drawn
    html = viz.tokens_html(ROWS[1], vmax=1.0)
    assert "&lt;b&gt;nurse&lt;/b&gt;" in html and "<b>nurse</b>" not in html  # text is escaped
    assert 'title="-0.600"' in html


def test_token_browser_follows_the_picker():
    w = viz.token_browser(ROWS)
    picker, view = w.children
    assert "r_hat = +0.55" in view.value
    picker.value = 1
    assert "r_hat = -0.40" in view.value and "cries" in view.value
    # one compact cell per token (its value under it), no tall table rows
    assert "<tr>" not in view.value and view.value.count(">+0.200</div>") == 1
    assert view.value.count("font-size:11px") == len(ROWS[1]["tokens"])
