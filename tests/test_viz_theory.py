"""Plots and the beta slider of the theory notebooks (01-03): labelled axes, the numbers they show."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import toy, viz  # noqa: E402

WORLD = toy.make_toy()


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def assert_labelled(ax):
    assert ax.get_xlabel() and ax.get_ylabel()


def test_theory_plots_have_labelled_axes():
    assert_labelled(viz.plot_true_vs_fitted(WORLD.r, WORLD.r + 0.5, labels=WORLD.responses))
    assert_labelled(viz.plot_loss_curve([0.7, 0.5, 0.3], steps=[10, 20, 30]))
    assert_labelled(viz.plot_score_separation(torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.0, 0.0, 0.0])))
    assert_labelled(viz.plot_policies({"pi_ref": WORLD.pi_ref}, WORLD.responses))
    assert_labelled(viz.plot_objective_ascent(torch.linspace(0, 1, 50), 1.0))
    assert_labelled(viz.plot_convergence([100, 1000, 10000], [0.1, 0.03, 0.01]))
    assert_labelled(viz.plot_dpo_weight())
    _, traj = toy.fit_toy_policy(WORLD.pi_ref, torch.tensor([0]), torch.tensor([5]), 1.0, optimizer="adam", steps=5)
    assert_labelled(viz.plot_trajectories({"DPO": traj}, index=-1))
    fig = viz.plot_beta_sweep(WORLD.pi_ref, WORLD.r, WORLD.responses)
    for ax in fig.axes:
        assert_labelled(ax)


def test_loss_curve_uses_the_given_steps():
    ax = viz.plot_loss_curve([0.7, 0.5], steps=[10, 20])
    assert list(ax.lines[0].get_xdata()) == [10, 20]


def test_score_separation_title_reports_the_accuracy():
    ax = viz.plot_score_separation(torch.tensor([1.0, 2.0, -1.0, 3.0]), torch.zeros(4))
    assert "75% ranked correctly" in ax.get_title()


def test_dpo_weight_curve_is_sigmoid_of_minus_beta_h():
    ax = viz.plot_dpo_weight(beta_values=(0.5,))
    line = ax.lines[0]
    h, w = torch.tensor(line.get_xdata()), torch.tensor(line.get_ydata())
    assert torch.allclose(w, torch.sigmoid(-0.5 * h).to(w.dtype), atol=1e-12)


def test_beta_sweep_goes_from_argmax_to_pi_ref():
    fig = viz.plot_beta_sweep(WORLD.pi_ref, WORLD.r, WORLD.responses)
    kl_line = [ln for ax in fig.axes for ln in ax.lines if ln.get_label().startswith("KL")][0]
    assert fig.axes[1].get_ylabel() == "reward units" and fig.axes[2].get_ylabel() == "nats"  # one unit per axis
    kl = kl_line.get_ydata()
    assert kl[0] > 2.5 and kl[-1] < 1e-3  # small beta: far from pi_ref; large beta: at pi_ref


def test_beta_slider_redraws_pi_star_with_reward_and_kl():
    box = viz.beta_slider(WORLD.pi_ref, WORLD.r, WORLD.responses, beta=1.0)
    slider = box.children[0]
    assert type(slider).__name__ == "FloatLogSlider" and slider.value == pytest.approx(1.0)
    n_before = len(plt.get_fignums())
    slider.value = 0.1
    assert len(plt.get_fignums()) == n_before + 1  # the slider drew a new figure
    title = plt.figure(plt.get_fignums()[-1]).axes[0].get_title()
    pi_star = toy.optimal_policy(WORLD.pi_ref, WORLD.r, 0.1)
    kl = toy.kl_divergence(pi_star, WORLD.pi_ref).item()
    assert "beta = 0.100" in title and f"KL = {kl:.3f}" in title
