"""Plots and widgets for the notebooks. Every plot labels its axes (with units where there are any)
and returns its matplotlib Axes (or Figure) so a notebook can add to it.

A flat module: append new ``plot_*`` / widget functions at the end.
"""

from __future__ import annotations

import matplotlib
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
import torch

from helpers import toy
from helpers.optimum import reference_point


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
                    label=None, steps=None):
    """A training curve; ``steps`` are the x values (default 0, 1, 2, ...)."""
    ax = _ax(ax)
    ax.plot(np.arange(len(losses)) if steps is None else _np(steps), _np(losses), label=label)
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
    ax.set_ylabel(r"probability $\pi(y)$")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def plot_beta_sweep(pi_ref, r, responses, betas=None, fig=None):
    """Static view of what the beta slider shows, as beta goes from 0.05 to 100 (log scale): pi*(y)
    for every response; the objective and its two terms in reward units (E[r] and the penalty
    beta * KL); and the KL itself in nats, on its own axis."""
    betas = np.logspace(-1.3, 2, 120) if betas is None else np.asarray(betas)
    pis = torch.stack([toy.optimal_policy(pi_ref, r, float(b)) for b in betas])  # (n_beta, K)
    reward = toy.expected_reward(pis, r)
    kl = toy.kl_divergence(pis, pi_ref)
    penalty = torch.as_tensor(betas) * kl
    fig = fig or plt.figure(figsize=(15, 3.6))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.stackplot(betas, _np(pis).T, labels=responses, alpha=0.85)
    ax1.set_ylabel(r"$\pi^*(y)$, stacked")
    ax1.set_title(r"optimal policy: $\arg\max r$  $\leftarrow\ \beta\ \rightarrow$  $\pi_{\mathrm{ref}}$")
    ax1.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    ax2.plot(betas, _np(reward), label=r"$\mathbb{E}_{\pi^*}[r]$")
    ax2.plot(betas, _np(penalty), label=r"$\beta\,\mathrm{KL}$ (the penalty)")
    ax2.plot(betas, _np(reward - penalty), label=r"objective $\mathbb{E}[r]-\beta\,\mathrm{KL}$")
    ax2.set_ylabel("reward units")
    ax2.set_title(r"the objective and its two terms at $\pi^*$")
    ax2.legend(fontsize=8)
    ax3.plot(betas, _np(kl), color="C3", label=r"KL$(\pi^*\,\|\,\pi_{\mathrm{ref}})$")
    ax3.set_ylabel("nats")
    ax3.set_title(r"KL$(\pi^*\,\|\,\pi_{\mathrm{ref}})$: how far $\pi^*$ moves")
    for ax in (ax1, ax2, ax3):
        ax.set_xscale("log")
        ax.set_xlabel(r"$\beta$ (log scale)")
    fig.tight_layout()
    return fig


def plot_objective_ascent(history, optimum: float, ax=None):
    """Objective J during gradient ascent, with the closed-form optimum J(pi*) as a line."""
    ax = _ax(ax)
    ax.plot(_np(history), label="gradient ascent")
    ax.axhline(optimum, color="k", ls="--", lw=1, label=r"$J(\pi^*)$ closed form")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(0, len(history))
    ax.set_xlabel("gradient step (linear to 10, then log scale)")
    ax.set_ylabel(r"$J = \mathbb{E}[r] - \beta\,\mathrm{KL}$ (reward units)")
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
    ax.loglog(n_pairs, errors, "o-", label=r"$\max_y |\pi_{\mathrm{DPO}}(y) - \pi^*(y)|$")
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
        ax.plot(_np(h), _np(weight), label=rf"$\beta$ = {beta:g}")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(r"$h$ = log-ratio margin (nats): $\log\pi/\pi_{\mathrm{ref}}$ of $y_w$ minus that of $y_l$")
    ax.set_ylabel(r"gradient weight $\sigma(\hat r_l - \hat r_w)$")
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


# ----------------------------------------------------------------------------- notebooks 05-07


def plot_sft_history(history: dict, ax=None, title="SFT"):
    """Training loss (mean over each logging window) and held-out loss of ``helpers.sft.train_sft``."""
    ax = _ax(ax)
    ax.plot(history["steps"], history["loss"], label="training (window mean)")
    if history.get("eval_loss"):
        ax.plot(history["eval_steps"], history["eval_loss"], "o", color="C3", label="held-out reviews")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    ax.legend()
    return ax


def _series(metrics: list[dict], key: str):
    rows = [(m["step"], m[key]) for m in metrics if key in m and m[key] is not None]
    if not rows:
        return np.array([]), np.array([])
    steps, values = zip(*rows)
    return np.asarray(steps), np.asarray(values, dtype=np.float64)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (same length; the first points average what exists)."""
    if window <= 1 or len(values) == 0:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values)
    for i in range(len(values)):
        lo = max(0, i + 1 - window)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def plot_dpo_metrics(metrics: list[dict], smooth: int = 5, fig=None, start: dict | None = None):
    """The DPO run at a glance (TRL's metric names): loss, accuracy, implicit rewards, and the
    periodic evaluation (mean ground-truth reward and KL to pi_ref, with their standard errors as
    error bars) when present.

    Args:
        metrics: ``helpers.train.train_dpo``'s list of per-step dicts.
        smooth: moving-average window over steps (raw values drawn faintly).
        start: the same evaluation of the starting policy (``eval_fn(ref_model)``: keys
            ``reward_mean``, ``reward_se``, ``kl_mean``, ``kl_se``), drawn at step 0 -- without it a
            rise cannot be told from where the run began.
    Returns:
        the Figure.
    """
    has_eval = any("eval/reward_mean" in m for m in metrics)
    ncols = 4 if has_eval else 3
    fig = fig or plt.figure(figsize=(4.0 * ncols, 3.2))
    axes = fig.subplots(1, ncols)
    steps, loss = _series(metrics, "loss")
    axes[0].plot(steps, loss, color="C0", alpha=0.3)
    axes[0].plot(steps, _smooth(loss, smooth), color="C0")
    axes[0].axhline(np.log(2), color="k", ls=":", lw=1, label="ln 2 (step 0)")
    axes[0].set_ylabel("loss (nats per pair)")
    axes[0].legend()
    steps, acc = _series(metrics, "rewards/accuracies")
    axes[1].plot(steps, acc, color="C2", alpha=0.3)
    axes[1].plot(steps, _smooth(acc, smooth), color="C2")
    axes[1].axhline(0.5, color="k", ls=":", lw=1)
    axes[1].set_ylim(0, 1.02)
    axes[1].set_ylabel("rewards/accuracies")
    for key, color in (("rewards/chosen", "C0"), ("rewards/rejected", "C3"), ("rewards/margins", "k")):
        steps, v = _series(metrics, key)
        axes[2].plot(steps, _smooth(v, smooth), color=color, label=key.split("/")[1])
    axes[2].axhline(0.0, color="grey", lw=0.8)
    axes[2].set_ylabel(r"implicit reward ($\beta\times$ log-ratio)")
    axes[2].legend(fontsize=8)
    if has_eval:
        rows = ([{"step": 0, **{f"eval/{k}": v for k, v in start.items()}}] if start else []) + \
            [m for m in metrics if "eval/reward_mean" in m]
        steps = [m["step"] for m in rows]

        def column(key):
            values = [m.get(key) for m in rows]
            return None if any(v is None for v in values) else values

        axes[3].errorbar(steps, column("eval/reward_mean"), yerr=column("eval/reward_se"), fmt="o-", color="C1",
                         capsize=3)
        axes[3].set_ylabel("held-out mean reward (± SE)", color="C1")
        twin = axes[3].twinx()
        twin.errorbar(steps, column("eval/kl_mean"), yerr=column("eval/kl_se"), fmt="s--", color="C4", capsize=3)
        twin.set_ylabel(r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ (nats, ± SE)", color="C4")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    return fig


def plot_chosen_rejected(metrics: list[dict], smooth: int = 5, ax=None, title="implicit rewards during training"):
    """rewards/chosen, rewards/rejected and their difference over training (moving averages)."""
    ax = _ax(ax, figsize=(6.5, 3.8))
    for key, color, label in (("rewards/chosen", "C0", "chosen  beta log(pi/pi_ref)(y_w)"),
                              ("rewards/rejected", "C3", "rejected beta log(pi/pi_ref)(y_l)"),
                              ("rewards/margins", "k", "margin (chosen - rejected)")):
        steps, v = _series(metrics, key)
        ax.plot(steps, _smooth(v, smooth), color=color, label=label)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel(r"implicit reward (nats $\times\ \beta$)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_margin_histogram(margins, ax=None, title="implicit-reward margins"):
    """Histogram of r_hat(y_w) - r_hat(y_l): mass right of 0 = pairs the policy ranks correctly."""
    ax = _ax(ax)
    m = _np(margins)
    ax.hist(m, bins=40, color="C0", alpha=0.8)
    ax.axvline(0.0, color="k", lw=1)
    ax.set_xlabel("margin r_hat(x, y_w) - r_hat(x, y_l)")
    ax.set_ylabel("number of pairs")
    ax.set_title(f"{title}: {np.mean(m > 0):.0%} > 0")
    return ax


def plot_implicit_vs_true(implicit, true, ax=None, title="implicit vs ground-truth reward"):
    """Scatter of each response's implicit reward against its ground-truth reward, with Pearson r."""
    ax = _ax(ax, figsize=(5, 4))
    x, y = _np(true), _np(implicit)
    ax.scatter(x, y, s=8, alpha=0.5)
    r = np.corrcoef(x, y)[0, 1] if len(x) > 1 else float("nan")
    ax.set_xlabel("ground-truth reward r(x, y)")
    ax.set_ylabel(r"implicit reward $\beta\log(\pi/\pi_{\mathrm{ref}})$")
    ax.set_title(f"{title} (Pearson r = {r:.2f})")
    return ax


def _sft_star(ax, reward: float, reward_se: float | None, optimum: list[dict] | None):
    """pi_ref's point at KL 0. With an optimum, it is the optimum's own KL-0 point -- the same prompts
    and samples every "fraction of pi*'s gain" is measured from -- so the star and the curve share
    their start; a separate evaluation of the SFT model (other samples) would sit off it by its noise."""
    if optimum:
        start = reference_point(optimum)
        reward, reward_se = start["reward_mean"], start.get("reward_se")
    label = r"SFT ($\pi_{\mathrm{ref}}$)" + (r", the samples behind $\pi^*$" if optimum else "")
    ax.errorbar([0.0], [reward], yerr=None if reward_se is None else [reward_se], marker="*", ms=11, color="k",
                ls="none", capsize=2, label=label, zorder=5)


def plot_optimum(optimum: list[dict], ax, label_betas: bool = True, color: str = "0.25"):
    """The optimum pi*_beta's frontier (``helpers.optimum.optimum_frontier``): a line through its
    reliable points with a band of +- one standard error of the reward; points whose effective
    sample size is too small are drawn hollow (the estimate is biased low there)."""
    ok = [q for q in optimum if q["reliable"]]
    weak = [q for q in optimum if not q["reliable"]]
    kl = np.array([q["kl_mean"] for q in ok])
    reward = np.array([q["reward_mean"] for q in ok])
    se = np.array([q["reward_se"] for q in ok])
    m = optimum[0]["n_samples"]
    ax.plot(kl, reward, "-", color=color, lw=2, label=rf"the optimum $\pi^*$ (from {m} SFT samples/prompt)")
    ax.fill_between(kl, reward - se, reward + se, color=color, alpha=0.15, lw=0)
    if weak:
        ax.plot([q["kl_mean"] for q in weak], [q["reward_mean"] for q in weak], "o", mfc="none", color=color,
                ms=4, label=r"$\pi^*$, too few effective samples")
    if label_betas:
        for q in ok[1:]:
            ax.annotate(f"{q['beta']:g}", (q["kl_mean"], q["reward_mean"]), fontsize=6, color=color,
                        xytext=(-4, 5), textcoords="offset points")
    return ax


def plot_reward_kl_frontier(dpo_points: list[dict], bon_points: list[dict] | None = None, sft_reward=None, ax=None,
                            title="reward vs KL (the paper's Fig. 2 axes)", optimum: list[dict] | None = None,
                            xscale: str = "linear"):
    """Mean held-out reward against KL(pi || pi_ref): one point per DPO run (labelled by beta, with
    standard-error bars), the best-of-N curve from the SFT model (KL at its bound log N - (N-1)/N),
    and the optimum pi* every method aims at. ``xscale="symlog"`` (linear below 1 nat, logarithmic
    above, as ``plot_rlhf_frontier``) spreads KLs of 0.1 and 20 nats over the width.

    Args:
        dpo_points: dicts with ``beta``, ``kl_mean``, ``reward_mean`` and optionally ``kl_se``, ``reward_se``.
        bon_points: dicts with ``n``, ``kl_bound``, ``reward_mean``.
        sft_reward: the SFT model's mean reward (drawn at KL = 0).
        optimum: ``helpers.optimum.optimum_frontier`` points (labelled by beta).
    """
    ax = _ax(ax, figsize=(6, 4.2))
    if optimum:
        plot_optimum(optimum, ax)
    if bon_points:
        ax.plot([p["kl_bound"] for p in bon_points], [p["reward_mean"] for p in bon_points], "s--", color="C2",
                label="best-of-N from SFT (KL bound)")
        for p in bon_points:
            ax.annotate(f"N={p['n']}", (p["kl_bound"], p["reward_mean"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
    if dpo_points:
        ax.errorbar([p["kl_mean"] for p in dpo_points], [p["reward_mean"] for p in dpo_points],
                    xerr=[p.get("kl_se", 0.0) for p in dpo_points], yerr=[p.get("reward_se", 0.0) for p in dpo_points],
                    fmt="o", color="C0", label="DPO")
        for p in dpo_points:
            ax.annotate(f"beta={p['beta']:g}", (p["kl_mean"], p["reward_mean"]), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")
    if sft_reward is not None:
        _sft_star(ax, sft_reward, None, optimum)
    if xscale == "symlog":
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel(r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ on held-out prompts (nats"
                  + (", symlog scale)" if xscale == "symlog" else ")"))
    ax.set_ylabel("mean ground-truth reward")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def _token_colour(value: float, vmax: float) -> tuple:
    """Red (negative) - white - green (positive), as an RGBA tuple."""
    cmap = plt.get_cmap("RdYlGn")
    return cmap(0.5 + 0.5 * float(np.clip(value / vmax, -1, 1)) if vmax > 0 else 0.5)


def _show_token(tok: str) -> str:
    return "⏎" if tok == "<|endoftext|>" else tok


def plot_token_heatmap(rows: list[dict], vmax: float | None = None, ax=None, title="token-level implicit rewards",
                       width: float = 11.0):
    """Each response drawn as its tokens on coloured boxes (green: the policy raised the token's
    probability relative to pi_ref, red: lowered). A static picture (renders on GitHub).

    Args:
        rows: ``helpers.implicit.response_token_rewards`` output (prompt, tokens, rewards, total).
        vmax: the reward mapped to full colour (default: the largest |reward| shown).
    """
    if vmax is None:
        vmax = max((abs(v) for r in rows for v in r["rewards"]), default=1.0) or 1.0
    n = len(rows)
    if ax is None:
        _, ax = plt.subplots(figsize=(width, 0.55 * n + 0.9))
    ax.set_xlim(0, 1)
    ax.set_ylim(n, -0.6)
    ax.axis("off")
    renderer = ax.figure.canvas.get_renderer()
    for i, row in enumerate(rows):
        x = 0.0
        text = ax.text(x, i, row["prompt"], fontsize=9, color="0.45", va="center", family="monospace")
        x += text.get_window_extent(renderer).width / ax.get_window_extent(renderer).width + 0.004
        for tok, value in zip(row["tokens"], row["rewards"]):
            t = ax.text(x, i, _show_token(tok), fontsize=9, va="center", family="monospace",
                        bbox=dict(boxstyle="square,pad=0.15", fc=_token_colour(value, vmax), ec="none"))
            x += t.get_window_extent(renderer).width / ax.get_window_extent(renderer).width + 0.003
            if x > 0.9:
                break
        ax.text(0.995, i, f"{row['total']:+.2f}", fontsize=8, va="center", ha="right")
    sm = plt.cm.ScalarMappable(cmap="RdYlGn", norm=plt.Normalize(-vmax, vmax))
    ax.figure.colorbar(sm, ax=ax, orientation="horizontal", fraction=0.04, pad=0.02,
                       label=r"$\beta\log(\pi_\theta/\pi_{\mathrm{ref}})$ per token (right column: sum = $\hat r$)")
    ax.set_title(title)
    return ax


def tokens_html(row: dict, vmax: float) -> str:
    """One response as HTML: the prompt in grey, each token on its implicit-reward colour, with the
    value in a tooltip."""
    import html

    parts = [f'<span style="color:#777">{html.escape(row["prompt"])}</span>']
    for tok, value in zip(row["tokens"], row["rewards"]):
        r, g, b, _ = _token_colour(value, vmax)
        parts.append(f'<span title="{value:+.3f}" style="background:rgb({int(255 * r)},{int(255 * g)},{int(255 * b)});'
                     f'padding:1px 0;white-space:pre">{html.escape(_show_token(tok))}</span>')
    return ('<div style="font-family:monospace;font-size:14px;line-height:1.9">' + "".join(parts)
            + f'  <b>r_hat = {row["total"]:+.2f}</b></div>')


def token_browser(rows: list[dict], labels: list[str] | None = None, vmax: float | None = None):
    """An ipywidgets browser over responses: pick one, see its tokens coloured by implicit reward and
    their per-token values in a compact strip. Works with ipywidgets 7.7 (Colab) and 8.

    Args:
        rows: ``helpers.implicit.response_token_rewards`` output.
        labels: one line per row for the picker (default: the row's prompt and its r_hat).
        vmax: the reward mapped to full colour (default: the largest |reward| over all rows).
    Returns:
        the widget (display it, or make it the last expression of a cell).
    """
    import html

    import ipywidgets as widgets

    if vmax is None:
        vmax = max((abs(v) for r in rows for v in r["rewards"]), default=1.0) or 1.0
    labels = labels or [f"{i}: r_hat {r['total']:+.2f} | {r['prompt']}{r['response']}"[:90] for i, r in enumerate(rows)]
    picker = widgets.Dropdown(options=[(lab, i) for i, lab in enumerate(labels)], value=0, description="example")
    picker.layout.width = "95%"
    view = widgets.HTML()

    def render(i: int) -> None:
        row = rows[i]
        # the per-token values as a compact wrapped strip (token over its value), not one tall table
        # row per token: 20 tokens take two lines instead of ~740 px
        cells = "".join(
            "<div style='display:inline-block;text-align:center;margin:0 3px 6px 0;padding:1px 3px;"
            "border:1px solid #ddd'>"
            f"<div style='white-space:pre'>{html.escape(_show_token(t))}</div>"
            f"<div style='font-size:11px;color:#333'>{v:+.3f}</div></div>"
            for t, v in zip(row["tokens"], row["rewards"]))
        view.value = (tokens_html(row, vmax) + "<div style='font-size:12px;color:#555'>beta log(pi / pi_ref) per "
                      "token:</div><div style='font-family:monospace;font-size:12px;line-height:1.2'>"
                      + cells + "</div>")

    picker.observe(lambda change: render(change["new"]), names="value")
    render(0)
    return widgets.VBox([picker, view])


# ----------------------------------------------------------------------------- notebook 08


def plot_rl_history(history: list[dict], ax=None, title=None):
    """PPO/RLOO training curves: mean score of each rollout batch (left axis) and its KL (right axis, nats)."""
    ax = _ax(ax, (6, 3.2))
    steps = [h["step"] + 1 if "step" in h else i + 1 for i, h in enumerate(history)]
    ax.plot(steps, [h["score"] for h in history], color="C0", label="score of the rollouts")
    ax.set_xlabel("PPO/RLOO iteration (one rollout batch each)")
    ax.set_ylabel("mean score", color="C0")
    ax2 = ax.twinx()
    ax2.plot(steps, [h["kl"] for h in history], color="C3", label=r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$")
    ax2.set_ylabel(r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ (nats)", color="C3")
    if title:
        ax.set_title(title)
    return ax


def plot_clipped_objective(clip_range: float = 0.2, ax=None):
    """PPO's clipped surrogate min(ratio A, clip(ratio) A) against the ratio, for A = +1 and A = -1."""
    ax = _ax(ax, (6, 3.2))
    ratio = np.linspace(0.3, 1.7, 281)
    for adv, color in ((1.0, "C2"), (-1.0, "C3")):
        surrogate = np.minimum(ratio * adv, np.clip(ratio, 1 - clip_range, 1 + clip_range) * adv)
        ax.plot(ratio, surrogate, color=color, label=f"A = {adv:+.0f}")
    for edge in (1 - clip_range, 1 + clip_range):
        ax.axvline(edge, color="gray", ls=":", lw=1)
    ax.set_xlabel(r"ratio $\pi(y_t) / \pi_{\mathrm{old}}(y_t)$")
    ax.set_ylabel("surrogate objective (maximised)")
    ax.set_title(f"flat = zero gradient: the ratio may move at most {clip_range} in A's direction")
    ax.legend()
    return ax


def plot_toy_convergence(histories: dict, ax=None):
    """max_y |pi(y) - pi*(y)| against iteration, one line per algorithm (log scale)."""
    ax = _ax(ax, (6, 3.2))
    for name, hist in histories.items():
        steps, err = zip(*hist)
        ax.plot(np.asarray(steps) + 1, err, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(r"$\max_y |\pi(y) - \pi^*(y)|$")
    ax.set_title(r"tabular PPO and RLOO converge to $\pi^* = \pi_{\mathrm{ref}}\,e^{r/\beta} / Z$")
    ax.legend()
    return ax


def plot_rlhf_frontier(runs: list[dict], bon: list[dict] | None = None, sft: dict | None = None, ax=None,
                  title="reward vs KL on held-out prompts", xscale: str = "symlog", optimum: list[dict] | None = None):
    """The reward-vs-KL frontier (DPO paper, Fig. 2 left): one line per method through its betas,
    error bars = standard errors over prompts; best-of-N at its KL upper bound log N - (N-1)/N; the
    optimum pi* (``helpers.optimum``) when given.
    ``xscale="symlog"`` (linear below 1 nat, logarithmic above) keeps KLs of 0.2 and 60 nats readable."""
    ax = _ax(ax, (7.5, 4.5))
    if optimum:
        plot_optimum(optimum, ax, label_betas=False)
    methods = list(dict.fromkeys(r["method"] for r in runs))
    markers = {"PPO": "o", "PPO-GT": "s", "RLOO": "^", "DPO": "D", "DPO-lr1e-4": "d"}
    for i, method in enumerate(methods):
        rows = sorted((r for r in runs if r["method"] == method), key=lambda r: r["kl_mean"])
        ax.errorbar([r["kl_mean"] for r in rows], [r["reward_mean"] for r in rows],
                    xerr=[r["kl_se"] for r in rows], yerr=[r["reward_se"] for r in rows],
                    marker=markers.get(method, "o"), capsize=3, label=method, color=f"C{i}")
        for r in rows:
            ax.annotate(f"{r['beta']:g}", (r["kl_mean"], r["reward_mean"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7, color=f"C{i}")
    for j, scorer in enumerate(sorted({b["method"] for b in (bon or [])})):
        rows = sorted((b for b in bon if b["method"] == scorer), key=lambda b: b["N"])
        ax.errorbar([b["kl_bound"] for b in rows], [b["reward_mean"] for b in rows],
                    yerr=[b["reward_se"] for b in rows], ls="--", marker=".", capsize=2, color=f"C{len(methods) + j + 1}",
                    label=f"{scorer}, N = {rows[0]['N']}..{rows[-1]['N']} (KL upper bound)")
    if sft is not None:
        _sft_star(ax, sft["reward_mean"], sft.get("reward_se"), optimum)
    if xscale == "symlog":
        ax.set_xscale("symlog", linthresh=1.0)
    else:
        ax.set_xscale(xscale)
    ax.set_xlabel(r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ (nats per response" + (", symlog scale)" if xscale == "symlog" else ")"))
    ax.set_ylabel("ground-truth reward (mean)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the points fill the axes
    return ax


TARGET_STYLE = {"hard": ("C3", "o"), "bt-sampled": ("C1", "^"), "soft": ("C0", "D"), "listwise": ("C4", "v"),
                "distilled": ("C2", "s")}


def plot_target_paths(rows: list[dict], optimum: list[dict], ax=None, others: list[dict] | None = None,
                      sft: dict | None = None, kl_max: float | None = None,
                      title="each target's path along training, against pi*"):
    """Reward against KL along training, one line per target (``scripts/optimum_gap.py``'s rows: the
    mean over seeds at each checkpoint, with SE bars), on the optimum pi*'s frontier.

    Args:
        rows: dicts with ``target``, ``step``, ``kl``, ``kl_se``, ``reward``, ``reward_se``.
        others: extra points drawn grey (e.g. PPO, best-of-N): ``label``, ``kl``, ``reward``, ``reward_se``.
        sft: ``reward_mean`` (and ``reward_se``) of pi_ref, drawn at KL 0.
        kl_max: cut the x axis (points beyond it are left out and counted in the legend).
    """
    ax = _ax(ax, (7.5, 4.5))
    plot_optimum(optimum, ax, label_betas=False)
    for target in dict.fromkeys(r["target"] for r in rows):
        mine = sorted((r for r in rows if r["target"] == target), key=lambda r: r["step"])
        shown = [r for r in mine if kl_max is None or r["kl"] <= kl_max]
        colour, marker = TARGET_STYLE.get(target, ("k", "o"))
        start = [(0.0, reference_point(optimum)["reward_mean"])] if sft is not None else []
        xs = [x for x, _ in start] + [r["kl"] for r in shown]
        ys = [y for _, y in start] + [r["reward"] for r in shown]
        beyond = len(mine) - len(shown)
        ax.plot(xs, ys, "-", color=colour, lw=1, alpha=0.7)
        ax.errorbar([r["kl"] for r in shown], [r["reward"] for r in shown], xerr=[r["kl_se"] for r in shown],
                    yerr=[r["reward_se"] for r in shown], fmt=marker, color=colour, ms=4, capsize=2,
                    label=target + (f" ({beyond} later points past {kl_max:g} nats)" if beyond else ""))
    for p in others or []:
        ax.errorbar([p["kl"]], [p["reward"]], yerr=[p.get("reward_se", 0.0)], fmt=p.get("marker", "x"), color="0.45",
                    ms=6, capsize=2)
        ax.annotate(p["label"], (p["kl"], p["reward"]), fontsize=7, color="0.35", xytext=(4, -10),
                    textcoords="offset points")
    if sft is not None:
        _sft_star(ax, sft["reward_mean"], sft.get("reward_se"), optimum)
    if kl_max is not None:
        ax.set_xlim(-0.1, kl_max)
    ax.set_xlabel(r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ on held-out prompts (nats)")
    ax.set_ylabel("mean ground-truth reward")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the paths fill the axes
    return ax


def plot_pipelines(notes: dict | None = None, ax=None):
    """The course's map: RLHF and DPO side by side, step by step (the seed of the whole series).

    RLHF = SFT -> sample pairs -> preference labels -> train a reward model -> RL (PPO) with a KL
    penalty; DPO = SFT -> sample pairs -> preference labels -> one classification-style loss.

    Args:
        notes: optional text under a step, keyed by step name ("reward model", "PPO", "DPO", ...),
            e.g. measured costs.
    """
    notes = notes or {}
    ax = _ax(ax, figsize=(12, 3.2 if notes else 2.8))
    shared = [("SFT", "$\\pi_{\\mathrm{ref}} = \\pi_{\\mathrm{SFT}}$\n(notebook 05)"),
              ("sample pairs", "k responses per prompt\nfrom $\\pi_{\\mathrm{SFT}}$"),
              ("preference labels", "$y_w \\succ y_l$\n(Bradley-Terry, 01)")]
    rlhf = [("reward model", "fit $r_\\phi$ to the labels\n(01, 08)"),
            ("PPO", "sample from $\\pi_\\theta$ in the loop\nmax $\\mathbb{E}[r_\\phi] - \\beta\\,\\mathrm{KL}$ (08)")]
    dpo = [("DPO", "one classification loss\non the pairs, $-\\log\\sigma(\\beta h)$ (03, 06)")]
    w, h, gap = 2.6, 1.0, 0.45

    def box(x, y, title, sub, color):
        ax.add_patch(matplotlib.patches.FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color,
                                                       ec="0.3", lw=1))
        ax.text(x + w / 2, y + h * 0.68, title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + w / 2, y + h * 0.3, sub, ha="center", va="center", fontsize=7)
        if title in notes:
            ax.text(x + w / 2, y - 0.12, notes[title], ha="center", va="top", fontsize=7, color="C3")

    def arrow(x0, y0, x1, y1):
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="0.3", lw=1.2))

    y_mid, y_top, y_bot = 1.25, 2.55, 0.0
    for i, (title, sub) in enumerate(shared):
        x = i * (w + gap)
        box(x, y_mid, title, sub, "0.92")
        if i:
            arrow(x - gap, y_mid + h / 2, x, y_mid + h / 2)
    x_split = len(shared) * (w + gap)
    for j, (title, sub) in enumerate(rlhf):
        x = x_split + j * (w + gap)
        box(x, y_top, title, sub, "#f6d8c8")
        arrow(x - gap if j else x_split - gap, (y_top + h / 2) if j else (y_mid + h / 2), x, y_top + h / 2)
    box(x_split, y_bot, *dpo[0], "#cfe3f5")
    arrow(x_split - gap, y_mid + h / 2, x_split, y_bot + h / 2)
    ax.text(x_split + 2 * (w + gap) - gap / 2, y_top + h / 2, "RLHF", fontsize=12, weight="bold", color="#b0562b",
            va="center")
    ax.text(x_split + w + gap / 2, y_bot + h / 2, "DPO", fontsize=12, weight="bold", color="#2b6cb0", va="center")
    ax.set_xlim(-0.2, x_split + 2 * (w + gap) + 0.6)
    ax.set_ylim(-0.9 if notes else -0.2, y_top + h + 0.2)  # room under the boxes only for notes
    ax.axis("off")
    ax.set_title("Two roads from preferences to a policy: RLHF needs a reward model and RL; DPO needs one loss",
                 fontsize=10)
    return ax
