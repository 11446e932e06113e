# ---
# jupyter:
#   jupytext:
#     formats: ipynb,src//py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dpo-course/dpo-from-scratch/blob/main/notebooks/05_sft_reference.ipynb)
#
# # 05 — SFT: the reference model $\pi_{\mathrm{ref}}$
#
# Every quantity in DPO is measured **relative to a reference policy**: the implicit reward is
# $\hat r(x,y) = \beta\log\frac{\pi_\theta(y\mid x)}{\pi_{\mathrm{ref}}(y\mid x)}$ and the
# KL penalty of the RLHF objective it came from is $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$.
# Which model is $\pi_{\mathrm{ref}}$?
#
# **The supervised fine-tuned (SFT) model, the one that generated the preference data.** The paper
# (Rafailov et al. 2023, Section 4): the pipeline samples completions $y_1, y_2 \sim \pi^{\mathrm{SFT}}(\cdot\mid x)$,
# labels them with preferences, and then optimises the policy with $\pi_{\mathrm{ref}} = \pi^{\mathrm{SFT}}$.
# Two reasons:
#
# 1. **The objective.** DPO solves $\max_\pi \mathbb{E}[r] - \beta\,\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})$.
#    The KL term keeps the policy where the reward is trustworthy — where the preferences were
#    collected. That is the distribution of the model that wrote the compared responses.
# 2. **The estimate.** The loss only ever sees $\log\pi_\theta - \log\pi_{\mathrm{ref}}$ *on the
#    pairs*. If the pairs are unlikely under $\pi_{\mathrm{ref}}$ (a base model that never writes
#    reviews like them), those log-ratios are dominated by how foreign the text is rather than by
#    the preference. When no SFT model exists, the paper suggests fine-tuning on the *preferred*
#    completions first, for the same reason.
#
# This notebook trains the SFT model of our task world: next-token cross-entropy on review texts.
# It shows the run (loss curve, samples before and after) and saves the model to the cache, where
# notebooks 04-08 load it (`helpers.world.load_sft_model`, which rebuilds it when missing).

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
import copy
import itertools

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from helpers import checks, viz
from helpers.config import display_path
from helpers.evaluate import sample_policy, score_responses
from helpers.pairs import get_preference_pairs, load_pairs_stats
from helpers.profiles import SFT_DEMO_SIZES, sizes
from helpers.sft import collate_texts, tokenize_texts, train_sft
from helpers.world import (
    get_prompts,
    get_reward_fn,
    load_base_model,
    load_reviews,
    load_sft_history,
    load_sft_model,
    load_tokenizer,
    shown,
    start_notebook,
)

world, device = start_notebook(seed=0)  # quiet transformers, seed, profile (DPO_PROFILE), device, threads
SIZES = sizes(SFT_DEMO_SIZES, world.profile)  # this notebook's sizes, per profile (helpers/profiles.py)
tokenizer = load_tokenizer(world)
reward_fn = get_reward_fn(world, device=device)
print(f"profile {world.profile} on {device}; base model {shown(world.base_model)}; reward {world.reward}")
print(SIZES)

# %% [markdown]
# ## The data: plain reviews
#
# SFT needs no preferences, only text of the kind we want: reviews. Each review becomes
# `tokens(review) + [EOS]`, so the model also learns **where a review ends** — without the EOS,
# sampled responses would always run to the length limit.

# %%
# NBVAL_CHECK_OUTPUT
texts = load_reviews(world, world.sft_split)
held_out = load_reviews(world, world.eval_split)
print(f"{len(texts)} training reviews, {len(held_out)} held-out reviews")
for t in texts[:3]:
    print(" -", t)


# %% [markdown]
# ## Exercise 1 — the SFT loss
#
# The loss is the mean next-token cross-entropy over the real tokens of a padded batch. Write
# `sft_loss(logits, input_ids, attention_mask)`: logits $(B, T, V)$, right-padded `input_ids`
# $(B, T)$ and their `attention_mask`; return one number in nats per token. (The same shift as in
# notebook 04; here every real token is scored, padding is not.)

# %%
def sft_loss(logits, input_ids, attention_mask):
    # YOUR CODE HERE: one number, the loss Hugging Face's model computes itself
    raise NotImplementedError


checks.check_sft_loss(sft_loss)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def sft_loss(logits, input_ids, attention_mask):
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)  # (B, T-1)
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-100)


print(checks.check_sft_loss(sft_loss))
base = load_base_model(world, device=device).eval()
batch = collate_texts(tokenize_texts(tokenizer, texts[:8], world.sft_max_length), tokenizer.pad_token_id)
batch = {k: v.to(device) for k, v in batch.items()}
with torch.no_grad():
    out = base(**batch)  # batch carries labels: the model's own loss
ours = sft_loss(out.logits, batch["input_ids"], batch["attention_mask"])
print("equals the model's built-in loss:", torch.allclose(ours, out.loss.float(), atol=1e-5))

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# It equals the loss Hugging Face models compute themselves when given
# `labels` with $-100$ on the padding (they shift internally): the solution cell compares the two.
#
# </details>

# %% [markdown]
# ## Before: samples from the base model
#
# Held-out prompts (the first 2-8 tokens of reviews the model never trains on), and what the base
# model writes after them. In the `tiny` profile the base model is randomly initialised, so it
# writes noise; in the `gpt2` profile it is GPT-2, which writes English but not reviews.

# %%
# NBVAL_IGNORE_OUTPUT
prompts = get_prompts(world, world.eval_split, n=SIZES["n_prompts"], seed=1, tokenizer=tokenizer)
before = sample_policy(base, tokenizer, prompts, SIZES["samples_per_prompt"], world.max_new_tokens, seed=0)
before_rewards = np.array(reward_fn([p + r for p, r in zip(before["prompt"], before["response"])]))
for i in range(3):
    print(f"{before['prompt'][4 * i]!r} -> {before['response'][4 * i]!r}")

# %% [markdown]
# ## A short SFT run, live
#
# `helpers.sft.train_sft` is a plain loop: sample a batch of reviews, right-pad, cross-entropy with
# the padding masked, AdamW with warm-up and cosine decay, gradient clipping. Here it runs for a few
# dozen steps on a copy of the base model, so you can watch the loss fall; the full run (the
# `sft_steps` of the world config) is what `helpers.world.build_sft_model` does, once, and caches.

# %%
# NBVAL_IGNORE_OUTPUT
demo = copy.deepcopy(base)
demo_history = train_sft(demo, tokenizer, texts, steps=SIZES["demo_steps"], batch_size=SIZES["demo_batch_size"],
                         lr=world.sft_lr, max_length=world.sft_max_length, seed=0, log_every=5, device=device)
viz.plot_sft_history(demo_history, title=f"a short SFT run ({SIZES['demo_steps']} steps)")
plt.show()

# %% [markdown]
# ## The full SFT model, from the cache
#
# `load_sft_model` loads the model from `cache_dir()` (building it first if it is missing: a
# progress bar appears then). Its training history is saved next to it: the training loss, and the
# loss on held-out reviews, which stays close to the training loss — the model learned the language
# of reviews, it did not memorise them.

# %%
# NBVAL_IGNORE_OUTPUT
sft = load_sft_model(world, device=device)
history = load_sft_history(world)
print(f"SFT model: {display_path(world.sft_dir)}")
print(f"{history['steps'][-1]} steps; final train loss {history['final_train_loss']:.3f}, "
      f"held-out loss {history['final_eval_loss']:.3f} nats/token")
viz.plot_sft_history(history, title=f"the cached SFT run ({history['steps'][-1]} steps)")
plt.show()

# %% [markdown]
# ## After: samples from the SFT model
#
# The same prompts, sampled from $\pi^{\mathrm{SFT}}$ by pure ancestral sampling (`top_k=0`,
# `top_p=1`, temperature 1: `generate()`'s default `top_k=50` would truncate the distribution we
# later compare against), and scored by the ground-truth reward.

# %%
# NBVAL_IGNORE_OUTPUT
after = sample_policy(sft, tokenizer, prompts, SIZES["samples_per_prompt"], world.max_new_tokens, seed=0)
after_rewards = np.array(reward_fn([p + r for p, r in zip(after["prompt"], after["response"])]))
for i in range(4):
    j = 4 * i
    print(f"[{after_rewards[j]:+.2f}] {after['prompt'][j]}{after['response'][j]}")
print()
corpus_rewards = np.array(reward_fn(held_out[:500]))
print(f"held-out reviews: reward mean {corpus_rewards.mean():+.3f}, std {corpus_rewards.std():.3f}")
for name, s, r in (("base", before, before_rewards), ("SFT", after, after_rewards)):
    print(f"{name:>5} samples: reward mean {r.mean():+.3f}, std {r.std():.3f}; ends with EOS {np.mean(s['ended']):.0%}, "
          f"mean length {np.mean(s['length']):.1f} tokens")

# %% [markdown]
# The SFT model writes reviews and ends them, and its rewards spread like those of real reviews:
# it imitates reviews of every sentiment. (The base model's noise gets some reward too: VADER
# scores the opinion words it strings together, but it never ends and is not a review.) Raising that reward is DPO's job — by preferences only.
#
# ## Why the reference must be the SFT model, in numbers
#
# The preference pairs of notebook 06 are SFT samples. How likely is that text under the base
# model, compared with the SFT model? Mean log-prob per token of 200 SFT samples:

# %%
# NBVAL_IGNORE_OUTPUT
n = min(200, len(after["response_ids"]))
ids_p, ids_r = after["prompt_ids"][:n], after["response_ids"][:n]
n_tokens = np.array([len(r) for r in ids_r])
per_token = {name: (score_responses(m, ids_p, ids_r, tokenizer.pad_token_id) / n_tokens).mean()
             for name, m in (("base", base), ("SFT", sft))}
for name, v in per_token.items():
    print(f"under the {name:>4} model: {v:6.2f} nats per token")


# %% [markdown]
# Under the base model the pairs are far off-distribution. With it as $\pi_{\mathrm{ref}}$, the
# log-ratios $\log\pi_\theta/\pi_{\mathrm{ref}}$ would start huge and be about "this is a review"
# rather than "this review is better", and the KL penalty would pull the policy back towards text
# that is not reviews at all.
#
# ## From SFT samples to preference pairs
#
# The pairs DPO trains on (notebook 06) are made from SFT samples, as in the paper: for each prompt,
# $k$ samples, scored by the reward; every two samples with different rewards form a pair, the
# higher one chosen.
#
# ### Exercise 2 — pairs from scored samples
#
# Write `make_pairs(prompt, responses, rewards)` returning a list of
# `{"prompt", "chosen", "rejected"}` dicts: all $k(k-1)/2$ pairs with different rewards, chosen =
# higher reward; ties carry no preference and are dropped.

# %%
def make_pairs(prompt, responses, rewards):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_make_pairs(make_pairs)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def make_pairs(prompt, responses, rewards):
    pairs = []
    for i, j in itertools.combinations(range(len(responses)), 2):
        if rewards[i] == rewards[j]:
            continue  # a tie: no preference
        hi, lo = (i, j) if rewards[i] > rewards[j] else (j, i)
        pairs.append({"prompt": prompt, "chosen": responses[hi], "rejected": responses[lo]})
    return pairs


print(checks.check_make_pairs(make_pairs))

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# `helpers.pairs.pairs_from_samples` does the same for many prompts.
#
# </details>

# %%
# NBVAL_IGNORE_OUTPUT
k = SIZES["samples_per_prompt"]
first = make_pairs(after["prompt"][0], after["response"][:k], list(after_rewards[:k]))
for p in first[:3]:
    print(f"prompt {p['prompt']!r}\n  chosen   {p['chosen']!r}\n  rejected {p['rejected']!r}")

# %% [markdown]
# ### Exercise 3 — how many pairs will the data hold?
#
# Before building a dataset you want its size. $k$ samples give $k(k-1)/2$ two-sample pairs, but
# a reward such as VADER's is often *exactly* equal for different samples (a neutral "the film is
# set in a village." scores 0.0), and ties carry no preference. Count the pairs **without listing
# them**: how many tied pairs do $n$ samples that share one reward value make?
#
# Implement `count_pairs(rewards)` for one prompt's list of $k$ rewards; return an int.

# %%
def count_pairs(rewards):
    # YOUR CODE HERE: an int, the number of pairs make_pairs would return
    raise NotImplementedError


checks.check_count_pairs(count_pairs)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def count_pairs(rewards):
    from collections import Counter

    k = len(rewards)
    return k * (k - 1) // 2 - sum(n * (n - 1) // 2 for n in Counter(rewards).values())


print(checks.check_count_pairs(count_pairs))

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# $n$ samples sharing a value make $\binom{n}{2}$ tied pairs, so the count is
# $\binom{k}{2} - \sum_{\text{values}} \binom{n}{2}$.
#
# </details>

# %% [markdown]
# On the SFT samples above, prompt by prompt (`helpers.pairs.count_pairs`, so this runs whatever
# your answer), against `make_pairs`'s lists:

# %%
# NBVAL_IGNORE_OUTPUT
from helpers.pairs import count_pairs as course_count_pairs

n_prompts_after = len(after_rewards) // k
counted = listed = possible = 0
for i in range(n_prompts_after):
    rewards_i = [float(v) for v in after_rewards[i * k:(i + 1) * k]]
    counted += course_count_pairs(rewards_i)
    listed += len(make_pairs(after["prompt"][i * k], after["response"][i * k:(i + 1) * k], rewards_i))
    possible += k * (k - 1) // 2
print(f"{n_prompts_after} prompts x {k} samples: {possible} two-sample pairs, {possible - counted} of them tied, "
      f"{counted} preference pairs counted, {listed} listed by make_pairs")

# %% [markdown]
# The cached pairs for notebook 06 (built once from the SFT model: prompts from a split disjoint
# from the SFT texts and from the held-out prompts):

# %%
# NBVAL_IGNORE_OUTPUT
pairs = get_preference_pairs(world)
stats = load_pairs_stats(world)
print(pairs)
print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()})

# %% [markdown]
# ## Summary
#
# * $\pi_{\mathrm{ref}} = \pi^{\mathrm{SFT}}$: the model whose samples were compared. The KL to it
#   keeps the policy where the preferences say something.
# * SFT is next-token cross-entropy on in-domain text, EOS included, padding masked.
# * The SFT model and the pairs sampled from it are cached; every later notebook loads them (or
#   rebuilds them) with `load_sft_model(world)` and `get_preference_pairs(world)`.
#
# Next, **06**: the DPO training loop, from scratch.
