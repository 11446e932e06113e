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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dpo-course/dpo-from-scratch/blob/main/notebooks/01_preferences_bradley_terry.ipynb)
#
# # 01 — Preferences and the Bradley-Terry model
#
# RLHF learns from **comparisons**: shown two responses to the same prompt, a person says which one
# is better. This notebook is about the model that turns such comparisons into numbers — the
# Bradley-Terry model — and about RLHF's first learned component, the **reward model**, fitted to
# comparisons with it. DPO (notebook 03) will reuse exactly this likelihood.

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

# %% [markdown]
# ## Where preferences sit in the RLHF pipeline
#
# The classic pipeline (InstructGPT; the DPO paper's Section 3):
#
# 1. **base model** — a pretrained language model;
# 2. **SFT** — fine-tune it on good examples of the task; this is $\pi_{\mathrm{ref}}$ (notebook 05);
# 3. **pairs** — sample two responses $y_1, y_2 \sim \pi_{\mathrm{ref}}(\cdot\mid x)$ for many prompts $x$;
# 4. **human ratings** — a person marks the preferred one: $y_w \succ y_l$ ("winner", "loser");
# 5. **reward model** — fit $r_\phi(x,y)$ to the ratings (this notebook);
# 6. **RL (PPO)** — maximise $r_\phi$ with a KL penalty to $\pi_{\mathrm{ref}}$ (notebooks 02 and 08).
#
# DPO replaces steps 5 and 6 with one loss on the pairs. Either way the data is a list of records
# `{"prompt": x, "chosen": y_w, "rejected": y_l}`. In this course the "human" of step 4 is a
# ground-truth sentiment scorer (VADER in the `tiny` profile), so we can always check what was learned.

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from helpers import checks, toy, viz
from helpers.losses import bradley_terry_loss

torch.set_printoptions(precision=4, sci_mode=False)


# %% [markdown]
# ## The Bradley-Terry model
#
# Give every response a real-valued score (a reward) $r(y)$. Bradley and Terry (1952) model the
# probability that $y_w$ beats $y_l$ as
#
# $$P(y_w \succ y_l) = \frac{e^{r(y_w)}}{e^{r(y_w)} + e^{r(y_l)}}.$$

# %% [markdown]
# ### Exercise 1 — the preference probability
#
# Implement `bradley_terry_prob(r_w, r_l)` for tensors of rewards. The checker tries negative
# rewards and rewards of ±800, where $e^{800}$ overflows: the fraction as written gives `nan`. Rewrite
# it first, on paper, so that the two rewards appear only through one combination of them -- which
# one, and which standard function of it is the result? Three properties of the model should then
# be visible at a glance: what equal rewards give, what the two orders sum to, and what adding a
# constant to every reward changes.

# %%
def bradley_terry_prob(r_w, r_l):
    # YOUR CODE HERE: the probability that y_w is preferred to y_l
    raise NotImplementedError


checks.check_bradley_terry_prob(bradley_terry_prob)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def bradley_terry_prob(r_w, r_l):
    return torch.sigmoid(r_w - r_l)


checks.check_bradley_terry_prob(bradley_terry_prob)

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# Divide numerator and denominator by $e^{r(y_w)}$:
# $$P(y_w \succ y_l) = \frac{1}{1 + e^{-(r(y_w) - r(y_l))}} = \sigma\big(r(y_w) - r(y_l)\big).$$
# Equal rewards give a coin flip ($\sigma(0)=\tfrac12$); the two orders sum to one
# ($\sigma(d)+\sigma(-d)=1$); and only the **difference** of rewards matters, so adding a constant to
# every reward changes nothing. `torch.sigmoid` is computed without overflow at $\pm 800$.
#
# </details>

# %% [markdown]
# In the toy world of notebooks 02–03 — six one-word reviews with known rewards:

# %%
# NBVAL_CHECK_OUTPUT
world = toy.make_toy()
r = world.r
good, bad = 1, 4
print("rewards:", dict(zip(world.responses, [round(v, 2) for v in r.tolist()])))
print(f"P(good > bad) = sigma({r[good].item():.1f} - ({r[bad].item():.1f})) = {bradley_terry_prob(r[good], r[bad]).item():.4f}")
print(f"P(bad > good) = {bradley_terry_prob(r[bad], r[good]).item():.4f}   (the two sum to 1)")
print(f"P(good > good) = {bradley_terry_prob(r[good], r[good]).item():.4f}")
print(f"P(good > bad) after adding 100 to every reward = {bradley_terry_prob(r[good] + 100, r[bad] + 100).item():.4f}")

# %% [markdown]
# ## Simulating preferences from known rewards
#
# Let a simulated rater compare random pairs of responses and pick the winner with the Bradley-Terry
# probability (`toy.sample_preferences`). The empirical win rates match the model:

# %%
# NBVAL_CHECK_OUTPUT
chosen, rejected = toy.sample_preferences(r, 20_000, seed=0)
wins = toy.count_wins(chosen, rejected, len(r))  # wins[i, j] = times y_i beat y_j
print(f"{len(chosen)} simulated comparisons; the first five (winner > loser):")
for c, l in zip(chosen[:5].tolist(), rejected[:5].tolist()):
    print(f"   {world.responses[c]:>6} > {world.responses[l]}")
for i, j in [(0, 1), (1, 4), (2, 3)]:
    rate = wins[i, j] / (wins[i, j] + wins[j, i])
    print(f"{world.responses[i]:>6} vs {world.responses[j]:<5}: won {rate.item():.2f} of "
          f"{int(wins[i, j] + wins[j, i])} comparisons; Bradley-Terry says {bradley_terry_prob(r[i], r[j]).item():.2f}")


# %% [markdown]
# ## Fitting rewards by maximum likelihood
#
# Now forget $r$ and estimate scores $s(y)$ from the comparisons alone, by **maximum likelihood**:
# the scores under which Exercise 1's model makes the recorded outcomes most probable. A product
# over thousands of pairs underflows, so one minimises the mean **negative log-likelihood** instead.

# %% [markdown]
# ### Exercise 2 — the Bradley-Terry loss
#
# Write down the likelihood of one recorded comparison "$y_w$ beat $y_l$" under scores $s$, take the
# negative log, and implement `bt_loss(chosen_scores, rejected_scores)`: that loss for each pair,
# shape `(B,)`. The checker tries score margins of $\pm 200$: make sure a pair ranked very wrongly
# costs a large *finite* loss, not `inf`.

# %%
def bt_loss(chosen_scores, rejected_scores):
    # YOUR CODE HERE: one loss per pair, shape (B,)
    raise NotImplementedError


checks.check_bt_loss(bt_loss)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def bt_loss(chosen_scores, rejected_scores):
    return -F.logsigmoid(chosen_scores - rejected_scores)


checks.check_bt_loss(bt_loss)

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# One comparison has likelihood $\sigma\big(s(y_w)-s(y_l)\big)$, so its loss is $-\log\sigma\big(s(y_w)-s(y_l)\big)$
# (the data's likelihood is the product over pairs: its mean negative log is the mean of these).
# `torch.log(torch.sigmoid(x))` underflows to $\log 0=-\infty$ once $x<-88$ in float32;
# `F.logsigmoid(x)` computes the same without it.
#
# </details>

# %% [markdown]
# The loss is `helpers.losses.bradley_terry_loss` (one value per pair; the fit takes the mean):
#
# $$\mathcal{L}(s) = -\frac{1}{N}\sum_{(y_w,y_l)} \log\sigma\big(s(y_w)-s(y_l)\big).$$
#
# Fit the six scores with L-BFGS on this loss (`toy.fit_bt_rewards`; L-BFGS is a quasi-Newton optimiser: it
# steps along gradients rescaled by a curvature estimate built from the last few steps), starting from all zeros:

# %%
# NBVAL_CHECK_OUTPUT
def rounded(t, digits=2):
    return [round(v, digits) + 0.0 for v in t.tolist()]  # + 0.0 turns -0.0 into 0.0


s = toy.fit_bt_rewards(chosen, rejected, len(r))
print("true r       :", rounded(r))
print("fitted s     :", rounded(s))
print("s - r        :", rounded(s - r))
print(f"max |(s - r) - mean(s - r)| = {((s - r) - (s - r).mean()).abs().max().item():.2f}")
print(f"NLL of fitted s = {bt_loss(s[chosen], s[rejected]).mean().item():.4f}, "
      f"of the true r = {bt_loss(r[chosen], r[rejected]).mean().item():.4f}")

# %%
viz.plot_true_vs_fitted(r, s, labels=world.responses, title="Bradley-Terry maximum likelihood, 20k comparisons")
plt.show()

# %% [markdown]
# The fitted scores are the true rewards **shifted by a constant** ($s - r \approx$ the same number
# for every response), plus sampling noise. The constant cannot be learned: adding $c$ to every
# score changes no difference $s(y_w)-s(y_l)$, hence no probability and no likelihood. The data only
# determine rewards **up to an additive constant**. Here the fit kept the mean of its starting point:
# the gradient of $\mathcal{L}$ sums to zero over the responses. Start elsewhere and see:

# %%
# NBVAL_CHECK_OUTPUT
s_from_5 = toy.fit_bt_rewards(chosen, rejected, len(r), init=torch.full((6,), 5.0, dtype=torch.float64))
print(f"mean fitted score from init 0: {abs(s.mean().item()):.4f}; from init 5: {s_from_5.mean().item():.4f}")
print(f"NLL: {bt_loss(s[chosen], s[rejected]).mean().item():.4f} vs {bt_loss(s_from_5[chosen], s_from_5[rejected]).mean().item():.4f}")
print(f"max |(s_from_5 - 5) - s| = {((s_from_5 - 5) - s).abs().max().item():.4f}")
for c in (-3.0, 0.0, 42.0):
    print(f"shift every score by {c:+5.1f}: NLL = {bt_loss(s[chosen] + c, s[rejected] + c).mean().item():.4f}")

# %% [markdown]
# ### Exercise 3 — what the maximum looks like
#
# Differentiate the summed log-likelihood $\sum_{(y_w,y_l)}\log\sigma\big(s(y_w)-s(y_l)\big)$ with respect to
# one score $s(k)$, using $\frac{d}{dx}\log\sigma(x) = 1-\sigma(x)$. Every comparison response $k$ took part in
# contributes; read the result as *wins $k$ had* minus *wins the scores predict for $k$*. At the
# maximum the gradient is zero, so the fitted scores reproduce every response's win count exactly
# (a *moment condition*) -- whatever the true rewards were.
#
# Implement `win_gap(scores, chosen, rejected)`: `scores` of shape `(K,)`, `chosen` and `rejected`
# index tensors of shape `(N,)` (the winner and the loser of each comparison); return `(K,)`.
# (`torch.bincount` and `Tensor.index_add_` count per response.)

# %%
def win_gap(scores, chosen, rejected):
    # YOUR CODE HERE: (K,) observed wins minus expected wins
    raise NotImplementedError


checks.check_win_gap(win_gap)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def win_gap(scores, chosen, rejected):
    p_win = torch.sigmoid(scores[chosen] - scores[rejected])  # P(the recorded winner wins), (N,)
    observed = torch.bincount(chosen, minlength=scores.shape[0]).to(scores.dtype)
    # a winner was expected to win p_win times, a loser 1 - p_win times
    expected = torch.zeros_like(scores).index_add_(0, chosen, p_win).index_add_(0, rejected, 1 - p_win)
    return observed - expected


checks.check_win_gap(win_gap)

# %% [markdown]
# At the fitted scores, at the true rewards, and at the true rewards stretched by 2 (the course's
# `toy.bt_win_gap`, so this runs whatever your answer):

# %%
# NBVAL_CHECK_OUTPUT
for label, scores in (("fitted s", s), ("true r", r), ("2 r", 2 * r)):
    gap = toy.bt_win_gap(scores, chosen, rejected)
    print(f"{label:>8}: wins - expected wins = {rounded(gap, 1)}")
print(f"observed wins per response: {toy.count_wins(chosen, rejected, len(r)).sum(1).int().tolist()}")

# %% [markdown]
# ### Exercise 4 — the accuracy ceiling
#
# Before you write code: the labels are Bradley-Terry coin flips. What fraction of pairs can the
# *true* rewards predict correctly? Can a reward model trained on these labels reach accuracy 1.0?
#
# For one pair $(i, j)$ the best any scorer can do is to predict the likelier winner; it is then
# right with probability $\max\big(\sigma(r_i-r_j), \sigma(r_j-r_i)\big)$. Implement
# `bayes_accuracy(r, chosen, rejected)`, the mean of that over the pairs (shape `()`); the labels'
# order must not matter.

# %%
def bayes_accuracy(r, chosen, rejected):
    # YOUR CODE HERE: the best expected pair accuracy, shape ()
    raise NotImplementedError


checks.check_bayes_accuracy(bayes_accuracy)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def bayes_accuracy(r, chosen, rejected):
    return torch.sigmoid((r[chosen] - r[rejected]).abs()).mean()


checks.check_bayes_accuracy(bayes_accuracy)

# %% [markdown]
# On 20,000 fresh comparisons: the accuracy of the fitted scores, of the true rewards, and the
# ceiling (`toy.bayes_accuracy`). The ceiling is an *expected* accuracy: on one finite draw of coin
# flips the true rewards' accuracy scatters around it by its standard error, either side -- so each
# accuracy is printed with its SE, and its distance from the ceiling in SEs. A pair accuracy well
# below 1 is not a failed reward model when the labels are noisy; in the text pairs below, whose
# labels are certain, the ceiling is 1.

# %%
# NBVAL_CHECK_OUTPUT
test_c, test_l = toy.sample_preferences(r, 20_000, seed=1)
ceiling = toy.bayes_accuracy(r, test_c, test_l).item()
for label, scores in (("fitted s", s), ("true r", r)):
    acc = (scores[test_c] > scores[test_l]).double().mean().item()
    se = (acc * (1 - acc) / len(test_c)) ** 0.5
    print(f"accuracy of {label:>8} on fresh labels: {acc:.3f} ± {se:.3f} ({(acc - ceiling) / se:+.1f} SE from the ceiling)")
print(f"ceiling sigma(|r_i - r_j|) averaged over the pairs: {ceiling:.3f} (an expected accuracy)")

# %% [markdown]
# ### Two things the comparisons cannot tell you
#
# **The zero.** The toy's rewards happen to average almost 0, so the shift above is hard to see.
# Give them a mean of 3: the same raters (the same comparisons, since only differences matter) and
# the same fit return the same scores -- now visibly 3 below the truth, for every response.
#
# **The scale, when labels are certain.** If the better response *always* wins -- as in the text
# pairs below, where the review with the higher sentiment score is always chosen -- the likelihood
# keeps rising as the scores spread apart: the maximum-likelihood scale is infinite, and where a fit
# stops is set by the optimiser, not by the data. Only the order is learned.

# %%
# NBVAL_CHECK_OUTPUT
chosen_3, rejected_3 = toy.sample_preferences(r + 3.0, 20_000, seed=0)
s_3 = toy.fit_bt_rewards(chosen_3, rejected_3, len(r))
print("true r + 3   :", rounded(r + 3.0))
print("fitted s     :", rounded(s_3))
print("s - (r + 3)  :", rounded(s_3 - (r + 3.0)))
c_det, l_det = toy.deterministic_preferences(r)  # every pair, the better response always wins
for steps in (10, 30, 100):
    s_det = toy.fit_bt_rewards(c_det, l_det, len(r), steps=steps)
    print(f"certain labels, {steps:3d} L-BFGS steps: spread max - min = {(s_det.max() - s_det.min()).item():6.1f}, "
          f"order right: {bool((s_det.argsort() == r.argsort()).all())}")

# %% [markdown]
# Keep this in mind: it is why, in notebook 03, the *partition function* $Z(x)$ — the normalising
# constant of the optimal policy, derived in notebook 02, which enters the reward as the additive
# constant $\beta\log Z(x)$ per prompt — disappears from the DPO loss.

# %% [markdown]
# ## A reward model for text
#
# With text we cannot list every response and give it its own score: there are far too many. A
# **reward model** computes the score from the text with a neural network. Ours is RLHF's standard
# design, scaled down: a small GPT-2 backbone reads the review, and a linear head turns the hidden
# state at the **last token** (the only position that has attended to the whole text) into a scalar:
#
# $$s_\phi(y) = w^\top h_\phi(y)_{\text{last}} + b.$$
#
# It is trained with the same loss, $-\log\sigma\big(s_\phi(y_w)-s_\phi(y_l)\big)$, on pairs of movie
# reviews from the course's task world, where the preferred review is the one the ground-truth
# sentiment scorer rates higher (`helpers.reward_model`).

# %%
from helpers import reward_model as rm
from helpers import world as W

task = W.get_world()  # the tiny profile here (see notebook 00)
tokenizer = W.load_tokenizer(task)
train_pairs, test_pairs = rm.make_world_pairs(task, n_train=4000, n_test=1000, seed=0)

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(train_pairs)} training pairs, {len(test_pairs)} held-out pairs (reviews from different splits)")
print(f"every pair is ranked by the reward: {all(p['chosen_reward'] > p['rejected_reward'] for p in train_pairs + test_pairs)}")

# %%
for p in train_pairs[:3]:
    print(f"chosen   ({p['chosen_reward']:+.2f}): {p['chosen']}")
    print(f"rejected ({p['rejected_reward']:+.2f}): {p['rejected']}\n")

# %% [markdown]
# The model: 2 transformer layers, 64 wide, trained from scratch. (InstructGPT starts its reward
# model from the SFT model; `rm.build_reward_model(backbone=path)` does that too, but a fresh tiny
# backbone is enough for sentiment and keeps this notebook standalone.)

# %%
# NBVAL_CHECK_OUTPUT
reward_model = rm.build_reward_model(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, seed=0)
n_params = sum(p.numel() for p in reward_model.parameters())
print(f"reward model: {reward_model.config.n_layer} layers x {reward_model.config.n_embd} wide, "
      f"{n_params / 1e3:.0f} k parameters")

# %%
# NBVAL_IGNORE_OUTPUT
history = rm.train_reward_model(reward_model, tokenizer, train_pairs, steps=300, batch_size=32, lr=2e-3, seed=0)
print(f"300 steps of 32 pairs in {history['seconds']:.0f} s")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
viz.plot_loss_curve(history["loss"], ax=axes[0], steps=history["step"], xlabel="training step",
                    ylabel="Bradley-Terry loss (nats per pair)", title="reward model training (mean of 10 steps)")
axes[0].axhline(math.log(2), color="gray", ls="--", lw=1, label="ln 2 (chance)")
axes[0].legend()
viz.plot_loss_curve(history["accuracy"], ax=axes[1], steps=history["step"], xlabel="training step",
                    ylabel="pair accuracy (training batches)", title="fraction of pairs ranked right")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Held-out pair accuracy
#
# The number that matters: on pairs of reviews the model never saw, how often does it score the
# preferred review higher?

# %%
# NBVAL_IGNORE_OUTPUT
result = rm.evaluate_pairs(reward_model, tokenizer, test_pairs)
print(f"held-out pair accuracy = {result['accuracy']:.3f}, held-out loss = {result['loss']:.3f} nats per pair")

# %%
# NBVAL_CHECK_OUTPUT
print(f"held-out pair accuracy above 0.80: {result['accuracy'] > 0.80}")
print(f"held-out loss below ln 2: {result['loss'] < math.log(2)}")

# %%
viz.plot_score_separation(result["chosen_scores"], result["rejected_scores"],
                          title="reward model on 1000 held-out pairs")
plt.show()

# %% [markdown]
# Which pairs does it get wrong? Split the held-out pairs by how far apart the ground-truth scorer
# puts their two reviews. (Pairs closer than 0.05 were never made: `make_review_pairs` skips such
# near-ties, which carry almost no signal.) Two different questions: where is the error *rate*
# highest, and where do most of the errors fall?

# %%
gaps = torch.tensor([p["chosen_reward"] - p["rejected_reward"] for p in test_pairs])
right = result["chosen_scores"] > result["rejected_scores"]
n_wrong = int((~right).sum())
print(f"smallest gap among the pairs: {gaps.min().item():.3f}; {n_wrong} of {len(gaps)} pairs ranked wrong")
for lo, hi in [(0.05, 0.2), (0.2, 0.5), (0.5, 2.1)]:
    sel = (gaps >= lo) & (gaps < hi)
    print(f"ground-truth reward gap in [{lo:.2f}, {hi:.1f}): {int(sel.sum()):>4} pairs, "
          f"accuracy {right[sel].float().mean().item():.2f}, share of all errors "
          f"{int((sel & ~right).sum()) / max(n_wrong, 1):.0%}")

# %% [markdown]
# Does the model read sentiment? Score some reviews it has never seen:

# %%
mine = ["the acting was superb. i loved the music. a wonderful film.",
        "the plot was fine. the music was okay.",
        "the script was dull and the ending was awful. what a mess."]
for text, score in zip(mine, rm.score_texts(reward_model, tokenizer, mine).tolist()):
    print(f"{score:+6.2f}  {text}")

# %% [markdown]
# Remember the zero and the scale: the scores' zero is arbitrary (only differences were trained),
# and so is their spread (the labels were certain -- the higher sentiment score always won -- so the
# fit could always gain by spreading further, as the toy showed). One score above means nothing
# alone — only "this review scores higher than that one". Notebook 08 normalises its reward model
# to mean 0 and standard deviation 1 on SFT samples for exactly this reason.
#
# This is the first half of RLHF: a reward model learned from comparisons. Notebook 08 trains
# RLHF's reward model the same way, on the very preference pairs DPO learns from (so the two methods
# see the same data), and then runs PPO against it.

# %% [markdown]
# ## Summary
#
# * Bradley-Terry: $P(y_w\succ y_l)=\sigma(r(y_w)-r(y_l))$ — only reward differences matter.
# * Maximum likelihood (`bradley_terry_loss`) recovers rewards from comparisons **up to an additive constant**.
# * A reward model is that fit with a neural network in place of a table; ours ranks held-out review
#   pairs correctly most of the time.
#
# **Next (02):** what RLHF does with a reward — the KL-regularised objective and its optimal policy.
