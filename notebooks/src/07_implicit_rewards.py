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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dpo-course/dpo-from-scratch/blob/main/notebooks/07_implicit_rewards.ipynb)
#
# # 07 — Implicit rewards, made visible
#
# DPO's title claim: *your language model is secretly a reward model*. The policy trained in
# notebook 06 defines a reward for every response,
#
# $$\hat r(x, y) = \beta \log\frac{\pi_\theta(y\mid x)}{\pi_{\mathrm{ref}}(y\mid x)},$$
#
# the reward for which $\pi_\theta$ is the optimal KL-constrained policy (up to $\beta\log Z(x)$,
# which depends on the prompt only and cancels whenever two responses to the same prompt are
# compared). This notebook looks at that reward from every side: during training (chosen and
# rejected separately), as a distribution of margins, against the ground-truth reward, token by
# token over the text, interactively, and across $\beta$ — the reward-vs-KL frontier of the paper's
# Fig. 2, with best-of-$N$ sampling from the SFT model as a reference curve.

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
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import torch

from helpers import checks, viz
from helpers.corpus import GOODHART_WORD, NEGATIVE_WORDS, OPINION_VERBS, POSITIVE_WORDS
from helpers.evaluate import evaluate_policy, sample_policy
from helpers.implicit import (
    bon_kl_bound,
    implicit_vs_true,
    pair_implicit_rewards,
    ranking_accuracy,
    response_token_rewards,
    token_implicit_rewards_from_logits,
    token_reward_table,
)
from helpers.optimum import format_fraction, fraction_of_optimum
from helpers.pairs import get_preference_pairs, response_ended
from helpers.profiles import dpo_sizes
from helpers.runs import best_of_n_curve, beta_sweep, load_or_train_dpo, make_dpo_config, optimum_curve, split_pairs
from helpers.world import get_prompts, get_reward_fn, load_sft_model, load_tokenizer, start_notebook

world, device = start_notebook(seed=0)  # quiet transformers, seed, profile (DPO_PROFILE), device, threads
SIZES = dpo_sizes(world.profile)
tokenizer = load_tokenizer(world)
ref_model = load_sft_model(world, device=device)
reward_fn = get_reward_fn(world, device=device)
train_pairs, held_out_pairs = split_pairs(get_preference_pairs(world), held_out_fraction=0.1, seed=0)
config = make_dpo_config(world)
beta = config.beta
# notebook 06's run, from the cache (trained here if it is missing)
policy, metrics = load_or_train_dpo(world, config, train_pairs, tokenizer, ref_model, device=device)
print(f"profile {world.profile}; policy: beta = {beta}, {len(metrics)} steps; "
      f"{len(held_out_pairs)} held-out pairs")


# %% [markdown]
# ## 1. The implicit reward of a response
#
# ### Exercise 1 — `implicit_reward`
#
# Given summed log-probs of responses under the policy and the reference, return $\hat r$ for each.

# %%
def implicit_reward(policy_logps, ref_logps, beta):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_implicit_reward(implicit_reward)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def implicit_reward(policy_logps, ref_logps, beta):
    return beta * (policy_logps - ref_logps)


print(checks.check_implicit_reward(implicit_reward))

# %% [markdown]
# ## 2. Chosen and rejected, separately, over training
#
# The training metrics `rewards/chosen` and `rewards/rejected` are the batch means of
# $\hat r(x, y_w)$ and $\hat r(x, y_l)$; `rewards/margins` is their difference.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
viz.plot_chosen_rejected(metrics, smooth=5, ax=axes[0])
steps = [m["step"] for m in metrics]
axes[1].plot(steps, [m["logps/chosen"] for m in metrics], color="C0", label="log pi(y_w | x)")
axes[1].plot(steps, [m["logps/rejected"] for m in metrics], color="C3", label="log pi(y_l | x)")
axes[1].set_xlabel("step")
axes[1].set_ylabel("summed log-prob (nats)")
axes[1].set_title("policy log-probs of the batch's responses")
axes[1].legend()
plt.tight_layout()
plt.show()
last = metrics[-10:]
print("last 10 steps: " + ", ".join(f"{k} {np.mean([m[k] for m in last]):+.3f}"
                                    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins")))

# %% [markdown]
# The margin grows — that is all the loss asks for, since it depends on $\hat r(y_w) - \hat r(y_l)$
# only. But the chosen reward often **falls** too, below zero: the policy makes the preferred
# responses of its training data *less* likely than the SFT model did. This is widely observed in
# DPO training (e.g. Pal et al. 2024, Rafailov et al. 2024), and there is no contradiction:
#
# * **The loss is blind to the sum.** Raising $\log\pi(y_w)$ and lowering $\log\pi(y_l)$ are worth
#   the same to it, and lowering a probability is easy: there are many ways to do it.
# * **Chosen and rejected responses are alike.** Both are samples of the same SFT model for the
#   same prompt; they share words, structure and most tokens' contexts. A gradient step that pushes
#   $y_l$ down also pushes its look-alike $y_w$ down, just less.
# * **Probability goes elsewhere.** The policy moves mass towards responses that are *better than
#   both* (more positive words, fewer negative ones), which appear in no pair. The training
#   responses are typical SFT samples; the policy drifts away from typical, and all of them lose
#   likelihood. The ground-truth reward of the policy's own samples (notebook 06) is what rises.
#
# ## 3. The margin distribution and held-out ranking accuracy
#
# On pairs whose prompts were never trained on: how often does the implicit reward rank the
# chosen response above the rejected one?

# %%
held = pair_implicit_rewards(policy, ref_model, tokenizer, held_out_pairs, beta, config.max_length,
                             config.max_prompt_length)
n_train_check = min(len(held_out_pairs), len(train_pairs))
seen = pair_implicit_rewards(policy, ref_model, tokenizer, train_pairs.select(range(n_train_check)), beta,
                             config.max_length, config.max_prompt_length)
acc_held = ranking_accuracy(held["chosen"], held["rejected"])
acc_seen = ranking_accuracy(seen["chosen"], seen["rejected"])
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
viz.plot_margin_histogram(seen["margins"], ax=axes[0], title="training pairs")
viz.plot_margin_histogram(held["margins"], ax=axes[1], title="held-out pairs")
plt.tight_layout()
plt.show()
print(f"ranking accuracy: training pairs {acc_seen:.3f}, held-out pairs {acc_held:.3f} "
      f"({len(held_out_pairs)} pairs; 0.5 = chance)")

# %% [markdown]
# ## 4. Implicit reward vs ground-truth reward
#
# Every held-out response has a ground-truth reward (the pairs were ranked by it). Plotting the
# implicit reward against it asks: did DPO recover the reward it only saw through comparisons?

# %%
# each held-out response once: a prompt's k samples make up to k(k-1)/2 pairs, so a response stands in
# several pairs, and counting it each time would weigh it (and its prompt) several times over
once = {}
for side in ("chosen", "rejected"):
    for key, imp, tr in zip(zip(held_out_pairs["prompt"], held_out_pairs[side]), held[side],
                            held_out_pairs[f"{side}_reward"]):
        once.setdefault(key, (imp, tr))
implicit, true = (np.array(v) for v in zip(*once.values()))
print(f"{2 * len(held_out_pairs)} responses in {len(held_out_pairs)} held-out pairs, {len(once)} distinct")
stats = implicit_vs_true(implicit, true)
viz.plot_implicit_vs_true(implicit, true, title="held-out responses")
plt.show()
print(f"{stats['n']} responses: Pearson {stats['pearson']:.3f}, Spearman {stats['spearman']:.3f}, "
      f"pairwise order agreement {stats['pairwise_accuracy']:.3f}")
gap = np.asarray(held_out_pairs["chosen_reward"]) - np.asarray(held_out_pairs["rejected_reward"])
big = gap > np.median(gap)
print(f"ranking accuracy on the held-out pairs with the larger true-reward gaps: "
      f"{ranking_accuracy(held['chosen'][big], held['rejected'][big]):.3f}, smaller gaps: "
      f"{ranking_accuracy(held['chosen'][~big], held['rejected'][~big]):.3f}")


# %% [markdown]
# The correlation is positive but far from 1, for reasons worth knowing: the implicit reward is
# defined only up to the per-prompt constant $\beta\log Z(x)$, so comparisons *across* prompts mix
# in a term that has nothing to do with the response; it also carries the policy's other changes
# (length, EOS, fluency); and it was fitted on a few thousand comparisons whose labels are certain but
# often near-ties (the higher of two close rewards always wins: a label that says "better" without
# saying by how little, notebook 09). Pairs whose ground-truth rewards differ a lot are ranked
# correctly more often than near-ties.
#
# ## 5. Token by token
#
# $\log\pi(y\mid x)$ is a sum over tokens, so the implicit reward is too:
#
# $$\hat r(x, y) = \sum_t \beta\Big(\log\pi_\theta(y_t\mid x, y_{<t}) - \log\pi_{\mathrm{ref}}(y_t\mid x, y_{<t})\Big).$$
#
# Each term is the credit the policy gives one token in its context: positive where DPO raised the
# token's probability, negative where it lowered it. Rafailov et al. (2024, *From $r$ to $Q^*$*)
# show that DPO, trained on whole responses, learns exactly such a token-level credit assignment.
#
# ### Exercise 2 — per-token implicit rewards
#
# Write `token_implicit_rewards(policy_logits, ref_logits, labels, beta)` for logits $(B, T, V)$ and
# labels $(B, T)$ with $-100$ on the prompt and padding: return $(B, T-1)$, zero where not scored.

# %%
def token_implicit_rewards(policy_logits, ref_logits, labels, beta):
    # YOUR CODE HERE: (B, T-1) rewards, zero where a token is not scored
    raise NotImplementedError


checks.check_token_implicit_rewards(token_implicit_rewards)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def token_implicit_rewards(policy_logits, ref_logits, labels, beta):
    labels = labels[:, 1:]
    mask = labels != -100
    safe = labels.masked_fill(~mask, 0).unsqueeze(2)
    policy_logps = torch.gather(torch.log_softmax(policy_logits[:, :-1].float(), -1), 2, safe).squeeze(2)
    ref_logps = torch.gather(torch.log_softmax(ref_logits[:, :-1].float(), -1), 2, safe).squeeze(2)
    return beta * (policy_logps - ref_logps) * mask


print(checks.check_token_implicit_rewards(token_implicit_rewards))

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# `helpers.implicit.token_implicit_rewards_from_logits` does the same.
#
# </details>

# %% [markdown]
# The held-out chosen and rejected responses, coloured token by token (green: the policy raised
# the token's probability; red: lowered; the right column is the sum, $\hat r$). The ⏎ is the EOS.

# %%
prompts_seen, shown_pairs = set(), []  # one pair per prompt (up to six): every response shown is a different one
for i, prompt in enumerate(held_out_pairs["prompt"]):
    if prompt not in prompts_seen and len(shown_pairs) < 6:
        prompts_seen.add(prompt)
        shown_pairs.append(i)
n_show = len(shown_pairs)
held_ended = {side: response_ended(held_out_pairs, side) for side in ("chosen", "rejected")}  # False: cut (gpt2)
rows = response_token_rewards(policy, ref_model, tokenizer,
                              [held_out_pairs["prompt"][i] for i in shown_pairs] * 2,
                              [held_out_pairs["chosen"][i] for i in shown_pairs]
                              + [held_out_pairs["rejected"][i] for i in shown_pairs],
                              beta, config.max_length, config.max_prompt_length,
                              ended=[held_ended[side][i] for side in ("chosen", "rejected") for i in shown_pairs])
order = [i for pair in zip(range(n_show), range(n_show, 2 * n_show)) for i in pair]  # chosen, rejected, ...
viz.plot_token_heatmap([rows[i] for i in order], title=f"held-out pairs of {n_show} prompts: chosen (odd rows) and "
                       "rejected (even rows)")
plt.show()
print("sums equal the sequence-level implicit rewards:",
      np.allclose([r["total"] for r in rows],
                  np.concatenate([held["chosen"][shown_pairs], held["rejected"][shown_pairs]]), atol=1e-4))

# %% [markdown]
# Single responses are noisy. Averaged over many tokens, a clear picture appears: below, the
# per-token implicit reward of each distinct token, averaged over every occurrence in the policy's
# own samples and the held-out responses.

# %%
# NBVAL_IGNORE_OUTPUT
prompts = get_prompts(world, world.eval_split, n=SIZES["n_eval_prompts"], seed=2, tokenizer=tokenizer)
samples = sample_policy(policy, tokenizer, prompts, SIZES["samples_per_prompt"], world.max_new_tokens, seed=0,
                        progress=False)
many = response_token_rewards(policy, ref_model, tokenizer,
                              samples["prompt"] + list(held_out_pairs["prompt"]) * 2,
                              samples["response"] + list(held_out_pairs["chosen"]) + list(held_out_pairs["rejected"]),
                              beta, config.max_length, config.max_prompt_length,
                              ended=samples["ended"] + held_ended["chosen"] + held_ended["rejected"])
table = token_reward_table(many, min_count=10)
fmt = lambda d: f"{d['token']!r:>16} {d['mean']:+.3f} ({d['count']})"
print(f"{'raised most':>30}   |   {'lowered most':>30}")
for hi, lo in zip(table[:12], table[::-1][:12]):
    print(f"{fmt(hi):>30}   |   {fmt(lo):>30}")

# the same credits grouped by what the token is
groups = {"positive opinion words": set(POSITIVE_WORDS) | {w for w, g in OPINION_VERBS.items() if g > 0},
          "negative opinion words": set(NEGATIVE_WORDS) | {w for w, g in OPINION_VERBS.items() if g < 0},
          f'"{GOODHART_WORD}"': {GOODHART_WORD}, '"!"': {"!"}, "EOS": {"<|endoftext|>"}}
credit = {g: [] for g in [*groups, "everything else"]}
for row in many:
    for tok, value in zip(row["tokens"], row["rewards"]):
        group = next((g for g, words in groups.items() if tok.strip() in words), "everything else")
        credit[group].append(value)
print()
for g, values in credit.items():
    if values:
        v = np.asarray(values)
        se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
        print(f"{g:>24}: mean credit {v.mean():+.3f} ± {se:.3f} over {len(v)} tokens")

# %% [markdown]
# How to read the numbers above. The grouped means are the robust summary: over thousands of
# tokens, compare the credit DPO gives to positive opinion words, to negative ones, and to
# everything else. The top and bottom of the per-token table are noisier: a token's credit depends
# on its context, so plot words that often appear next to praise (or to criticism) inherit some of
# it, and tokens seen a dozen times carry a lot of sampling noise.
#
# Two kinds of token are worth a separate look, because the ground-truth reward could pay for them
# without anyone having asked: the EOS and "!" (a change of *length* and *style*: VADER boosts a
# sentence that ends in "!"), and the genre word "comedy", which VADER scores as positive -- the
# world's planted place for reward hacking. Whether DPO credited them here is read off the numbers
# above, not assumed (the cell below); what the reward really pays for, and what the trained
# policies exploit, is notebook 08's diagnosis.

# %%
# NBVAL_IGNORE_OUTPUT
for g in ('"!"', "EOS", f'"{GOODHART_WORD}"'):
    v = np.asarray(credit[g])
    if len(v) < 2:
        print(f"{g:>8}: {len(v)} occurrences in these samples and pairs -- nothing to read off here")
        continue
    mean, se = v.mean(), v.std(ddof=1) / math.sqrt(len(v))
    verdict = ("raised" if mean > 0 else "lowered") if abs(mean) > 2 * se else "neither raised nor lowered (within 2 SE of 0)"
    print(f"{g:>8}: {verdict} -- mean credit {mean:+.3f} ± {se:.3f} over {len(v)} tokens "
          f"(everything else: {np.mean(credit['everything else']):+.3f})")

# %% [markdown]
# ## 6. Browse the examples
#
# Pick a response to see its tokens coloured and the per-token values (hover a token for its
# value). The widget needs a live kernel; the static heat map above is the same picture for
# readers on GitHub.

# %%
# NBVAL_IGNORE_OUTPUT
browse = many[: SIZES["n_eval_prompts"]]  # the policy's own samples
viz.token_browser(browse)


# %% [markdown]
# ## 7. The β sweep: the reward-vs-KL frontier
#
# $\beta$ sets the price of moving away from $\pi_{\mathrm{ref}}$. Each $\beta$ gives one policy and one
# point on the paper's Fig. 2 axes: mean ground-truth reward of its samples on held-out prompts
# against $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$. The runs below are shorter than
# notebook 06's (`sweep_steps`), share one computation of the reference log-probs, and are cached.
#
# A reference curve needs no training at all: **best-of-$N$ sampling** from the SFT model — draw
# $N$ responses, keep the one with the highest reward. Its KL from $\pi_{\mathrm{ref}}$ depends on $N$
# alone (for continuous rewards without ties; ties only lower it).
#
# ### Exercise 3 — the best-of-$N$ KL, derived
#
# Let $u = F(r(y))\in[0,1]$ be the quantile of a response's reward under $\pi_{\mathrm{ref}}$: for a response
# drawn from $\pi_{\mathrm{ref}}$, $u$ is uniform. The best of $N$ draws is the one with the largest $u$, and
# $P(\max \le u) = u^N$. So what is the density of best-of-$N$ *relative to* $\pi_{\mathrm{ref}}$ at a
# response of quantile $u$, and what is the expectation of its log under best-of-$N$? Work it out on
# paper, then implement `bon_kl_bound_mine(n)` returning that KL in nats (a number for each $n$).

# %%
def bon_kl_bound_mine(n):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_bon_kl_bound(bon_kl_bound_mine)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def bon_kl_bound_mine(n):
    return math.log(n) - (n - 1) / n


print(checks.check_bon_kl_bound(bon_kl_bound_mine))
print("N:        ", list(SIZES["bon_ns"]))
print("KL bound: ", [f"{bon_kl_bound(n):.3f}" for n in SIZES["bon_ns"]])

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# $P(\max\le u)=u^N$ has density $N u^{N-1}$ on $[0,1]$, against $\pi_{\mathrm{ref}}$'s uniform 1: that ratio is
# $\pi_{\mathrm{BoN}}(y)/\pi_{\mathrm{ref}}(y)$. Its log, $\log N + (N-1)\log u$, averaged under best-of-$N$
# ($\mathbb{E}[\log u] = \int_0^1 N u^{N-1}\log u\,du = -1/N$), gives
# $\mathrm{KL} = \log N - \frac{N-1}{N}$ (Beirami et al. 2024). With ties in the reward the ratio is flatter,
# so this is an upper bound.
#
# </details>

# %%
# NBVAL_IGNORE_OUTPUT
eval_prompts = get_prompts(world, world.eval_split, n=SIZES["n_eval_prompts"], seed=0, tokenizer=tokenizer)
start = time.perf_counter()
# a sweep run takes sweep_steps x batch_size pairs: score (and train on) just those
n_sweep = min(len(train_pairs), SIZES["sweep_steps"] * config.batch_size * config.gradient_accumulation_steps)
sweep = beta_sweep(world, SIZES["sweep_betas"], train_pairs.select(range(n_sweep)), eval_prompts, reward_fn,
                   base_config=replace(config, max_steps=SIZES["sweep_steps"], lr=SIZES["sweep_lr"]), tokenizer=tokenizer,
                   ref_model=ref_model, n_samples_per_prompt=SIZES["samples_per_prompt"], device=device)
bon = best_of_n_curve(ref_model, tokenizer, eval_prompts, reward_fn, SIZES["bon_ns"], world.max_new_tokens,
                      progress=False)
sft_eval = evaluate_policy(ref_model, ref_model, tokenizer, eval_prompts, reward_fn, SIZES["samples_per_prompt"],
                           world.max_new_tokens, seed=0, progress=False)
# the optimum pi* on the same prompts (notebook 06, "How far from the optimum?")
optimum = optimum_curve(ref_model, tokenizer, eval_prompts, reward_fn, m=SIZES["optimum_samples"],
                        max_new_tokens=world.max_new_tokens, progress=False)
print(f"sweep, best-of-N and the optimum in {time.perf_counter() - start:.0f} s")

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
viz.plot_reward_kl_frontier(sweep, bon, sft_reward=sft_eval["reward_mean"], ax=axes[0], optimum=optimum,
                            xscale="symlog")
window = min(10, min(len(r["metrics"]) for r in sweep))  # one batch's loss is noisy: a moving average
for r in sweep:  # each sweep run's training curve
    losses = np.asarray([m["loss"] for m in r["metrics"]])
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    viz.plot_loss_curve(smooth, steps=np.arange(window, len(losses) + 1), ax=axes[1], label=f"beta = {r['beta']:g}",
                        title=f"the sweep's DPO loss ({window}-step moving average)")
plt.tight_layout()
plt.show()
print(f"{len(eval_prompts)} held-out prompts x {SIZES['samples_per_prompt']} samples; DPO runs of "
      f"{SIZES['sweep_steps']} steps at lr {SIZES['sweep_lr']:g}"
      + (f" (06's run: {SIZES['max_steps']} steps at lr {SIZES['lr']:g}; a shorter run at a higher lr moves "
         "each policy as far as its beta lets it within the sweep's budget)" if SIZES["sweep_lr"] != SIZES["lr"] else ""))
print(f"{'policy':>12} {'reward':>16} {'KL (nats)':>14} {'length':>7} {'EOS':>5} {'batch acc':>9} {'of pi*':>7}")
print(f"{'SFT':>12} {sft_eval['reward_mean']:+8.3f} ± {sft_eval['reward_se']:.3f} {0.0:7.2f}        "
      f"{sft_eval['length_mean']:7.1f} {sft_eval['eos_rate']:5.2f}")
for r in sweep:
    r["of_optimum"] = fraction_of_optimum(optimum, r["kl_mean"], r["reward_mean"])
    print(f"{'DPO b=' + format(r['beta'], 'g'):>12} {r['reward_mean']:+8.3f} ± {r['reward_se']:.3f} "
          f"{r['kl_mean']:7.2f} ± {r['kl_se']:.2f} {r['length_mean']:7.1f} {r['eos_rate']:5.2f} "
          f"{r['final_accuracy']:9.2f} {format_fraction(optimum, r['kl_mean'], r['reward_mean']):>7s}")
for r in bon:  # at its KL *bound*: the fraction is a lower bound for best-of-N
    r["of_optimum"] = fraction_of_optimum(optimum, r["kl_bound"], r["reward_mean"]) if r["n"] > 1 else float("nan")
    print(f"{'best-of-' + str(r['n']):>12} {r['reward_mean']:+8.3f} ± {r['reward_se']:.3f} "
          f"{'<= ' + format(r['kl_bound'], '.2f'):>14} {'':24s} {format_fraction(optimum, r['kl_bound'], r['reward_mean']) if r['n'] > 1 else '-':>7s}")
reach = max(q["kl_mean"] for q in optimum if q["reliable"])
print("'batch acc': pair accuracy on the training batches of the last 10 steps (not held out)")
print(f"'of pi*': the fraction of the optimum's reward gain over SFT at the same KL ('<=': past the estimate's reliable\n"
      f"reach, {reach:.2f} nats here, only an upper bound is known; for best-of-N, at its KL bound, a lower bound)")

# %% [markdown]
# How to read it: a method is better when its points lie higher at the same KL, and the grey curve
# is the optimum $\pi^*$ at each KL, as estimated from the SFT samples -- a curve that lies below the true
# optimum (the estimate is itself a runnable policy, notebook 09), so every "of pi*" is an upper bound. Smaller $\beta$ lets the policy go further from
# $\pi_{\mathrm{ref}}$. What this run measured (rendered from the numbers above):

# %%
# NBVAL_IGNORE_OUTPUT
from IPython.display import Markdown

lo, hi = max(sweep, key=lambda r: r["beta"]), min(sweep, key=lambda r: r["beta"])
best_bon = max((b for b in bon if b["n"] > 1), key=lambda b: b["reward_mean"])
dpo_fracs = [r["of_optimum"] for r in sweep if not math.isnan(r["of_optimum"])]
Markdown(
    f"* From $\\beta = {lo['beta']:g}$ to $\\beta = {hi['beta']:g}$ the KL went from {lo['kl_mean']:.2f} to "
    f"{hi['kl_mean']:.2f} nats ({hi['kl_mean'] / max(lo['kl_mean'], 1e-9):.1f}x) and the reward from "
    f"{lo['reward_mean']:+.3f} to {hi['reward_mean']:+.3f} (standard errors about {np.mean([r['reward_se'] for r in sweep]):.2f}).\n"
    + (f"* Where the estimate reaches ({len(dpo_fracs)} of {len(sweep)} runs), DPO got "
       + (f"{min(dpo_fracs):.0%}" if len(dpo_fracs) == 1 else f"{min(dpo_fracs):.0%}-{max(dpo_fracs):.0%}")
       + " of the optimum's reward gain for the KL it spent.\n" if dpo_fracs else "")
    + f"* Best-of-{best_bon['n']} from the SFT model reached {best_bon['reward_mean']:+.3f} within a KL bound of "
    f"{best_bon['kl_bound']:.2f} nats -- at least {best_bon['of_optimum']:.0%} of the optimum's gain there: re-ranking "
    f"SFT's own samples lies close to the optimum by construction (Beirami et al. 2024)."
)

# %% [markdown]
# The paper's Fig. 2 compares DPO with PPO, not with best-of-$N$ or with the optimum; keep both in
# mind before concluding that DPO is the most KL-efficient way to raise a reward. Notebook 08 adds
# PPO and RLOO to the same axes.
#
# ## Summary
#
# * The implicit reward $\hat r = \beta\log\pi_\theta/\pi_{\mathrm{ref}}$ is a reward model you get
#   for free: it ranks held-out pairs above chance and correlates with the ground truth.
# * During training the margin grows while chosen and rejected log-probs often both fall: the loss
#   sees only the difference, and the probability moves to responses better than both.
# * Per token, it shows *what* DPO learned to favour — opinion words, and also whatever the reward
#   can be gamed with.
# * $\beta$ sets how far the policy may move (KL); best-of-$N$ from SFT is the baseline every point
#   should beat — in our tiny world, it does better than short DPO runs.
#
# Next, **08**: RLHF with a learned reward model and PPO — the pipeline DPO replaces.
