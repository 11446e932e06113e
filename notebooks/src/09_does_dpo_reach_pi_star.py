# ---
# jupyter:
#   jupytext:
#     formats: ipynb,src//py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dpo-course/dpo-from-scratch/blob/main/notebooks/09_does_dpo_reach_pi_star.ipynb)
#
# # 09 · Does DPO reach $\pi^*$?
#
# The paper's central claim (notebooks 02-03): the DPO loss is minimised by the KL-optimal policy
#
# $$\pi^*_\beta(y\mid x)=\frac{\pi_{\mathrm{ref}}(y\mid x)\,e^{r(x,y)/\beta}}{Z(x)}.$$
#
# Notebooks 06-08 measured every trained method against that very policy, on held-out prompts, and
# found all of them -- DPO included -- far below it at equal KL. This notebook asks why, and takes
# the gap apart one change at a time:
#
# 1. **the labels decide the target.** The claim holds when the labels come from a Bradley-Terry
#    annotator. Our pairs carry *certain* labels (chosen = the higher reward), for which DPO's loss has
#    no finite minimiser at all (notebook 03 showed it on the toy);
# 2. **the same samples, five targets**: certain labels, labels drawn from a Bradley-Terry annotator,
#    their expected value (a *soft* label), a listwise softmax over each prompt's samples, and $\pi^*$
#    itself distilled -- each trained along a path, over three training seeds;
# 3. **the yardstick**: how good the $\pi^*$ estimate is, how the KL is measured, whether the implicit
#    rewards are calibrated, and what the model class can reach at all.
#
# A live run first (a few minutes on a laptop), then the measured decomposition (`scripts/optimum_gap.py`,
# saved in `data/optimum_gap.json`).

# %%
# NBVAL_IGNORE_OUTPUT
# Setup (the same cell in every notebook). In Colab: fetch the course once and install only what
# Colab lacks. Locally: find the repository root. Either way, make `import helpers` work.
import importlib.util
import os
import subprocess
import sys

REPO_URL = os.environ.get("DPO_COURSE_REPO", "https://github.com/dpo-course/dpo-from-scratch")
if "google.colab" in sys.modules:
    root = os.environ.get("DPO_COURSE_DIR", "/content/dpo-from-scratch")
    if not os.path.isdir(os.path.join(root, "helpers")):
        subprocess.run(["git", "clone", "--depth", "1", "--quiet", REPO_URL, root], check=True)
    needed = {"vaderSentiment": "vaderSentiment"}  # what Colab lacks to run the notebooks
    missing = [pkg for pkg, mod in needed.items() if importlib.util.find_spec(mod) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
else:
    root = os.getcwd()
    while not os.path.isdir(os.path.join(root, "helpers")) and os.path.dirname(root) != root:
        root = os.path.dirname(root)
if root not in sys.path:
    sys.path.insert(0, root)
import helpers

print("helpers", helpers.__version__, "from", os.path.relpath(root))  # relative: no machine's paths

# %%
# NBVAL_IGNORE_OUTPUT
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from helpers import checks, viz
from helpers.config import DATA_DIR
from helpers.evaluate import evaluate_policy
from helpers.optimum import format_fraction
from helpers.pairs import annotate_pairs, get_preference_pairs
from helpers.profiles import dpo_sizes
from helpers.runs import load_or_train_dpo, make_dpo_config, optimum_curve, split_pairs
from helpers.world import (
    get_prompts,
    get_reward_fn,
    load_sft_model,
    load_tokenizer,
    load_world_results,
    saved_results_world,
    start_notebook,
)

world, device = start_notebook(seed=0)  # quiet transformers, seed, profile (DPO_PROFILE), device, threads
SIZES = dpo_sizes(world.profile)
print(f"profile {world.profile} on {device}")

# %% [markdown]
# ## 1 · The labels decide the target
#
# Take one pair $(y_1, y_2)$ with rewards $r_1, r_2$ and write $h$ for the difference of its two
# log-ratios, $h=\log\frac{\pi_\theta(y_1)}{\pi_{\mathrm{ref}}(y_1)}-\log\frac{\pi_\theta(y_2)}{\pi_{\mathrm{ref}}(y_2)}$.
# If an annotator says "$y_1$" with probability $p$, the DPO loss *expected over its labels* is
#
# $$\mathbb{E}_{\text{label}}\big[\mathcal L\big]=-p\,\log\sigma(\beta h)-(1-p)\,\log\sigma(-\beta h),$$
#
# a cross-entropy between $p$ and $\sigma(\beta h)$: the **soft-label DPO loss**
# (`helpers.losses.soft_dpo_loss`). Where is its minimum, and what does that make the policy?

# %% [markdown]
# ### Exercise 1 · the margin DPO aims at
#
# A Bradley-Terry annotator of temperature $\tau$ prefers $y_1$ with probability
# $p=\sigma\big((r_1-r_2)/\tau\big)$; $\tau\to 0$ is the certain label of our pairs (the better
# response always wins). Derive the $h$ that minimises the expected loss above and write
# `optimal_margin(reward_gap, beta, tau)` for it. What should $\tau=0$ give?

# %%
def optimal_margin(reward_gap: float, beta: float, tau: float) -> float:
    # YOUR CODE HERE: one number; float("inf") is a number too
    raise NotImplementedError


checks.check_optimal_margin(optimal_margin)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def optimal_margin(reward_gap: float, beta: float, tau: float) -> float:
    if tau == 0:
        return math.inf
    return reward_gap / (tau * beta)


print(checks.check_optimal_margin(optimal_margin))

# %% [markdown]
# <details><summary>Why (open after the exercise)</summary>
#
# The derivative of the expected loss in $h$ is $\beta\,(\sigma(\beta h)-p)$: zero where
# $\sigma(\beta h)=p$, i.e. $\beta h=\operatorname{logit}p=(r_1-r_2)/\tau$. A policy whose log-ratios
# are $r/(\tau\beta)$ plus any per-prompt constant has exactly these margins for every pair:
# $\pi_\theta=\pi_{\mathrm{ref}}\,e^{r/(\tau\beta)}/Z=\pi^*_{\tau\beta}$. With $\tau=1$ that is $\pi^*_\beta$, the
# policy of the paper. With certain labels $p=1$, the derivative $\beta(\sigma(\beta h)-1)$ is negative
# for every finite $h$: the loss keeps falling as the margins grow, and $\beta$ no longer holds the
# policy anywhere.
# </details>
#
# So the same pairs can be trained three ways: with their **certain** labels (the course so far), with
# **labels drawn** from a Bradley-Terry annotator (`helpers.pairs.annotate_pairs(mode="sampled")`: one coin
# flip per pair, as one human label gives), or with the annotator's **expected** label as a soft target
# (`mode="expected"`, `DPOConfig(loss_type="soft")`).

# %% [markdown]
# ## 2 · Live: notebook 06's run, and the same pairs with soft labels
#
# Notebook 06's DPO run -- its pairs, its settings -- trained on certain labels, and the same run with
# only the target changed to $p=\sigma(r_w-r_l)$ ($\tau=1$, so the soft loss aims at $\pi^*_\beta$ for
# 06's $\beta$). Then both again, pushed harder: three times the learning rate, the same steps. With
# a finite target, pushing harder should move the soft run towards $\pi^*_\beta$ rather than away
# without end; with certain labels nothing says where to stop. All four runs are cached: a second
# run of this notebook loads them.

# %%
# NBVAL_IGNORE_OUTPUT
tokenizer = load_tokenizer(world)
sft = load_sft_model(world, device=device)
reward_fn = get_reward_fn(world, device=device)
train_pairs, _ = split_pairs(get_preference_pairs(world, progress=False), held_out_fraction=0.1, seed=0)
soft_pairs, annotated = annotate_pairs(train_pairs, tau=1.0, mode="expected")
print(f"{len(train_pairs)} training pairs (notebook 06's); the annotator's mean probability for 'chosen': "
      f"{annotated['mean_chosen_prob']:.3f} (a certain label says 1)")
base = make_dpo_config(world)
configs = {}
for lr in (base.lr, round(3 * base.lr, 12)):  # 06's learning rate, and three times it
    configs[f"certain labels, lr {lr:g}"] = make_dpo_config(world, lr=lr)
    configs[f"soft labels, lr {lr:g}"] = make_dpo_config(world, lr=lr, loss_type="soft")
t0 = time.perf_counter()
policies = {}
for name, config in configs.items():
    policies[name], _ = load_or_train_dpo(world, config, soft_pairs if config.loss_type == "soft" else train_pairs,
                                          tokenizer=tokenizer, ref_model=sft, device=device, progress=False)
print(f"{len(configs)} runs of {base.max_steps} steps x {base.batch_size} pairs, beta {base.beta:g}, trained or loaded "
      f"in {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# Every policy and $\pi_{\mathrm{ref}}$ answer the same held-out prompts with the same sampling seed
# (common random numbers); $\pi^*$ is estimated on those prompts as in notebook 06.

# %%
# NBVAL_IGNORE_OUTPUT
final_prompts = get_prompts(world, world.eval_split, n=SIZES["n_final_prompts"], seed=1, tokenizer=tokenizer)
live = {name: evaluate_policy(model, sft, tokenizer, final_prompts, reward_fn, SIZES["samples_per_prompt"],
                              world.max_new_tokens, seed=0, progress=False)
        for name, model in [("SFT", sft), *policies.items()]}
live_optimum = optimum_curve(sft, tokenizer, final_prompts, reward_fn, m=SIZES["optimum_samples"],
                             max_new_tokens=world.max_new_tokens, progress=False)
print(f"{len(final_prompts)} held-out prompts x {SIZES['samples_per_prompt']} samples; pi* from "
      f"{SIZES['optimum_samples']} SFT samples per prompt")
print(f"{'':>26} {'reward':>16} {'KL (nats)':>15} {'length':>7} {'EOS':>5} {'of pi*':>7}")
for name, r in live.items():
    frac = format_fraction(live_optimum, r["kl_mean"], r["reward_mean"]) if name != "SFT" else "-"
    print(f"{name:>26} {r['reward_mean']:+8.3f} ± {r['reward_se']:.3f} {r['kl_mean']:7.2f} ± {r['kl_se']:5.2f} "
          f"{r['length_mean']:7.1f} {r['eos_rate']:5.2f} {frac:>7}")
print("'of pi*': the fraction of pi*'s reward gain at the same KL; '<=': past the estimate's reach, an upper bound")

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.3))
viz.plot_optimum(live_optimum, ax, label_betas=False)
for name, r in list(live.items())[1:]:
    colour = "C3" if name.startswith("certain") else "C0"
    marker = "o" if name.endswith(f"lr {base.lr:g}") else "D"
    ax.errorbar([r["kl_mean"]], [r["reward_mean"]], xerr=[r["kl_se"]], yerr=[r["reward_se"]], fmt=marker,
                color=colour, capsize=3, label=name)
ax.plot([0], [live["SFT"]["reward_mean"]], "k*", ms=10, label="SFT (pi_ref)")
ax.set_xscale("symlog", linthresh=1.0)
ax.set_xlabel(r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ (nats, symlog scale)")
ax.set_ylabel("mean ground-truth reward")
ax.set_title("the same pairs and settings: only the target differs")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
hard_fast, soft_fast = (live[f"{kind} labels, lr {round(3 * base.lr, 12):g}"] for kind in ("certain", "soft"))
hard_slow, soft_slow = (live[f"{kind} labels, lr {base.lr:g}"] for kind in ("certain", "soft"))
target_kl = next((q["kl_mean"] for q in live_optimum if q["beta"] == base.beta), float("nan"))
display(Markdown(
    f"Pushed harder, the certain-label run went from {hard_slow['kl_mean']:.1f} to **{hard_fast['kl_mean']:.1f} nats** "
    f"(length {hard_slow['length_mean']:.1f} → {hard_fast['length_mean']:.1f} tokens, EOS rate "
    f"{hard_fast['eos_rate']:.2f}); the soft-label run from {soft_slow['kl_mean']:.1f} to "
    f"**{soft_fast['kl_mean']:.1f} nats** (length {soft_fast['length_mean']:.1f}); $\\pi^*_\\beta$ itself sits at "
    f"{target_kl:.1f} nats here. At 06's own setting the two "
    f"reach {format_fraction(live_optimum, hard_slow['kl_mean'], hard_slow['reward_mean'])} and "
    f"{format_fraction(live_optimum, soft_slow['kl_mean'], soft_slow['reward_mean'])} of $\\pi^*$'s gain -- one seed "
    f"each, {len(final_prompts)} prompts: a first look, not the measurement. The measurement is below: five targets from the "
    f"same samples, paths along training, three training seeds each."))

# %% [markdown]
# ## 3 · The yardstick: $\pi^*$ from samples
#
# Every fraction in this course is measured against $\pi^*$ estimated by self-normalised importance
# sampling from $M$ samples $y_1..y_M\sim\pi_{\mathrm{ref}}$ of each prompt (`helpers.optimum`, notebook 06):
#
# $$w_i=\frac{e^{r_i/\beta}}{\sum_j e^{r_j/\beta}},\qquad \mathbb E_{\pi^*}[r]\approx\sum_i w_i r_i,\qquad
# \mathrm{KL}(\pi^*\|\pi_{\mathrm{ref}})=\frac{\mathbb E_{\pi^*}[r]}{\beta}-\log Z,\qquad Z\approx\frac1M\sum_i e^{r_i/\beta},$$
#
# with the effective sample size $\mathrm{ESS}=1/\sum_i w_i^2$ saying how many samples carry the estimate.

# %% [markdown]
# ### Exercise 2 · the estimate itself
#
# Write `snis_optimum(rewards, beta)` for a `(P, M)` tensor of rewards (P prompts, M samples each):
# return `(reward, kl, ess)`, each of shape `(P,)`. Think about which normaliser belongs where: the
# weights, $Z$ and the ESS each need a different one. Then, before reading on: is the estimated curve
# above or below the true optimum, and why?

# %%
def snis_optimum(rewards: torch.Tensor, beta: float):
    # YOUR CODE HERE: (P, M) -> three (P,) tensors
    raise NotImplementedError


checks.check_snis_optimum(snis_optimum)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def snis_optimum(rewards: torch.Tensor, beta: float):
    logits = rewards / beta
    w = torch.softmax(logits, dim=-1)  # (P, M): normalised over each prompt's samples
    reward = (w * rewards).sum(-1)
    log_z = torch.logsumexp(logits, dim=-1) - math.log(rewards.shape[-1])  # log of the *mean*
    return reward, reward / beta - log_z, 1.0 / (w ** 2).sum(-1)


print(checks.check_snis_optimum(snis_optimum))

# %% [markdown]
# <details><summary>Above or below? (open after the exercise)</summary>
#
# Below. The estimate is the reward and KL of a policy we could actually run: *draw M samples from
# $\pi_{\mathrm{ref}}$ and return sample $i$ with probability $w_i$*. That policy cannot beat the true
# $\pi^*_\beta$ at its own KL, so the estimated curve lies under the true optimum, and every "fraction of
# $\pi^*$" measured against it is an **upper bound** of the true fraction. More samples lift the curve
# (section 5 measures by how much); its KL can never pass $\log M$.
# </details>

# %% [markdown]
# ## 4 · The gap taken apart: five targets from the same samples
#
# `scripts/optimum_gap.py` drew $k=8$ SFT samples for each of 1,000 training prompts, scored them by the
# ground truth, and trained one policy per target and training seed from exactly those samples:
#
# | target | what the policy is fitted to | its population optimum |
# |---|---|---|
# | `hard` | every untied pair, chosen = higher reward (our pairs) | none: margins grow for ever |
# | `bt-sampled` | every pair, its label drawn once from $\sigma(r_i-r_j)$ | $\pi^*_\beta$ |
# | `soft` | every pair, $p=\sigma(r_i-r_j)$ (`soft_dpo_loss`) | $\pi^*_\beta$ |
# | `listwise` | the prompt's 8 implicit rewards as one softmax, fitted to $\mathrm{softmax}(r)$ (`listwise_dpo_loss`) | $\pi^*_\beta$ |
# | `distilled` | NLL of the 8 samples weighted by $\mathrm{softmax}(r/\beta)$ (`distillation_loss`): $\pi^*$'s own weights | $\pi^*_\beta$ |
#
# With $k=2$ the listwise loss *is* the soft loss (tested), and distillation needs no pairs and no
# reference in its loss: it is the yardstick of what this model reaches from these samples. Each run
# was evaluated along training on the frontier's 100 held-out prompts x 16 samples, every run with the
# same sampling seed.

# %%
# NBVAL_IGNORE_OUTPUT
gap = load_world_results(DATA_DIR / "optimum_gap.json", saved_results_world(), "python scripts/optimum_gap.py --jobs 2")
frontier = load_world_results(DATA_DIR / "frontier.json", saved_results_world(),
                              "python scripts/run_frontier.py --jobs 2")
G = gap["meta"]["settings"]
print(f"measured {gap['meta']['date']} on the tiny world (fingerprint {gap['world_fingerprint']}), "
      f"{gap['meta']['total_s'] / 60:.0f} min at {gap['meta']['jobs']} runs at a time")
print(f"{G['n_train_prompts']} training prompts x k = {G['k']}; beta {G['beta']:g}, tau {G['tau']:g}, lr {G['lr']:g}, "
      f"{G['prompts_per_step']} prompts per update, {G['max_steps']} updates, seeds {list(G['seeds'])}; evaluated on "
      f"{G['n_eval_prompts']} prompts x {G['eval_samples']} samples at steps {list(G['eval_steps'])}")

# %% [markdown]
# First the evaluation itself: $\pi_{\mathrm{ref}}$'s reward measured with 16 samples per prompt against
# $\pi^*$'s KL-0 point (the mean of 256 SFT samples per prompt), on the same prompts:

# %%
# NBVAL_CHECK_OUTPUT
sft_eval, base = gap["sft"], gap["optimum"][0]
print(f"SFT, {G['eval_samples']} samples/prompt: {sft_eval['reward_mean']:+.3f} ± {sft_eval['reward_se']:.3f};  "
      f"pi*'s KL-0 point, {G['optimum_samples']} samples/prompt: {base['reward_mean']:+.3f} ± {base['reward_se']:.3f}")
print("agree within one SE:", abs(sft_eval["reward_mean"] - base["reward_mean"]) < sft_eval["reward_se"])

# %% [markdown]
# Now every target's path on the reward-KL plane, the optimum above it, and -- for scale -- PPO on the
# true reward and best-of-N from notebook 08's sweep (same 100 prompts, 4 samples each):

# %%
rows = gap["rows"]
others = [{"label": f"PPO-GT beta {r['beta']:g}", "kl": r["kl_mean"], "reward": r["reward_mean"],
           "reward_se": r["reward_se"], "marker": "x"} for r in frontier["runs"] if r["method"] == "PPO-GT"]
others += [{"label": f"BoN {b['N']}", "kl": b["kl_bound"], "reward": b["reward_mean"], "reward_se": b["reward_se"],
            "marker": "+"} for b in frontier["bon"] if b["method"] == "BoN (ground truth)" and b["N"] > 1]
fig, ax = plt.subplots(figsize=(8.5, 4.8))
viz.plot_target_paths(rows, gap["optimum"], ax=ax, others=[o for o in others if o["kl"] <= 6], sft=sft_eval, kl_max=6)
plt.show()

# %% [markdown]
# The decomposition, read off those paths: for each target the checkpoint with the largest fraction of
# $\pi^*$'s reward gain at **at most 3 nats**, the mean over training seeds. The SE holds both the
# spread over seeds and the evaluation prompts' noise (a paired bootstrap: the policy's and $\pi^*$'s
# per-prompt values resampled together). "≤" marks a point past the estimate's reach (an upper bound).

# %%
# NBVAL_CHECK_OUTPUT
def fmt(r):
    return f"{'' if r['fraction_exact'] else '<='}{r['fraction']:.2f} ± {r['fraction_se']:.2f}"


print(f"{'target':>11} {'step':>4} {'seeds':>5} {'reward':>15} {'KL (nats)':>13} {'of pi*':>12} {'length':>6} "
      f"{'pi* length':>10} {'EOS':>5}")
best = {r["target"]: r for r in rows if r.get("headline")}
for target, r in best.items():
    print(f"{target:>11} {r['step']:4d} {r['seeds']:5d} {r['reward']:+.3f} ± {r['reward_se']:.3f} {r['kl']:6.2f} ± "
          f"{r['kl_se']:.2f} {fmt(r):>12} {r['length']:6.1f} {r['optimum_length']:10.1f} {r['eos_rate']:5.2f}")

# %%
# NBVAL_IGNORE_OUTPUT
consistent = [t for t in ("bt-sampled", "soft", "listwise") if t in best]
top = max(consistent, key=lambda t: best[t]["fraction"])
d, h = best["distilled"], best["hard"]
lead = best[top]["fraction"] - h["fraction"]
lead_se = math.hypot(best[top]["fraction_se"], h["fraction_se"])
display(Markdown(
    f"With certain labels DPO's best point within 3 nats reaches **{fmt(h)}** of $\\pi^*$'s gain; the best "
    f"consistent target, `{top}`, reaches **{fmt(best[top])}** ({lead / lead_se:.1f} SE apart), and $\\pi^*$ "
    f"distilled from the same samples **{fmt(d)}**: against that yardstick the best DPO-family target reaches "
    f"{best[top]['fraction'] / d['fraction']:.2f} of what distillation gets from the same samples."))

# %% [markdown]
# Along the whole path, not only at the best point: every checkpoint, the mean over seeds. The last
# column is the implicit rewards' **calibration**: at $\pi^*_\beta$, $\beta\log\frac{\pi}{\pi_{\mathrm{ref}}}=r-\beta\log Z(x)$,
# so within a prompt the implicit reward *is* the true reward, slope 1; the slope fitted within prompts
# on held-out SFT samples says whether a policy has moved less (< 1) or more (> 1) than its target
# asks (certain labels have no such target). Certain and sampled labels pass 3 nats so early that the
# same runs were also evaluated at steps 5-20.

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'target':>11} {'step':>4} {'KL (nats)':>13} {'reward':>15} {'of pi*':>12} {'length':>6} {'EOS':>5} {'slope':>5}")
for target in best:
    for r in sorted((r for r in rows if r["target"] == target), key=lambda r: r["step"]):
        print(f"{target:>11} {r['step']:4d} {r['kl']:6.2f} ± {r['kl_se']:4.2f} {r['reward']:+.3f} ± {r['reward_se']:.3f} "
              f"{fmt(r):>12} {r['length']:6.1f} {r['eos_rate']:5.2f} {r['calibration_slope']:5.2f}"
              + ("  <- best within 3 nats" if r.get("headline") else ""))

# %% [markdown]
# ## 5 · Is the yardstick right?
#
# **More samples for $\pi^*$.** The same estimate from $M$ = 256, 1,024 and 4,096 SFT samples per prompt,
# on a subset of the prompts (nested samples: the larger $M$ contains the smaller). At one $\beta$ a
# larger $M$ finds a sharper $\pi^*$ (more reward *and* more KL), so compare the curves at equal KL,
# where more samples can only help, in expectation. The fractions above are measured against the
# $M$ = 256 curve; if it were far below the others, they would all be too high.

# %%
# NBVAL_CHECK_OUTPUT
sens = gap["optimum_m_sensitivity"]
ms = G["m_sensitivity"]["ms"]
print(f"pi* on {G['m_sensitivity']['n_prompts']} prompts, by beta:  " + "  ".join(f"{'M = ' + str(m):>22}" for m in ms))
for beta in G["m_sensitivity"]["betas"]:
    cells = [next(q for q in sens if q["m"] == m and q["beta"] == beta) for m in ms]
    print(f"beta {beta:5g}:                  " + "  ".join(
        f"{q['reward']:+.3f} at {q['kl']:4.2f} nats" + ("" if q["reliable"] else "*") for q in cells))
print("* median ESS below the reliability threshold")
ref_pts = sorted((q for q in sens if q["m"] == ms[0]), key=lambda q: q["kl"])
print(f"\nat equal KL (each curve read at the KLs of the M = {ms[0]} points):")
for q in ref_pts:
    row = []
    for m in ms:
        pts = sorted((p for p in sens if p["m"] == m), key=lambda p: p["kl"])
        kls, rws = [p["kl"] for p in pts], [p["reward"] for p in pts]
        inside = kls[0] <= q["kl"] <= kls[-1]  # read between this curve's own points only
        row.append(f"{float(np.interp(q['kl'], kls, rws)):+.3f}" if inside else "     -")
    print(f"  KL {q['kl']:4.2f} nats: " + "   ".join(f"M = {m}: {v}" for m, v in zip(ms, row)))

# %% [markdown]
# **Two KL estimators.** The sequence log-ratio $\log\pi(y)-\log\pi_{\mathrm{ref}}(y)$ averaged over samples
# is unbiased but noisy; the exact per-token sum $\sum_t \mathrm{KL}(\pi(\cdot\mid s_t)\,\|\,\pi_{\mathrm{ref}}(\cdot\mid s_t))$
# along the same samples (`helpers.evaluate.token_kl`) has the same mean with far less noise. If the
# fractions leaned on a noisy KL, the two columns would disagree:

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'target':>11} {'step':>4} {'sequence KL':>12} {'per-token KL':>13}")
for target, r in best.items():
    print(f"{target:>11} {r['step']:4d} {r['kl']:12.2f} {r['kl_token']:13.2f}")

# %% [markdown]
# **The model class.** Is $\pi^*$ out of reach of this 1 M-parameter model, or is it generalising to new
# prompts that costs? Fitted on the evaluation prompts' *own* samples (8 per prompt) and evaluated on
# those same prompts, against the runs trained on the 1,000 other prompts, evaluated on the same subset:

# %%
# NBVAL_CHECK_OUTPUT
am = gap["amortisation"]
print(f"{G['amortisation']['n_prompts']} evaluation prompts: {'fitted on them':>28} {'trained on other prompts':>30}")
for r in am:
    same, other = r["fit_on_eval_prompts"], r["trained_on_other_prompts"]
    print(f"{r['target']:>9} step {r['step']:3d}: {same['kl']:5.2f} nats {fmt(same):>14}        "
          + (f"{other['kl']:5.2f} nats {fmt(other):>14}" if other else "-"))

# %% [markdown]
# ## 6 · What it means
#
# Read off the measurements above (rendered from them):

# %%
# NBVAL_IGNORE_OUTPUT
def last(target):
    return max((r for r in rows if r["target"] == target), key=lambda r: r["step"])


pstar_kl = next(q["kl_mean"] for q in gap["optimum"] if q["beta"] == G["beta"])
soft_last, hard_last, bt = last("soft"), last("hard"), best["bt-sampled"]
fit_here = [r for r in am if r["target"] == "distilled"]
am_last = max(fit_here, key=lambda r: r["step"]) if fit_here else None
m_lo, m_hi = min(G["m_sensitivity"]["ms"]), max(G["m_sensitivity"]["ms"])


def curve(m):  # (KL, reward) of one M's points, by KL
    pts = sorted((q for q in sens if q["m"] == m), key=lambda q: q["kl"])
    return [q["kl"] for q in pts], [q["reward"] for q in pts]


lo_kl, lo_r = curve(m_lo)
hi_kl, hi_r = curve(m_hi)
# at equal KL: the larger M's curve read at each KL of the smaller M's, between its own points only
rise = max(abs(float(np.interp(k, hi_kl, hi_r)) - r) for k, r in zip(lo_kl, lo_r) if hi_kl[0] <= k <= hi_kl[-1])
kl_gap = max(abs(r["kl"] - r["kl_token"]) for r in best.values())
soft_prev = max((r for r in rows if r["target"] == "soft" and r["step"] < soft_last["step"]), key=lambda r: r["step"])
lines = [
    f"* **Certain labels have no target.** The `hard` path passes 3 nats by update "
    f"{min(r['step'] for r in rows if r['target'] == 'hard' and r['kl'] > 3)} and "
    f"ends at {hard_last['kl']:.0f} nats after {hard_last['step']} (length {hard_last['length']:.1f} tokens against "
    f"pi*'s {hard_last['optimum_length']:.1f}, EOS rate {hard_last['eos_rate']:.2f}); its best point within 3 nats "
    f"reaches {fmt(h)} of pi*'s gain.",
    (f"* **A consistent target helps{', most in its expected form' if bt['fraction'] < best['soft']['fraction'] else ''}.** "
     if lead > 2 * lead_se else "* **No measurable difference from a consistent target.** ")
    + f"The soft label reaches {fmt(best['soft'])} (step {best['soft']['step']}), the listwise softmax "
      f"{fmt(best['listwise'])}; one sampled label per pair {fmt(bt)}: the same population optimum, but every coin "
      f"flip that goes against the reward is a label the model fits, spending KL without reward.",
    f"* **A finite target is not a finite KL on finite data.** pi*_beta itself sits at {pstar_kl:.2f} nats; the soft path "
    f"is at {soft_prev['kl']:.2f} nats after {soft_prev['step']} updates and {soft_last['kl']:.2f} after "
    f"{soft_last['step']}. {G['k']} samples per prompt pin only the *differences* of those samples' log-ratios; the rest "
    f"of the distribution is free, and the implicit rewards' calibration slope is {soft_last['calibration_slope']:.2f} "
    f"there, against the 1 of pi*: much of the KL is spent off the reward direction.",
    f"* **The yardstick stands.** On the prompt subset, pi* from {m_hi} instead of {m_lo} samples per prompt moves "
    f"its reward by at most {rise:.3f} at the same KL (up to the {lo_kl[-1]:.1f} nats the smaller M reaches; the reward's "
    f"own SE there is {max(q['reward_se'] for q in sens):.2f}): within noise, so M = {m_lo} is as good a yardstick as "
    f"{m_hi} would be. The two KL estimators agree within {kl_gap:.2f} nats at every best point.",
]
if am_last is not None:
    same, other = am_last["fit_on_eval_prompts"], am_last["trained_on_other_prompts"]
    if same["fraction"] < other["fraction"]:
        lines.append(
            f"* **Not the model's capacity: the samples behind the target.** Distilled on the evaluation prompts' *own* "
            f"{G['k']} samples each, the policy reaches only {fmt(same)} at {same['kl']:.1f} nats on those prompts after "
            f"{am_last['step']} updates, against {fmt(other)} at {other['kl']:.2f} nats when trained on "
            f"{G['n_train_prompts']:,} other prompts. {G['k']} samples define a target far sharper than pi* (all its "
            f"mass on those {G['k']}), and a model that can fit it does, spending KL; trained across many prompts the "
            f"same model learns something smoother and closer to pi*. More samples per prompt is the next thing to "
            f"measure (a larger model was not tried).")
    else:
        lines.append(f"* **The model class reaches further than generalisation does.** Distilled on the evaluation "
                     f"prompts' own samples it reaches {fmt(same)} at {same['kl']:.2f} nats on them; trained on other "
                     f"prompts, {fmt(other)} at {other['kl']:.2f} nats on the same prompts.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# **Real pipelines.** Human labels are noisy: a preference between two similar answers is close to a
# coin flip, which is the Bradley-Terry assumption -- DPO on such labels aims at $\pi^*$, but each
# label is one flip (`bt-sampled`). Labels made by ranking with a reward model, or by always taking
# the higher score as our pairs do, are *certain*: they say "better" and never "by how much", and DPO
# has no finite target on them. If you have the scores, use them: a soft label $\sigma(\Delta r/\tau)$ or
# a listwise target puts DPO's optimum back at $\pi^*$ and removes the coin flips; cDPO's constant label
# smoothing is the crude version of the same idea. And measure the KL: on finite data even a consistent
# target keeps moving once it has fitted its samples.
#
# **Try it:** in section 2, train with `annotate_pairs(train_pairs, tau=0.5)` (a sharper annotator:
# $\pi^*_{0.5\beta}$) or with `mode="sampled"`, and see where the point moves.
