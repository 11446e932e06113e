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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dpo-course/dpo-from-scratch/blob/main/notebooks/08_rlhf_vs_dpo.ipynb)
#
# # 08 · The RLHF pipeline DPO replaces: reward model + PPO, RLOO, DPO and best-of-N on one task
#
# The DPO paper sells DPO by contrast with RLHF: *fit a reward model, then run PPO against it with
# a KL penalty* -- "complex and often unstable", with several models in memory and samples drawn
# from the policy inside the training loop. Its Figure 2 claims more: on IMDb sentiment, DPO's
# reward-vs-KL frontier beats PPO's, even PPO given the true reward.
#
# This notebook builds that RLHF pipeline from scratch (`helpers/rlhf.py`, no RL library), runs it
# on the same tiny sentiment world as notebooks 04-07, and compares, on the same held-out prompts
# with the same evaluation function:
#
# | method | learns from | needs at training time |
# |---|---|---|
# | **PPO** | a Bradley-Terry reward model fit to the preference pairs | policy + value head, pi_ref, reward model, fresh samples |
# | **PPO-GT** | the ground-truth reward (VADER) directly | policy + value head, pi_ref, fresh samples |
# | **RLOO** | the reward model, k samples per prompt, no value head | policy, pi_ref, reward model, fresh samples |
# | **DPO** | the preference pairs | policy, pi_ref (or its precomputed log-probs) |
# | **best-of-N** | nothing: sample N from SFT, keep the best | SFT + a scorer, N samples per prompt at inference |
#
# The plan: (1) the toy world, where all three roads provably end at the same policy pi*;
# (2) the pieces of PPO and RLOO, with two exercises; (3) a reward model and short live runs;
# (4) the full frontier (a saved sweep), its cost, and the reward hacking that comes with it.

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

from helpers import checks, rlhf, toy, viz
from helpers.config import DATA_DIR, get_device, seed_everything
from helpers.optimum import format_fraction as ffrac
from helpers.optimum import fraction_of_optimum, fraction_of_optimum_bound, optimum_reward_at, reward_at_kl
from helpers.profiles import RLHF_SIZES, sizes
from helpers.reward_model import load_or_train_pair_reward_model
from helpers.world import get_prompts, get_reward_fn, get_world, load_sft_model, load_tokenizer, restore_saved_world

seed_everything(0)
world = get_world()
device = get_device()
restore_saved_world(world)  # a saved SFT model / pairs of this very world (DPO_SAVED_WORLD or Drive), if any
print("profile:", world.profile, "| device:", device, "| torch threads:", torch.get_num_threads())

# %% [markdown]
# ## 1 · One objective, one optimum, three roads
#
# RLHF maximises, for each prompt x,
#
# $$J(\pi) = \mathbb{E}_{y\sim\pi}[r(x,y)] - \beta\,\mathrm{KL}(\pi(\cdot|x)\,\|\,\pi_\text{ref}(\cdot|x)),$$
#
# whose maximiser is $\pi^*(y|x) = \pi_\text{ref}(y|x)\,e^{r(x,y)/\beta}/Z(x)$ (notebook 02). DPO
# fits $\pi^*$ directly from preferences (notebook 03). PPO and RLOO climb $J$ by sampling from
# $\pi$ and following the policy gradient. Folding the KL into the reward,
# $R(y) = r(y) - \beta\log\frac{\pi(y)}{\pi_\text{ref}(y)}$, the REINFORCE gradient
# $\mathbb{E}_\pi[R\,\nabla\log\pi]$ is exactly $\nabla J$ (the missing term
# $-\beta\,\mathbb{E}_\pi[\nabla\log\pi]$ is zero). A neat consequence: at $\pi^*$,
# $R(y) = \beta\log Z$ for *every* y, so the advantages vanish and the noise of the gradient with it.
#
# On the toy world (one prompt, six one-word reviews) the policy is a softmax over six logits, so we
# can run tabular PPO (value table, clipped ratio, whitening, 4 epochs per batch) and RLOO
# (k = 4 samples, leave-one-out baseline) and compare with the closed form and with DPO fit to
# 200,000 sampled Bradley-Terry preferences.

# %%
# NBVAL_CHECK_OUTPUT
tw = toy.make_toy()
toy_results = {}
for beta in (0.5, 2.0):
    pi_star = toy.optimal_policy(tw.pi_ref, tw.r, beta)
    ppo = rlhf.tabular_ppo(tw.pi_ref, tw.r, beta, steps=200, seed=0)
    rloo = rlhf.tabular_rloo(tw.pi_ref, tw.r, beta, steps=300, seed=0)
    chosen, rejected = toy.sample_preferences(tw.r, 200_000, seed=0, pi_sample=tw.pi_ref)
    pi_dpo, _ = toy.fit_toy_policy(tw.pi_ref, chosen, rejected, beta)
    toy_results[beta] = {"pi*": pi_star, "PPO": ppo["pi"], "RLOO": rloo["pi"], "DPO": pi_dpo,
                         "histories": {"PPO": ppo["history"], "RLOO": rloo["history"]}}
    print(f"beta = {beta}:  pi* = {np.round(pi_star.numpy(), 2)}")
    for name in ("PPO", "RLOO", "DPO"):
        err = (toy_results[beta][name] - pi_star).abs().max().item()
        print(f"  {name:5s} max|pi - pi*| < 0.01: {err < 0.01}   pi = {np.round(toy_results[beta][name].numpy(), 2)}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 3.4))
beta = 0.5
viz.plot_policies({"pi_ref": tw.pi_ref, "pi* (closed form)": toy_results[beta]["pi*"], "PPO": toy_results[beta]["PPO"],
                   "RLOO": toy_results[beta]["RLOO"], "DPO (preferences)": toy_results[beta]["DPO"]},
                  tw.responses, ax=axes[0], title=rf"three roads, one destination ($\beta$ = {beta})")
viz.plot_toy_convergence(toy_results[beta]["histories"], ax=axes[1])
plt.tight_layout()
plt.show()


# %% [markdown]
# DPO's error here is statistical (200,000 labelled pairs); PPO's and RLOO's shrink as their
# learning rate decays to zero. None of the three is told pi*; each gets there from its own kind of
# data: DPO from *offline preferences*, PPO/RLOO from *rewards of fresh samples*. On a language model
# the roads are no longer equivalent in practice -- which samples they learn from, what they can
# exploit and what they cost is the subject of the rest of this notebook.
#
# ## 2 · The pieces of PPO for a language model
#
# **Rollouts.** For a batch of prompts the policy samples responses by *pure* ancestral sampling
# (`top_k=0, top_p=1`, never `generate()`'s default `top_k=50`: a truncated sampler is not the pi whose
# log-probs we score) up to `max_new_tokens`. A response that has not produced EOS by then is kept,
# truncated, and scored as it is (its rate is reported; `missing_eos_penalty` can discourage it).
#
# **Per-token reward.** Each response token t gets $r_t = -\beta(\log\pi(y_t) - \log\pi_\text{ref}(y_t))$,
# and the last token additionally gets the score $r(x, y)$. Summed over the response this is
# $r(x,y) - \beta\log\frac{\pi(y|x)}{\pi_\text{ref}(y|x)}$, the KL-penalised reward of section 1.
#
# **Value head and GAE.** A linear head on the policy's last hidden state (zero-initialised, so it
# starts by predicting 0) estimates $V_t$, the expected rest-of-response reward. The advantage of
# token t is GAE (Schulman et al. 2016): with $\delta_t = r_t + \gamma V_{t+1} - V_t$ ($V = 0$ after
# the last token), $A_t = \delta_t + \gamma\lambda A_{t+1}$, computed backwards; we use $\gamma = 1$,
# $\lambda = 0.95$. The value head regresses onto the returns $A_t + V_t$.
#
# ### Exercise 1 · GAE for one response
# Write `gae(rewards, values, gamma, lam)` for one response of T tokens (1-D tensors) and return the
# T advantages.

# %%
def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """(T,) rewards and values of one response -> (T,) advantages."""
    raise NotImplementedError  # your code here


print(checks.check_gae(gae))


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = 0.0
    for t in reversed(range(T)):
        next_value = values[t + 1] if t + 1 < T else 0.0  # the episode ends after the last token
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    return advantages


print(checks.check_gae(gae))
# the batched helper agrees on a 3-token response with the score 1.0 on its last token
r, v = torch.tensor([-0.02, 0.01, 1.0]), torch.tensor([0.3, 0.5, 0.8])
adv, ret = rlhf.compute_gae(r[None], v[None], torch.ones(1, 3, dtype=torch.bool), gamma=1.0, lam=0.95)
print("advantages", [f"{a:.4f}" for a in adv[0].tolist()], "| returns", [f"{x:.4f}" for x in ret[0].tolist()])

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# This is what `helpers.rlhf.compute_gae` does for a padded batch of responses.
#
# </details>

# %% [markdown]
# **Whitening and the clipped objective.** Advantages are whitened over the batch (mean 0, std 1),
# so the step size does not depend on the reward's scale. Then PPO (Schulman et al. 2017) takes
# several passes (here 4 epochs) over the same rollout batch, maximising
#
# $$\min\big(\rho_t A_t,\ \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon) A_t\big),\qquad \rho_t = \frac{\pi_\theta(y_t)}{\pi_\text{old}(y_t)},\ \epsilon = 0.2.$$
#
# Once a token's ratio has moved past $1\pm\epsilon$ in the direction its advantage wants, the
# objective is flat: its gradient is exactly zero, so re-using the batch cannot push it further. The
# value loss is clipped the same way (values move at most 0.2 from the old prediction per batch).

# %%
# NBVAL_CHECK_OUTPUT
viz.plot_clipped_objective(0.2)
plt.show()
for ratio, a in [(1.5, 1.0), (1.1, 1.0), (0.5, -1.0), (0.5, 1.0)]:
    logp = torch.tensor([[np.log(ratio)]], requires_grad=True)
    loss, _ = rlhf.ppo_policy_loss(logp, torch.zeros(1, 1), torch.tensor([[a]]), torch.ones(1, 1, dtype=torch.bool))
    loss.backward()
    print(f"ratio {ratio:.1f}, advantage {a:+.0f}: d loss / d log pi = {logp.grad.item():+.3f}")

# %% [markdown]
# The last line is the pessimistic side: a token whose ratio moved the *wrong* way (down, although
# its advantage is positive) keeps its gradient, so PPO can undo its own mistakes.
#
# **The KL coefficient.** A frontier sweep keeps beta fixed per run (`FixedKLController`). InstructGPT-
# style training often lets it adapt instead (Ziegler et al. 2019): after each batch,
# $\beta \leftarrow \beta\,(1 + e\,n/H)$ with $e = \mathrm{clip}(\mathrm{KL}/\mathrm{KL}_\text{target} - 1, -0.2, 0.2)$,
# n samples in the batch and horizon H -- a KL above target raises beta, below target lowers it:

# %%
# NBVAL_CHECK_OUTPUT
ctl = rlhf.AdaptiveKLController(init_beta=0.1, target=6.0, horizon=1000)
for measured_kl in (12.0, 12.0, 6.6, 3.0, 6.0):
    ctl.update(measured_kl, n_steps=256)
    print(f"measured KL {measured_kl:4.1f} nats -> beta {ctl.value:.4f}")


# %% [markdown]
# **RLOO** (Ahmadian et al. 2024) drops the value head and GAE. Sample k responses per prompt, give
# each one reward $R_i = r(x, y_i) - \beta\log\frac{\pi(y_i|x)}{\pi_\text{ref}(y_i|x)}$ for the whole
# sequence, and use as its baseline the mean reward of the *other* k - 1 samples. The baseline must not
# include $R_i$ itself, or it would correlate with the action and bias the gradient.
#
# ### Exercise 2 · the leave-one-out advantages
# Write `rloo_advantages(rewards)` for a (P, k) tensor of rewards (P prompts, k samples each):
# $A_i = R_i - \frac{1}{k-1}\sum_{j\ne i} R_j$. Do it without a loop over $i$ -- one line of tensor
# arithmetic. (Hint: the sum over $j\ne i$ is a sum over all $j$ minus one term.) Before you run the
# checker: what do a prompt's $k$ advantages sum to, and how does $A_i$ relate to $R_i$ minus the
# *plain* mean of all $k$?

# %%
def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(P, k) sequence rewards -> (P, k) advantages R_i - mean of the other k - 1."""
    raise NotImplementedError  # your code here


print(checks.check_rloo_advantages(rloo_advantages))


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    k = rewards.shape[1]
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline


print(checks.check_rloo_advantages(rloo_advantages))
print(rloo_advantages(torch.tensor([[1.0, 2.0, 3.0, 6.0]])).numpy().round(4))

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# $\sum_{j\ne i}R_j = S - R_i$ with $S=\sum_j R_j$, so $A_i = R_i - \frac{S-R_i}{k-1} = \frac{k}{k-1}\big(R_i - \bar R\big)$:
# the plain mean-centred reward, scaled up by $\frac{k}{k-1}$, and summing to 0 over the prompt's $k$
# samples. The scale matters for the gradient's size, not its direction; the baseline that leaves
# $R_i$ out is what keeps the estimate unbiased.
#
# </details>

# %% [markdown]
# ## 3 · A reward model, and short live runs
#
# The RLHF pipeline first fits a reward model to the same preference pairs DPO trains on: the
# Bradley-Terry model of notebook 01 (`helpers.reward_model`: a GPT-2 body with a scalar head, loss
# $-\log\sigma(s(y_w) - s(y_l))$). Its scale is arbitrary, so we normalise its output to mean 0,
# std 1 over SFT samples (`helpers.reward_model.NormalisedReward`). Its held-out pair accuracy tells how much of the
# ground truth it captured; many pairs are near-ties (two close rewards, the higher one labelled
# "chosen" however small the gap), and a small error of the model flips those, so do not expect 100%.

# %%
# NBVAL_IGNORE_OUTPUT
t0 = time.perf_counter()
RLHF = sizes(RLHF_SIZES, world.profile)  # this section's sizes, per profile (helpers/profiles.py)
reward_model, rm_info = load_or_train_pair_reward_model(world, device=device, **RLHF["reward_model"])
print(f"reward model: trained on {rm_info['n_train_pairs']} pairs in {rm_info['train_s']:.0f} s "
      f"(loaded in {time.perf_counter() - t0:.0f} s)")
print(f"held-out pair accuracy: {rm_info['heldout_accuracy']:.3f} on {rm_info['n_test_pairs']} pairs of unseen prompts")
print(f"normalisation over SFT samples: raw mean {rm_info['norm_mean']:.3f}, raw std {rm_info['norm_std']:.3f}")

# %% [markdown]
# Now a short PPO run against the learned reward model and a short RLOO run, on prompts from the
# pairs' split (never the evaluation prompts), each a handful of iterations so the notebook stays
# fast. The plots show the reward model's score and the KL along each run; the cell after them says
# where each run *ended*, on the ground truth with standard errors -- in a handful of iterations a
# run need not end above SFT. The full runs are in section 4.

# %%
# NBVAL_IGNORE_OUTPUT
tok = load_tokenizer(world)
sft = load_sft_model(world, device=device)
train_prompts = get_prompts(world, world.pairs_split, RLHF["n_train_prompts"], seed=0, tokenizer=tok)
eval_prompts = get_prompts(world, world.eval_split, RLHF["n_eval_prompts"], seed=0, tokenizer=tok)
prompts_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in train_prompts]


def score_with(text_reward):
    """rlhf works on token ids; rewards read text (prompt + response)."""
    return lambda p_ids, r_ids: text_reward([tok.decode(p + r, skip_special_tokens=True) for p, r in zip(p_ids, r_ids)])


# the same budget for both: 16 samples per iteration, 4 epochs x 2 mini-batches of 8 sequences
configs = {method: rlhf.RLHFConfig(**RLHF[method], max_new_tokens=world.max_new_tokens) for method in ("ppo", "rloo")}
live = {}
for method, cfg in configs.items():
    policy = load_sft_model(world, device=device)
    live[method] = rlhf.train_rlhf(method, policy, sft, prompts_ids, score_with(reward_model), cfg, steps=RLHF["steps"],
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    live[method]["policy"] = policy
fig, axes = plt.subplots(1, 2, figsize=(13, 3.2))
for ax, method in zip(axes, live):
    viz.plot_rl_history(live[method]["history"], ax=ax, title=rf"{method.upper()} vs the reward model, $\beta$ = 0.1")
plt.tight_layout()
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
from helpers.evaluate import evaluate_policy

gt_reward = get_reward_fn(world)
for name, model in [("SFT", sft)] + [(m.upper() + f" ({len(live[m]['history'])} it.)", live[m]["policy"]) for m in live]:
    ev = evaluate_policy(model, sft, tok, eval_prompts[: RLHF["n_check_prompts"]], gt_reward,
                         n_samples_per_prompt=RLHF["check_samples"],
                         max_new_tokens=world.max_new_tokens, seed=1, progress=False)
    print(f"{name:14s} ground-truth reward {ev['reward_mean']:.3f} +- {ev['reward_se']:.3f}   "
          f"KL {ev['kl_mean']:.2f} +- {ev['kl_se']:.2f} nats   length {ev['length_mean']:.1f}   EOS {ev['eos_rate']:.2f}")

# %% [markdown]
# ## 4 · The frontier: every method, a few beta, the same evaluation
#
# Each point below is one trained policy (or best-of-N), evaluated by
# `helpers.evaluate.evaluate_policy` on the same held-out prompts: mean ground-truth
# reward (the world's ground truth: VADER in tiny) and the sequence KL(pi || pi_ref), with standard
# errors over prompts. Best-of-N has no tractable KL; it is plotted at the upper bound
# log N - (N-1)/N (Beirami et al. 2024). PPO, PPO-GT and RLOO sample fresh responses every
# iteration; DPO trains on the 90% of the pairs the reward model also trained on, at two learning
# rates (the second as *DPO-lr1e-4*). The sweep's sizes (`helpers.profiles.FRONTIER_SIZES`) and how
# long it took are printed below it, from the file it saved.
#
# The grey curve is the optimum $\pi^*_\beta$ on the same prompts (notebook 06, "How far from the
# optimum?"), estimated from SFT samples per prompt (256 in tiny): the most reward any policy can have at each
# KL. Each method's point is reported as the fraction of the optimum's reward gain it reaches at its KL.
#
# The sweep is too long for a notebook, so it lives in `scripts/run_frontier.py` and its
# results in `data/frontier.json`, which records the fingerprint of the world it was made on
# (`helpers.world.world_fingerprint`: every setting of the corpus, tokenizer, SFT model and pairs).
# This notebook refuses a sweep of another world. Set `RUN_SWEEP = True` to recompute it (finished
# runs are kept per world, so an interrupted sweep resumes).
#
# The numbers above describe the `tiny` world. **Under `gpt2`** this section shows the `gpt2` world's
# own sweep: `data/frontier_gpt2.json` if one made on this very world ships with the course, else a
# *reduced* sweep (`helpers.profiles.FRONTIER_SIZES["gpt2"]`: one beta per RL method, two for DPO)
# that runs here, live, and is kept in the cache. The first line below says which.

# %%
# NBVAL_IGNORE_OUTPUT
import json
from pathlib import Path

from helpers.config import REPO_ROOT
from helpers.world import load_world_results, saved_results_world, world_fingerprint


def made_on(path, w) -> bool:
    """Is ``path`` a sweep made on world ``w``?"""
    return Path(path).exists() and json.loads(Path(path).read_text()).get("world_fingerprint") == world_fingerprint(w)


RUN_SWEEP = False  # True: recompute this profile's sweep (its duration on the machine that made it: printed below)
if world.profile == "tiny":
    sweep_world, frontier_path, how = saved_results_world(), DATA_DIR / "frontier.json", "saved sweep"
else:
    sweep_world, frontier_path, how = world, DATA_DIR / f"frontier_{world.profile}.json", "saved sweep"
    if not made_on(frontier_path, world):  # none shipped for this world: the reduced sweep, here
        frontier_path, how = Path(world.root) / "frontier.json", "reduced sweep run in this notebook"
        RUN_SWEEP = RUN_SWEEP or not made_on(frontier_path, world)
if RUN_SWEEP:
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "run_frontier.py"), "--profile", sweep_world.profile,
           "--out", str(frontier_path)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:  # each finished run prints one line
            print(line, end="", flush=True)
    if proc.returncode:
        raise RuntimeError(f"the sweep failed ({' '.join(cmd)}): see its output above")
frontier = load_world_results(frontier_path, sweep_world,
                              f"python scripts/run_frontier.py --profile {sweep_world.profile} --jobs 2")
WORLD_LABEL = f"{sweep_world.profile} world, {how}"
print(f"sweep of {frontier['meta']['date']} on the {WORLD_LABEL}, world fingerprint {frontier['world_fingerprint']}, "
      f"{frontier['meta']['jobs']} runs at a time on {frontier['meta']['cpu_count']} CPU cores, "
      f"{frontier['meta']['total_s'] / 60:.0f} min in all")
METHODS = [m for m in ("PPO", "PPO-GT", "RLOO", "DPO", "DPO-lr1e-4") if any(r["method"] == m for r in frontier["runs"])]
S = frontier["meta"]["settings"]
print(f"its sizes: {S['n_eval_prompts']} evaluation prompts x {S['eval_samples']} samples; RL lr {S['rl']['lr']:g}, "
      f"{S['rl_steps']} iterations of {S['rl']['batch_size']} samples; DPO lr {S['dpo']['lr']:g}, {S['dpo']['max_steps']} "
      f"steps; pi* from {S['optimum_samples']} SFT samples per prompt")

# %%
# NBVAL_CHECK_OUTPUT
runs, bon, sft_row = frontier["runs"], frontier["bon"], frontier["sft"]
print(f"{'method':8s} {'beta':>5s}  {'reward +- SE':>15s}  {'KL (nats) +- SE':>16s}")
print(f"{'SFT':8s} {'-':>5s}  {sft_row['reward_mean']:7.3f} +- {sft_row['reward_se']:.3f}  "
      f"{sft_row['kl_mean']:7.2f} +- {sft_row['kl_se']:.2f}")
optimum = frontier["optimum"]
for r in runs:
    r["of_optimum"] = fraction_of_optimum(optimum, r["kl_mean"], r["reward_mean"])
    print(f"{r['method']:8s} {r['beta']:5g}  {r['reward_mean']:7.3f} +- {r['reward_se']:.3f}  "
          f"{r['kl_mean']:7.2f} +- {r['kl_se']:.2f}   {ffrac(optimum, r['kl_mean'], r['reward_mean']):>6s} of pi*")
for b in bon:
    b["of_optimum"] = fraction_of_optimum(optimum, b["kl_bound"], b["reward_mean"]) if b["N"] > 1 else float("nan")
    print(f"{b['method']:22s} N={b['N']:<2d} {b['reward_mean']:7.3f} +- {b['reward_se']:.3f}  KL <= {b['kl_bound']:.2f}"
          f"   {ffrac(optimum, b['kl_bound'], b['reward_mean']) if b['N'] > 1 else '-':>6s} of pi* (at the bound)")
print(f"\nthe optimum pi* ({optimum[0]['n_samples']} SFT samples x {optimum[0]['n_prompts']} prompts):")
for q in optimum:
    print(f"  beta {q['beta']:5g}  {q['reward_mean']:7.3f} +- {q['reward_se']:.3f}  {q['kl_mean']:7.2f} +- {q['kl_se']:.2f}"
          f"   ESS {q['ess_median']:5.1f}  length {q['length_mean']:5.1f}{'' if q['reliable'] else '  (too few effective samples)'}")

# %%
viz.plot_rlhf_frontier(runs, bon, sft_row, optimum=optimum, title=f"reward vs KL on held-out prompts ({WORLD_LABEL})")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### What each method costs
#
# Wall time is training only (mean over the betas), on the sweep machine's CPU cores, one thread per
# run, several runs at a time (the first line of section 4 says how many: so, rough); the reward
# model's training is listed on its own line and is paid once by PPO, RLOO and best-of-N. *State MB* is the tensor memory of the models held (parameters; plus gradients and
# Adam's two moments for the trained policy). *Peak +MB* is the largest growth of the process's
# resident memory during training (activations, rollouts, optimizer), sampled every 20 ms. DPO's is
# the largest, and the last line below shows that its training step's logits are only a part of it:
# the meter also covers what DPO does once before its first step -- tokenizing every pair and
# precomputing the reference's log-probs over all of them -- and resident memory is the allocator's
# high-water mark, not the tensors alive, so read these peaks as rough. Lines of
# code count the functions each method runs (docstrings and comments removed; DPO's include
# checkpoint/resume code that the RL loops do not have). Samples are the responses generated
# during training; DPO's 4,000 come from building the pairs once from SFT before training (shared
# with the reward model).

# %%
# NBVAL_CHECK_OUTPUT
held = {"PPO": "policy+value head, pi_ref, reward model", "PPO-GT": "policy+value head, pi_ref (+ true reward)",
        "RLOO": "policy, pi_ref, reward model", "DPO": "policy, pi_ref (log-probs precomputed once)"}
loc = frontier["lines_of_code"]
print(f"{'method':7s} {'models in memory':42s} {'lines':>5s} {'train s':>8s} {'state MB':>8s} {'peak +MB':>8s} {'samples':>8s}")
from helpers.pairs import load_pairs_stats

pair_samples = load_pairs_stats(world)["n_samples"]  # SFT samples behind the pairs (DPO and the reward model)
for method in ("PPO", "PPO-GT", "RLOO", "DPO"):
    rows = [r for r in runs if r["method"] == method]
    samples = f"{pair_samples} (offline)" if method == "DPO" else str(int(np.mean([r["samples"] for r in rows])))
    print(f"{method:7s} {held[method]:42s} {loc[method]:5d} {np.mean([r['wall_s'] for r in rows]):8.0f} "
          f"{np.mean([r['state_mb'] for r in rows]):8.1f} {np.max([r['train_rss_mb'] for r in rows]):8.0f} "
          f"{samples:>8s}")
rm_info = frontier["reward_model"]
print(f"reward model: {loc['reward model']} lines, trained in {rm_info.get('train_s', float('nan')):.0f} s, "
      f"held-out pair accuracy {rm_info.get('heldout_accuracy', float('nan')):.3f}")
print(f"(PPO and RLOO also need the reward model, itself trained on the {pair_samples} offline samples' pairs)")
print("best-of-N: no training; SFT + reward model in memory; N samples + N scores per prompt at inference")
# where DPO's peak goes: one concatenated forward holds the float32 logits of 2B sequences (chosen and
# rejected) over the whole vocabulary, and the float32 log-softmax a second copy of the same size
rows, width, vocab = 2 * S["dpo"]["batch_size"], S["dpo"]["max_length"], len(tok)
logits_mb = rows * width * vocab * 4 / 2**20
rl_rows = S["rl"]["mini_batch_size"]
dpo_peak = max(r["train_rss_mb"] for r in runs if r["method"] == "DPO")
print(f"DPO's step: the logits of {rows} sequences x up to {width} tokens x {vocab} vocabulary x 4 bytes = "
      f"{logits_mb:.0f} MB, twice with the log-softmax = {2 * logits_mb:.0f} MB at most -- "
      f"{2 * logits_mb / dpo_peak:.0%} of DPO's peak +MB ({dpo_peak:.0f})")

# %% [markdown]
# The course's map again (notebook 00), with what this sweep measured on each road:

# %%
def mean_of(method, key):
    return float(np.mean([r[key] for r in runs if r["method"] == method]))


viz.plot_pipelines({
    "sample pairs": f"{pair_samples} SFT samples, once",
    "reward model": f"trained in {rm_info.get('train_s', float('nan')):.0f} s",
    "PPO": f"{held['PPO']}\n{mean_of('PPO', 'samples'):.0f} samples in the loop, {mean_of('PPO', 'wall_s'):.0f} s",
    "DPO": f"{held['DPO']}\nno sampling in the loop, {mean_of('DPO', 'wall_s'):.0f} s",
})
plt.show()

# %% [markdown]
# ### Reward hacking, shown
#
# A policy is trained on a *proxy*: the reward model (PPO, RLOO, best-of-N), the pairs (DPO), or
# VADER itself (PPO-GT), which is only a proxy for "a positive review". What did the policies learn
# to do? Next to the reward: response length (tokens, EOS excluded), how often a response ends with
# EOS before the limit, how often it contains "!", and the words whose share of responses grew the
# most over SFT.

# %%
# NBVAL_CHECK_OUTPUT
STOPWORDS = set("a an the is was were it its this that and but or of to in on for with as at by i my me we "
                "be are has have had not no so very too out ten".split())


def overused(word_rates: dict, base: dict, n: int = 4) -> str:
    """The n content words whose share of responses grew the most over SFT."""
    gain = {w: word_rates[w] - base.get(w, 0.0) for w in word_rates if w not in STOPWORDS}
    top = sorted(gain, key=lambda w: -gain[w])[:n]
    return ", ".join(f"{w} {base.get(w, 0):.0%}->{word_rates[w]:.0%}" for w in top)


base = sft_row["word_rates"]
print(f"{'policy':14s} {'reward':>6s} {'len':>5s} {'EOS':>5s} {'!':>5s}  overused words (share of responses)")
for r in [sft_row] + runs + [b for b in bon if b["method"] == "BoN (reward model)" and b["N"] == 16]:
    name = r["method"] + (f" {r['beta']:g}" if r.get("beta") else "") + (f" N={r['N']}" if "N" in r else "")
    print(f"{name:14s} {r['reward_mean']:6.3f} {r['length_mean']:5.1f} {r['eos_rate']:5.2f} {r['exclaim_rate']:5.2f}  "
          f"{overused(r['word_rates'], base) if r is not sft_row else ''}")

# %% [markdown]
# Each method finds its own exploit of the same scorer. What the table says, per method, for its
# smallest beta (the policy pushed hardest), rendered from the numbers:

# %%
# NBVAL_IGNORE_OUTPUT
from IPython.display import Markdown

hack_lines = []
for method in METHODS:
    rows = [r for r in runs if r["method"] == method]
    r = min(rows, key=lambda x: x["beta"])
    top = overused(r["word_rates"], base, n=3)
    hack_lines.append(f"* **{method}** (beta {r['beta']:g}): length {r['length_mean']:.1f} tokens vs SFT's "
                      f"{sft_row['length_mean']:.1f} ({r['length_mean'] / sft_row['length_mean']:.1f}x), EOS rate "
                      f"{r['eos_rate']:.2f} vs {sft_row['eos_rate']:.2f}, '!' in {r['exclaim_rate']:.0%} of responses; "
                      f"words that grew most: {top}.")
bon_pick = next(b for b in bon if b["method"] == "BoN (reward model)" and b["N"] == max(x["N"] for x in bon))
hack_lines.append(f"* **Best-of-{bon_pick['N']}** (reward model) only re-ranks SFT's own samples: length "
                  f"{bon_pick['length_mean']:.1f}, EOS rate {bon_pick['eos_rate']:.2f}; words that grew most: "
                  f"{overused(bon_pick['word_rates'], base, n=3)}.")
Markdown("\n".join(hack_lines))

# %% [markdown]
# The KL is paid per token, so a policy can spend it on a short, sure-fire ending or on many more
# words that the lexicon scores; length and EOS rate beside the reward tell which one happened.
#
# ### Side by side
# The first sample for the same held-out prompts, from SFT and from the policy of each method with
# the highest reward. Every policy is sampled with the same random seed, so where two policies
# agree on the next-token distribution they write the same words: the differences are the
# policies', not the dice's.

# %%
# NBVAL_CHECK_OUTPUT
best = {}
for r in runs:
    if r["method"] not in best or r["reward_mean"] > best[r["method"]]["reward_mean"]:
        best[r["method"]] = r
for i, ex in enumerate(sft_row["examples"][:3]):
    print(f"PROMPT: {ex['prompt']!r}")
    print(f"  {'SFT':12s} ({ex['reward']:+.2f}) {ex['response']!r}")
    for method, r in best.items():
        e = r["examples"][i]
        print(f"  {method + ' ' + format(r['beta'], 'g'):12s} ({e['reward']:+.2f}) {e['response']!r}")

# %% [markdown]
# ## 5 · Did DPO's frontier beat PPO's here?
#
# A frontier is better if it reaches more reward for the same KL budget. First the best reward each
# method reached within a few KL budgets (best-of-N counted at its KL upper bound, which is
# conservative for it):

# %%
# NBVAL_CHECK_OUTPUT
budgets = (1.0, 3.0, 10.0, 100.0)
points = {m: [(r["kl_mean"], r["reward_mean"], r["reward_se"]) for r in runs if r["method"] == m] for m in METHODS}
for scorer in ("BoN (reward model)", "BoN (ground truth)"):
    points[scorer] = [(b["kl_bound"], b["reward_mean"], b["reward_se"]) for b in bon if b["method"] == scorer]
print(f"{'method':20s}" + "".join(f"  KL <= {b:<4g}      " for b in budgets))
for method, pts in points.items():
    cells = []
    for b in budgets:
        inside = [p for p in pts if p[0] <= b]
        if inside:
            _, reward, se = max(inside, key=lambda p: p[1])
            cells.append(f"{reward:6.3f} +- {se:.3f}")
        else:
            cells.append(f"{'-':>15s}")
    print(f"{method:20s}" + "".join(f"  {c:15s}" for c in cells))

# %% [markdown]
# Then the paper's Fig. 2 question, point by point: each method's reward *at* 1, 2 and 3 nats, read
# off its own curve (linear between its measured betas, SFT at KL 0; never extrapolated), next to the
# optimum's reward at the same KL and the fraction of the optimum's gain over SFT it reaches.

# %%
# NBVAL_CHECK_OUTPUT
AT = (1.0, 2.0, 3.0)
curves = {m: [r for r in runs if r["method"] == m] for m in METHODS}
curves.update({s_: [{"kl_mean": b["kl_bound"], "reward_mean": b["reward_mean"], "reward_se": b["reward_se"]}
                    for b in bon if b["method"] == s_] for s_ in ("BoN (reward model)", "BoN (ground truth)")})
at_kl = {m: [reward_at_kl(pts, kl, base=sft_row) for kl in AT] for m, pts in curves.items()}
print(f"{'':20s}" + "".join(f"{'at ' + format(kl, 'g') + ' nats':>24s}" for kl in AT))
reach = max(q["kl_mean"] for q in optimum if q["reliable"])
print(f"{'the optimum pi*':20s}" + "".join(
    f"{optimum_reward_at(optimum, kl):>17.3f}       " if kl <= reach else f"{'past its reach':>22s}  " for kl in AT))
for m, values in at_kl.items():
    cells = [f"{v:6.3f} +- {se:.3f} ({ffrac(optimum, kl, v)})" if not np.isnan(v) else f"{'-':>22s}"
             for (v, se), kl in zip(values, AT)]
    print(f"{m:20s}" + "".join(f"  {c:22s}" for c in cells))
print("(in brackets: the fraction of the optimum's reward gain over SFT at that KL, '<=' an upper bound past the\n"
      "optimum estimate's reach; best-of-N at its KL bound)")

# %% [markdown]
# **What our runs say**, rendered from the tables above:

# %%
# NBVAL_IGNORE_OUTPUT
from IPython.display import Markdown


def frac_at(method, kl):
    """The method's fraction of the optimum's gain at ``kl`` (its own curve), as text; "<=" past the reach."""
    v, _ = reward_at_kl(curves[method], kl, base=sft_row)
    return "n/a" if np.isnan(v) else ffrac(optimum, kl, v, ".0%")


def pct(x):
    return x if isinstance(x, str) else ("n/a" if np.isnan(x) else f"{x:.0%}")


def top_at(kl):
    trained = {m: at_kl[m][AT.index(kl)][0] for m in METHODS}
    trained = {m: v for m, v in trained.items() if not np.isnan(v)}
    return max(trained, key=trained.get) if trained else "none"


dpo_runs = [r for r in runs if r["method"].startswith("DPO")]
ppo_runs = [r for r in runs if r["method"] == "PPO"]
far_dpo = max(dpo_runs, key=lambda r: r["kl_mean"])
best_ppo = max(ppo_runs, key=lambda r: r["reward_mean"])
bon16 = next(b for b in bon if b["method"] == "BoN (reward model)" and b["N"] == max(x["N"] for x in bon))
sft_len = sft_row["length_mean"]
dpo_lr1e4 = (f"DPO at lr 1e-4 {pct(frac_at('DPO-lr1e-4', 1))} / {pct(frac_at('DPO-lr1e-4', 2))} / "
             f"{pct(frac_at('DPO-lr1e-4', 3))}, " if "DPO-lr1e-4" in curves else "")
Markdown("\n".join([
    f"* **Against the optimum.** At 1 / 2 / 3 nats DPO (lr {frontier['meta']['settings']['dpo']['lr']:g}) reaches "
    f"{pct(frac_at('DPO', 1))} / {pct(frac_at('DPO', 2))} / {pct(frac_at('DPO', 3))} of the optimum's reward gain, "
    f"{dpo_lr1e4}"
    f"PPO against the reward model {pct(frac_at('PPO', 1))} / {pct(frac_at('PPO', 2))} / {pct(frac_at('PPO', 3))}, "
    f"PPO on the true reward {pct(frac_at('PPO-GT', 1))} / {pct(frac_at('PPO-GT', 2))} / {pct(frac_at('PPO-GT', 3))}, "
    f"RLOO {pct(frac_at('RLOO', 1))} / {pct(frac_at('RLOO', 2))} / {pct(frac_at('RLOO', 3))}.",
    f"* **Highest trained curve**: at 1 nat {top_at(1.0)}, at 2 nats {top_at(2.0)}, at 3 nats {top_at(3.0)}. "
    f"The paper's claim (DPO's frontier dominates PPO's) is tested here point by point; compare the standard errors "
    f"in the table before calling a difference.",
    f"* **KL-hungry DPO.** DPO's furthest run (beta {far_dpo['beta']:g}, {far_dpo['method']}) spent "
    f"{far_dpo['kl_mean']:.1f} nats for a reward of {far_dpo['reward_mean']:.3f}; PPO's best run reached "
    f"{best_ppo['reward_mean']:.3f} at {best_ppo['kl_mean']:.1f} nats.",
    f"* **The simplest baseline.** Best-of-{bon16['N']} scored by the same reward model reaches "
    f"{bon16['reward_mean']:.3f} within a KL *bound* of {bon16['kl_bound']:.2f} nats "
    f"({ffrac(optimum, bon16['kl_bound'], bon16['reward_mean'], '.0%')} of the optimum's gain at the bound): re-ranking SFT's own samples stays close to "
    f"the optimum by construction (Beirami et al. 2024).",
    f"* **Length.** SFT writes {sft_len:.1f} tokens; DPO's furthest run {far_dpo['length_mean']:.1f} (EOS rate "
    f"{far_dpo['eos_rate']:.2f}); PPO's best {best_ppo['length_mean']:.1f}; the optimum at its largest reliable KL "
    f"{max((q for q in optimum if q['reliable']), key=lambda q: q['kl_mean'])['length_mean']:.1f}. "
    f"A gain that is only length is not alignment.",
    f"* **The reward model** PPO and RLOO optimise ranks held-out pairs at "
    f"{frontier['reward_model']['heldout_accuracy']:.0%} accuracy.",
]))

# %% [markdown]
# Why DPO falls short of the optimum it targets -- three reasons visible in the tables above:
#
# 1. **On-policy vs offline.** PPO and RLOO pay the KL penalty on exactly the samples they generate,
#    so beta controls the KL directly. DPO only sees the offline SFT samples behind the pairs; its
#    loss keeps falling by pushing rejected responses down (notebook 06), and where that probability
#    goes is not constrained by any sample.
# 2. **Length.** Much of DPO's extra KL is extra tokens: the sequence KL grows with every token, and
#    its low-beta policies write longer reviews that stop with EOS less often, although every pair
#    it trained on ended with EOS.
# 3. **Certain labels.** A pair is a preference whenever one sample's reward is higher, however
#    slightly: Bradley-Terry with an infinitely sharp reward, so the data never say *how much*
#    better, and the loss keeps rewarding a wider margin. Dropping near-ties is the obvious fix;
#    the table above tests it (compare its "near-ties dropped" rows with today's).
#
# ### Measured: what holds offline DPO where it is
#
# `scripts/diagnose_dpo.py` starts from notebook 06's run and changes **one thing at a time** --
# the data (more prompts, one pair per prompt, near-ties dropped), the optimisation (epochs,
# learning rate), beta, the loss (IPO, cDPO) -- and then runs **on-policy DPO**: rounds of sampling
# from the current policy, ranking by the ground truth and one DPO epoch, with the reference held
# fixed at SFT. Each run is evaluated on the same 100 held-out prompts x 4 samples against the
# optimum estimated on those prompts. *LC* is the length-controlled reward: the reward minus what
# a reward-on-length regression over SFT samples attributes to length (Park et al. 2024), so a gain
# that is only length shows up as none. The runs take about half an hour, so the results are saved
# in `data/dpo_diagnosis.json` with the world's fingerprint (refused if it differs). They are the
# **tiny** world's, whatever profile this notebook runs (no `gpt2` diagnosis exists yet).

# %%
# NBVAL_CHECK_OUTPUT
diagnosis = load_world_results(DATA_DIR / "dpo_diagnosis.json", saved_results_world(),
                               "python scripts/diagnose_dpo.py  # about half an hour on 2 cores")
lc = diagnosis["length_control"]
print(f"reward per token of length on SFT samples: {lc['slope']:+.4f} (SFT mean length {lc['ref_length']:.1f})")
print(f"{'':46s} {'reward':>13s} {'KL':>12s} {'of pi*':>6s} {'LC':>6s} {'LC of pi*':>9s} {'len':>5s} {'EOS':>4s} "
      f"{'impl. acc':>9s} {'epochs':>6s}")


def fmt(x, spec):
    return format(x, spec) if x is not None and not (isinstance(x, float) and math.isnan(x)) else "-".rjust(len(format(0.0, spec)))


def dfrac(row, key, spec=".2f"):
    """A diagnosis row's fraction of the optimum's gain (``key``: its reward or its length-controlled
    reward); "<=x" past the estimate's reach, where only an upper bound is known."""
    return ffrac(diagnosis["optimum"], row["kl_mean"], row[key], spec)


group = None
for row in diagnosis["rows"]:
    if row["group"] != group:
        group = row["group"]
        print(f"[{group}]")
    print(f"  {row['label']:44s} {row['reward_mean']:+.3f}±{row['reward_se']:.3f} {row['kl_mean']:6.2f}±{row['kl_se']:.2f} "
          f"{dfrac(row, 'reward_mean'):>6s} {row['lc_reward']:+6.3f} {dfrac(row, 'lc_reward'):>9s} "
          f"{row['length_mean']:5.1f} {row['eos_rate']:4.2f} {row['implicit_accuracy']:9.3f} {fmt(row.get('epochs'), '6.1f')}")
print("[on-policy DPO, pi_ref = SFT fixed]")
for row in diagnosis["onpolicy"]:
    print(f"  round {row['round']} ({row['samples']} fresh samples, {row['pairs']} pairs){'':9s}"
          f" {row['reward_mean']:+.3f}±{row['reward_se']:.3f} {row['kl_mean']:6.2f}±{row['kl_se']:.2f} "
          f"{dfrac(row, 'reward_mean'):>6s} {row['lc_reward']:+6.3f} {dfrac(row, 'lc_reward'):>9s} "
          f"{row['length_mean']:5.1f} {row['eos_rate']:4.2f} {row['implicit_accuracy']:9.3f}")

# %%
fig, ax = plt.subplots(figsize=(8, 4.5))
viz.plot_optimum(diagnosis["optimum"], ax)
offline = [r for r in diagnosis["rows"] if r["group"] != "reference"]
ax.errorbar([r["kl_mean"] for r in offline], [r["reward_mean"] for r in offline], xerr=[r["kl_se"] for r in offline],
            yerr=[r["reward_se"] for r in offline], fmt="D", color="C3", ms=4, capsize=2, label="offline DPO variants")
for r in offline:
    ax.annotate(r["label"].split(" (")[0], (r["kl_mean"], r["reward_mean"]), fontsize=6, xytext=(3, 3),
                textcoords="offset points")
path = [diagnosis["rows"][0]] + diagnosis["onpolicy"]
ax.errorbar([r["kl_mean"] for r in path], [r["reward_mean"] for r in path], yerr=[r["reward_se"] for r in path],
            fmt="o-", color="C1", capsize=2, label=f"on-policy DPO, rounds 0..{len(path) - 1}")
ax.set_xscale("symlog", linthresh=1.0)
ax.set_xlabel(r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ (nats, symlog)")
ax.set_ylabel("ground-truth reward (mean)")
ax.set_title("DPO variants against the optimum (tiny world, saved diagnosis)")
ax.legend(fontsize=7, loc="lower right")
plt.tight_layout()
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
today = next(r for r in diagnosis["rows"] if r["group"] == "today")
opt_d = diagnosis["optimum"]
for r in diagnosis["rows"] + diagnosis["onpolicy"]:
    r["frac"], r["frac_exact"] = fraction_of_optimum_bound(opt_d, r["kl_mean"], r["reward_mean"])
    r["frac_lc"], _ = fraction_of_optimum_bound(opt_d, r["kl_mean"], r["lc_reward"])
changes = [r for r in diagnosis["rows"] if r["group"] not in ("reference", "today")]
exact = [r for r in changes if r["frac_exact"] and not math.isnan(r["frac"])]
best = max(exact, key=lambda r: r["frac"]) if exact else None
beyond = [r for r in changes if not r["frac_exact"]]


def share(r, key="frac"):
    return ("" if r["frac_exact"] else "at most ") + f"{r[key]:.0%}"


onp = diagnosis["onpolicy"]
lines = [f"* Notebook 06's run: {share(today)} of the optimum's reward gain at its KL ({today['kl_mean']:.2f} nats); "
         f"{share(today, 'frac_lc')} after removing what length explains."]
if best is not None:
    lines.append(f"* Among the changes whose KL the optimum estimate reaches, the best: **{best['label']}**, "
                 f"{share(best)} at {best['kl_mean']:.2f} nats ({share(best, 'frac_lc')} length-controlled).")
    same = [r["label"] for r in exact if abs(r["frac"] - today["frac"]) < 0.05]
    if same:
        lines.append(f"* Within 5 points of today's fraction: {', '.join(same)}.")
if beyond:
    lines.append("* Past the estimate's reach (only an upper bound is known, against the optimum's last reliable point): "
                 + "; ".join(f"{r['label']} ({r['kl_mean']:.1f} nats, {share(r)}, length {r['length_mean']:.1f})"
                             for r in beyond) + ".")
if onp:
    lines.append("* On-policy rounds: " + "; ".join(
        f"round {r['round']} {r['reward_mean']:+.3f} at {r['kl_mean']:.2f} nats ({share(r)} of the optimum's gain)"
        for r in onp) + f" -- each round samples {onp[0]['samples']} fresh responses from the policy.")
lines.append(f"* Implicit-reward ranking accuracy on held-out pairs: {today['implicit_accuracy']:.3f} for today's run "
             f"(the reward model of section 3 ranks such pairs at {rm_info['heldout_accuracy']:.3f}).")
Markdown("\n".join(lines))

# %% [markdown]
# ### The one change the diagnosis never made: the target
#
# Every variant above keeps our pairs' *certain* labels (chosen = the higher reward). For those the
# DPO loss has no finite minimiser -- the margins grow for ever and $\beta$ stops holding the policy
# (notebook 03) -- while with labels from a Bradley-Terry annotator its minimiser is $\pi^*_\beta$ itself.
# Notebook 09 trains the same SFT samples against five targets, three training seeds each, and reads
# each path's best point within 3 nats (`data/optimum_gap.json`, made on this world -- checked):

# %%
# NBVAL_IGNORE_OUTPUT
gap = load_world_results(DATA_DIR / "optimum_gap.json", saved_results_world(), "python scripts/optimum_gap.py --jobs 2")
gap_best = {r["target"]: r for r in gap["rows"] if r.get("headline")}
Markdown("\n".join(
    f"* `{t}`: {'' if r['fraction_exact'] else 'at most '}{r['fraction']:.2f} ± {r['fraction_se']:.2f} of the "
    f"optimum's gain at {r['kl']:.2f} ± {r['kl_se']:.2f} nats (step {r['step']}, {r['seeds']} seeds; length "
    f"{r['length']:.1f}, pi*'s {r['optimum_length']:.1f})" for t, r in gap_best.items())
    + "\n\n(tiny world; `hard` is the course's labels, `soft` the annotator's expected label, `distilled` pi*'s own "
      "weights on the same samples -- notebook 09 takes the rest of the gap apart.)")

# %% [markdown]
# What DPO does buy: no sampling in the training loop, no reward model, no value head, the fewest
# lines of code (the cost table). How far along the frontier it goes -- with certain labels -- is set
# as much by its learning rate and steps as by beta (compare the two DPO lines): the loss has no
# finite target, and DPO has no on-policy KL measurement to stop it. With soft labels, beta names a
# target again (above, and notebook 09).
#
# ## Summary
#
# * PPO needs four networks' worth of state (policy, value head, reference, reward model), samples
#   inside the loop, GAE, whitening, two clipped losses and a KL controller; RLOO drops the value head
#   and GAE; DPO needs the policy, the reference's log-probs and a classification loss.
# * On the toy, PPO, RLOO and DPO all converge to pi* = pi_ref exp(r/beta) / Z: one objective.
# * On the language model they differ in which samples they learn from and in what they exploit;
#   report length, EOS and "!" rates beside any reward.
# * The fair score of a point on the reward-KL plane is the fraction of the optimum's reward gain it
#   reaches at its KL (section 5): the optimum pi* is what every method aims at, and it can be
#   estimated from samples of pi_ref alone (an estimate below the true optimum: fractions against it
#   are upper bounds).
# * DPO's target is set by its labels: certain labels give it none, a Bradley-Terry annotator's give
#   pi*_beta (notebook 09 measures the difference on this world).
