"""Plots and widgets for the notebooks. Every plot labels its axes (with units where there are any)
and returns its matplotlib Axes (or Figure) so a notebook can add to it.

A flat module: append new ``plot_*`` / widget functions at the end.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from helpers import toy


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _ax(ax=None, figsize=(6, 3.5)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


# ----------------------------------------------------------------------------- notebook 01


def plot_true_vs_fitted(r_true, r_fit, labels=None, ax=None, title="Bradley-Terry fit"):
    """Scatter of fitted against true rewards with the identity line (shifted by the mean offset)."""
    ax = _ax(ax, (4.5, 4))
    r_true, r_fit = _np(r_true), _np(r_fit)
    offset = float(np.mean(r_fit - r_true))
    lo, hi = min(r_true.min(), (r_fit - offset).min()) - 0.3, max(r_true.max(), (r_fit - offset).max()) + 0.3
    ax.plot([lo, hi], [lo + offset, hi + offset], "--", color="gray", label=f"y = x {offset:+.2f}")
    ax.scatter(r_true, r_fit, zorder=3)
    if labels is not None:
        for x, y, s in zip(r_true, r_fit, labels):
            ax.annotate(s, (x, y), textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set_xlabel("true reward r(y)")
    ax.set_ylabel("fitted score s(y)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return ax


def plot_loss_curve(losses, ax=None, xlabel="training step", ylabel="loss (nats per pair)", title=None,
                    label=None):
    """A training curve."""
    ax = _ax(ax)
    ax.plot(np.arange(len(losses)), _np(losses), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if label:
        ax.legend()
    return ax


def plot_score_separation(chosen_scores, rejected_scores, ax=None, title="held-out pairs"):
    """Histogram of s(chosen) - s(rejected): mass right of 0 = pairs ranked correctly."""
    ax = _ax(ax)
    margin = _np(chosen_scores) - _np(rejected_scores)
    ax.hist(margin, bins=40, color="C0", alpha=0.8)
    ax.axvline(0.0, color="k", lw=1)
    ax.set_xlabel("score margin s(y_w) - s(y_l) (reward-model units)")
    ax.set_ylabel("number of pairs")
    ax.set_title(f"{title}: {np.mean(margin > 0):.0%} ranked correctly")
    return ax


# ----------------------------------------------------------------------------- notebook 02


def plot_policies(policies: dict, responses, ax=None, title=None):
    """Grouped bars: one group per response, one bar per policy."""
    ax = _ax(ax, (7, 3.5))
    k = len(responses)
    width = 0.8 / len(policies)
    for n, (name, pi) in enumerate(policies.items()):
        ax.bar(np.arange(k) + (n - (len(policies) - 1) / 2) * width, _np(pi), width, label=name)
    ax.set_xticks(np.arange(k), responses)
    ax.set_xlabel("response y")
    ax.set_ylabel("probability pi(y)")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def plot_beta_sweep(pi_ref, r, responses, betas=None, fig=None):
    """Static view of what the beta slider shows: pi*(y) for every response, and the objective's
    reward and KL terms, as beta goes from 0.05 to 100 (log scale)."""
    betas = np.logspace(-1.3, 2, 120) if betas is None else np.asarray(betas)
    pis = torch.stack([toy.optimal_policy(pi_ref, r, float(b)) for b in betas])  # (n_beta, K)
    reward = toy.expected_reward(pis, r)
    kl = toy.kl_divergence(pis, pi_ref)
    fig = fig or plt.figure(figsize=(11, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.stackplot(betas, _np(pis).T, labels=responses, alpha=0.85)
    ax1.set_xscale("log")
    ax1.set_xlabel("beta (log scale)")
    ax1.set_ylabel("pi*(y), stacked")
    ax1.set_title("optimal policy: argmax r  <-  beta  ->  pi_ref")
    ax1.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    ax2.plot(betas, _np(reward), label="E_pi*[r]")
    ax2.plot(betas, _np(kl), label="KL(pi* || pi_ref) (nats)")
    ax2.plot(betas, _np(reward - torch.as_tensor(betas) * kl), label="objective E[r] - beta KL")
    ax2.set_xscale("log")
    ax2.set_xlabel("beta (log scale)")
    ax2.set_ylabel("reward units / nats")
    ax2.set_title("the objective's two terms at pi*")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_objective_ascent(history, optimum: float, ax=None):
    """Objective J during gradient ascent, with the closed-form optimum J(pi*) as a line."""
    ax = _ax(ax)
    ax.plot(_np(history), label="gradient ascent")
    ax.axhline(optimum, color="k", ls="--", lw=1, label="J(pi*) closed form")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(0, len(history))
    ax.set_xlabel("gradient step (linear to 10, then log scale)")
    ax.set_ylabel("J = E[r] - beta KL (reward units)")
    ax.legend()
    return ax


def beta_slider(pi_ref, r, responses, beta: float = 1.0):
    """An ipywidgets slider on beta (log scale) redrawing pi* next to pi_ref, with E[r] and KL.

    Uses only widgets that exist in ipywidgets 7.7 (Colab) and 8.x: FloatLogSlider, Output,
    interactive_output, VBox.
    """
    import ipywidgets as widgets

    slider = widgets.FloatLogSlider(value=beta, base=10, min=-1.5, max=2, step=0.05, description="beta",
                                    continuous_update=True, readout_format=".3f")
    out = widgets.Output()

    def draw(beta):
        pi_star = toy.optimal_policy(pi_ref, r, beta)
        reward = toy.expected_reward(pi_star, r).item()
        kl = toy.kl_divergence(pi_star, pi_ref).item()
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3.2))
            plot_policies({"pi_ref": pi_ref, "pi* (beta)": pi_star}, responses, ax=ax,
                          title=f"beta = {beta:.3f}:  E[r] = {reward:.3f},  KL = {kl:.3f} nats,  "
                                f"J = {reward - beta * kl:.3f}")
            ax.set_ylim(0, 1)
            plt.show()

    widgets.interactive_output(draw, {"beta": slider})  # also draws once, at the initial value
    return widgets.VBox([slider, out])


# ----------------------------------------------------------------------------- notebook 03


def plot_convergence(n_pairs, errors, ax=None, title="DPO on sampled preferences converges to pi*"):
    """Error of the fitted policy against the number of preference pairs (log-log), with a 1/sqrt(n) guide."""
    ax = _ax(ax)
    n_pairs, errors = _np(n_pairs).astype(float), _np(errors)
    ax.loglog(n_pairs, errors, "o-", label="max_y |pi_DPO(y) - pi*(y)|")
    guide = errors[0] * np.sqrt(n_pairs[0] / n_pairs)
    ax.loglog(n_pairs, guide, "--", color="gray", label="~ 1 / sqrt(n)")
    ax.set_xlabel("number of preference pairs n")
    ax.set_ylabel("max abs. error in probability")
    ax.set_title(title)
    ax.legend()
    return ax


def plot_dpo_weight(beta_values=(0.1, 0.5, 2.0), ax=None):
    """sigma(r_hat_l - r_hat_w) against the log-ratio margin h, for a few beta."""
    ax = _ax(ax)
    h = torch.linspace(-15, 15, 301, dtype=torch.float64)
    for beta in beta_values:
        weight = torch.sigmoid(-beta * h)  # r_hat_l - r_hat_w = -beta * h
        ax.plot(_np(h), _np(weight), label=f"beta = {beta:g}")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("h = log-ratio margin (nats): log pi/pi_ref of y_w minus that of y_l")
    ax.set_ylabel("gradient weight sigma(r_hat_l - r_hat_w)")
    ax.set_title("DPO pushes hardest on pairs its implicit reward ranks wrongly")
    ax.legend()
    return ax


def plot_trajectories(trajectories: dict, index: int, ax=None, ylabel="pi(y)", title=None, logy=True):
    """pi(y_index) over optimisation steps, one line per run (e.g. DPO / cDPO / IPO)."""
    ax = _ax(ax)
    for name, traj in trajectories.items():
        ax.plot(_np(traj)[:, index], label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("optimisation step (Adam)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax
