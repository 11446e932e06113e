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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dpo-course/dpo-from-scratch/blob/main/notebooks/03_deriving_dpo.ipynb)
#
# # 03 — Deriving DPO, every step checked in numbers
#
# Notebook 02 found the maximiser of the RLHF objective:
#
# $$\pi^*(y\mid x) = \frac{1}{Z(x)}\,\pi_{\mathrm{ref}}(y\mid x)\,\exp\!\big(r(x,y)/\beta\big).$$
#
# Direct Preference Optimization (Rafailov et al., 2023) reads this equation **backwards**: if the
# policy determines the reward, we can fit the policy to preferences directly — no reward model, no
# sampling, no RL. This notebook derives the DPO loss in four steps and checks each step with a cell
# that computes it, in the same six-response toy world as notebook 02.

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
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from helpers import checks, toy, viz
from helpers.losses import bradley_terry_loss, dpo_loss

torch.set_printoptions(precision=4, sci_mode=False)
world = toy.make_toy()
beta = 1.0


# %% [markdown]
# ## Step 1 — the reward in terms of the optimal policy
#
# Notebook 02 found the optimum $\pi^* = \pi_{\mathrm{ref}}\,e^{r/\beta}/Z$. Read it the other way round: if
# you knew $\pi^*$ (and $\pi_{\mathrm{ref}}$, $\beta$, $Z$), what reward would it be the optimum of?

# %% [markdown]
# ### Exercise 1 — invert the optimal policy
#
# Take logs of $\pi^*$ and solve for $r$ on paper, then implement
# `reward_from_policy(pi_star, pi_ref, beta, log_z)`, returning $r$ for every response. Before you
# run the checker: which part of your answer depends on the response, and which only on the prompt?

# %%
def reward_from_policy(pi_star, pi_ref, beta, log_z):
    # YOUR CODE HERE: invert pi* = pi_ref exp(r / beta) / Z for r, shape (K,)
    raise NotImplementedError


checks.check_reward_from_policy(reward_from_policy)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def reward_from_policy(pi_star, pi_ref, beta, log_z):
    return beta * (torch.log(pi_star) - torch.log(pi_ref)) + beta * log_z


checks.check_reward_from_policy(reward_from_policy)

# %% [markdown]
# So every reward is a log-ratio of two policies, plus a term that depends on the prompt only:
#
# $$r(x,y) = \beta\log\frac{\pi^*(y\mid x)}{\pi_{\mathrm{ref}}(y\mid x)} + \beta\log Z(x).$$

# %% [markdown]
# In numbers: compute $\pi^*$ from the true reward, then get the reward back from $\pi^*$.

# %%
# NBVAL_CHECK_OUTPUT
pi_star = toy.optimal_policy(world.pi_ref, world.r, beta)
log_z = toy.log_partition(world.pi_ref, world.r, beta)
r_back = reward_from_policy(pi_star, world.pi_ref, beta, log_z)
print(f"beta = {beta}, log Z = {log_z.item():.4f}")
print("r          :", [round(v, 4) for v in world.r.tolist()])
print("r from pi* :", [round(v, 4) for v in r_back.tolist()])
print(f"max |r - r_from_pi*| = {(world.r - r_back).abs().max().item():.4f}")

# %% [markdown]
# ## Step 2 — substitute into Bradley-Terry: $Z(x)$ cancels
#
# Preferences depend on rewards only through a **difference** (notebook 01):
# $P(y_w\succ y_l\mid x)=\sigma\big(r(x,y_w)-r(x,y_l)\big)$. Substituting step 1, the two
# $\beta\log Z(x)$ terms — one per response, the same prompt — cancel:
#
# $$P(y_w\succ y_l\mid x)=\sigma\!\Big(\beta\log\frac{\pi^*(y_w\mid x)}{\pi_{\mathrm{ref}}(y_w\mid x)}-\beta\log\frac{\pi^*(y_l\mid x)}{\pi_{\mathrm{ref}}(y_l\mid x)}\Big).$$
#
# The intractable $Z$ is gone: the preference probability is written with the policy alone. The
# quantity $\hat r(y)=\beta\log\frac{\pi(y)}{\pi_{\mathrm{ref}}(y)}$ is the policy's **implicit reward**.

# %%
# NBVAL_CHECK_OUTPUT
P_true = toy.preference_matrix(world.r)  # P[i, j] = P(y_i > y_j) from the true reward
r_hat = toy.implicit_reward(pi_star, world.pi_ref, beta)  # no log Z anywhere
P_implicit = toy.preference_matrix(r_hat)
print("implicit reward of pi*:", [round(v, 4) for v in r_hat.tolist()])
print(f"r - r_hat = beta log Z for every response: {[round(v, 4) for v in (world.r - r_hat).tolist()]}")
print(f"max over all 36 pairs |P_true - P_from_pi*| = {(P_true - P_implicit).abs().max().item():.4f}")

# %% [markdown]
# ### Equivalence classes of rewards
#
# The cancellation has a consequence the paper makes precise: two rewards that differ by **any
# function of the prompt alone**, $r'(x,y)=r(x,y)+f(x)$, give the same preference probabilities
# *and* the same optimal policy ($e^{f(x)/\beta}$ is absorbed by $Z(x)$). The data can never tell
# them apart, and nothing downstream depends on which one we pick.
#
# Check it with several prompts at once (a $(X, K)$ batch: 4 prompts, 5 responses each), and — so
# that the check can fail — compare with a shift that depends on the response.

# %%
# NBVAL_CHECK_OUTPUT
gen = torch.Generator().manual_seed(0)
X, K = 4, 5
pi_ref_x = torch.softmax(torch.randn(X, K, generator=gen, dtype=torch.float64), -1)  # (X, K)
r_x = torch.randn(X, K, generator=gen, dtype=torch.float64)  # (X, K)
f_x = 10.0 * torch.randn(X, 1, generator=gen, dtype=torch.float64)  # (X, 1): one shift per prompt
g_xy = torch.randn(X, K, generator=gen, dtype=torch.float64)  # (X, K): a shift per response

for name, r_shifted in [("r + f(x)   ", r_x + f_x), ("r + g(x, y)", r_x + g_xy)]:
    dP = (toy.preference_matrix(r_shifted) - toy.preference_matrix(r_x)).abs().max().item()
    dpi = (toy.optimal_policy(pi_ref_x, r_shifted, beta) - toy.optimal_policy(pi_ref_x, r_x, beta)).abs().max().item()
    print(f"{name}: max |change in P(y_i > y_j | x)| = {dP:.4f}, max |change in pi*(y | x)| = {dpi:.4f}")


# %% [markdown]
# ## Step 3 — the DPO loss
#
# Step 2 gives the likelihood of a preference in terms of a policy. Replace $\pi^*$ by a policy
# $\pi_\theta$ we can train, and maximise the likelihood of the observed preferences — the same
# maximum-likelihood fit as the reward model of notebook 01, with the implicit reward in place of a
# learned one:
#
# $$\mathcal{L}_{\mathrm{DPO}}(\pi_\theta;\pi_{\mathrm{ref}}) = -\,\mathbb{E}_{(x,y_w,y_l)}\Big[\log\sigma\Big(\beta\log\frac{\pi_\theta(y_w\mid x)}{\pi_{\mathrm{ref}}(y_w\mid x)}-\beta\log\frac{\pi_\theta(y_l\mid x)}{\pi_{\mathrm{ref}}(y_l\mid x)}\Big)\Big].$$

# %% [markdown]
# ### Exercise 2 — the DPO loss
#
# A training loop never sees probabilities, only summed log-probabilities (notebook 04): four per
# pair. Rewrite the bracket of $\mathcal{L}_{\mathrm{DPO}}$ in terms of those four numbers, then implement
# `dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)`
# returning the per-pair losses, shape `(B,)`. The checker tries log-ratio margins of $\pm 890$ in
# float32 (so $\beta$ times them is $\pm 445$): which way of computing $\log\sigma$ survives that?

# %%
def my_dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    # YOUR CODE HERE: one loss per pair, shape (B,); margins of +-445 must stay finite
    raise NotImplementedError


checks.check_dpo_loss(my_dpo_loss)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def my_dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = ref_chosen_logps - ref_rejected_logps
    return -F.logsigmoid(beta * (pi_logratios - ref_logratios))


checks.check_dpo_loss(my_dpo_loss)

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# $\beta\log\frac{\pi_\theta(y_w)}{\pi_{\mathrm{ref}}(y_w)}-\beta\log\frac{\pi_\theta(y_l)}{\pi_{\mathrm{ref}}(y_l)} = \beta h$ with
# $h=(\log\pi_\theta(y_w)-\log\pi_\theta(y_l))-(\log\pi_{\mathrm{ref}}(y_w)-\log\pi_{\mathrm{ref}}(y_l))$, so the loss of one
# pair is $-\log\sigma(\beta h)$, and `F.logsigmoid` computes $\log\sigma$ without the underflow of
# `torch.log(torch.sigmoid(x))` (0 below $x\approx-88$ in float32). The course's `helpers.losses.dpo_loss`
# computes the same, and also returns the implicit rewards for logging.
#
# </details>

# %% [markdown]
# In the four log-probabilities the bracket is $\beta h$, with
# $h=(\log\pi_\theta(y_w)-\log\pi_\theta(y_l))-(\log\pi_{\mathrm{ref}}(y_w)-\log\pi_{\mathrm{ref}}(y_l))$: the policy's
# log-ratio of the pair minus the reference's. Two values to remember. At the start of training
# $\pi_\theta=\pi_{\mathrm{ref}}$, so $h=0$ and every
# pair costs $-\log\sigma(0)=\log 2$. And at $\pi_\theta=\pi^*$ the DPO loss *is* the Bradley-Terry loss
# of the true reward (the implicit reward of $\pi^*$ differs from $r$ by $\beta\log Z$, which cancels).

# %%
# NBVAL_CHECK_OUTPUT
chosen, rejected = toy.sample_preferences(world.r, 2000, seed=0)
log_ref = torch.log(world.pi_ref)
log_star = torch.log(pi_star)
loss_at_ref = my_dpo_loss(log_ref[chosen], log_ref[rejected], log_ref[chosen], log_ref[rejected], beta).mean()
loss_at_star = dpo_loss(log_star[chosen], log_star[rejected], log_ref[chosen], log_ref[rejected], beta)[0].mean()
bt_true = bradley_terry_loss(world.r[chosen], world.r[rejected]).mean()
print(f"DPO loss at pi = pi_ref: {loss_at_ref.item():.4f} (ln 2 = {torch.log(torch.tensor(2.0)).item():.4f})")
print(f"DPO loss at pi = pi*:    {loss_at_star.item():.4f}")
print(f"Bradley-Terry loss of the true reward on the same pairs: {bt_true.item():.4f}")

# %% [markdown]
# ### Why this is reward learning *and* RLHF at once (the paper's Theorem 1)
#
# Fitting a policy by this loss may look like a shortcut that skips the reward. It is not: every
# policy $\pi_\theta$ is the KL-optimal policy of its **own** implicit reward
# $\hat r_\theta = \beta\log\frac{\pi_\theta}{\pi_{\mathrm{ref}}}$. Plug $\hat r_\theta$ into the optimum of
# notebook 02: $\pi_{\mathrm{ref}}\,e^{\hat r_\theta/\beta} = \pi_\theta$, so its partition function is
# $Z = \sum_y \pi_\theta(y) = 1$ and $\pi^*_{\hat r_\theta} = \pi_\theta$. And every reward $r$ has a member of
# its equivalence class of this form, $r - \beta\log Z(x) = \beta\log\frac{\pi^*_r}{\pi_{\mathrm{ref}}}$. So
# maximising the likelihood of preferences over policies *is* maximising it over reward
# equivalence classes, followed by the exact RLHF step: nothing is lost by never writing a reward --
# **under three assumptions** the argument uses without saying so:
#
# 1. $\pi_{\mathrm{ref}}(y)>0$ for every response (else $\log\frac{\pi_\theta}{\pi_{\mathrm{ref}}}$ is undefined there,
#    and notebook 00's support rule keeps $\pi^*$ at 0);
# 2. the policy class is unrestricted: any distribution over responses is some $\pi_\theta$ (true of
#    the toy's softmax over six logits, not of a language model of fixed size);
# 3. the pairs **cover** every response: a response that never appears in a pair gets no gradient
#    from the loss, so nothing moves its implicit reward -- only the softmax's normaliser does.
#
# The toy below draws pairs uniformly over all responses, so it meets all three; a cell after
# Step 4 breaks the third.
#
# Check it on a policy that has nothing to do with the toy's reward (a random softmax):

# %%
# NBVAL_CHECK_OUTPUT
pi_theta = torch.softmax(torch.randn(len(world.pi_ref), generator=torch.Generator().manual_seed(1),
                                     dtype=torch.float64), -1)
r_hat_theta = toy.implicit_reward(pi_theta, world.pi_ref, beta)
print("log Z of its implicit reward is 0 (|log Z| < 1e-12):",
      abs(toy.log_partition(world.pi_ref, r_hat_theta, beta).item()) < 1e-12)
print("the optimal policy of its implicit reward is the policy itself:",
      torch.allclose(toy.optimal_policy(world.pi_ref, r_hat_theta, beta), pi_theta, atol=1e-12))
# the representative of the true reward's class is pi*'s implicit reward: r - beta log Z(x)
print("r - beta log Z equals the implicit reward of pi*:",
      torch.allclose(world.r - beta * toy.log_partition(world.pi_ref, world.r, beta),
                     toy.implicit_reward(pi_star, world.pi_ref, beta), atol=1e-12))

# %% [markdown]
# ## Step 4 — fit a policy with DPO and watch it reach $\pi^*$
#
# Sample $n$ preference pairs from Bradley-Terry with the true reward (two different responses
# drawn uniformly, the winner by a $\sigma(r_w-r_l)$ coin flip). Then minimise the mean DPO loss over
# $\pi_\theta=\mathrm{softmax}(\theta)$, starting at $\pi_{\mathrm{ref}}$ (`toy.fit_toy_policy`, which
# calls `helpers.losses.dpo_loss`). The reward $r$ is never shown to the fit — only the pairs.

# %%
# NBVAL_CHECK_OUTPUT
chosen, rejected = toy.sample_preferences(world.r, 100_000, seed=0)
pi_dpo, _ = toy.fit_toy_policy(world.pi_ref, chosen, rejected, beta)
print(f"n = 100000 pairs, beta = {beta}")
print("pi*     :", [round(v, 3) for v in pi_star.tolist()])
print("pi_DPO  :", [round(v, 3) for v in pi_dpo.tolist()])
print(f"max |pi_DPO - pi*| = {(pi_dpo - pi_star).abs().max().item():.3f}")

# %%
viz.plot_policies({"pi_ref": world.pi_ref, "pi* (closed form)": pi_star, "pi_DPO (100k pairs)": pi_dpo},
                  world.responses, title=rf"DPO on sampled preferences recovers $\pi^*$ ($\beta$ = {beta})")
plt.show()

# %% [markdown]
# **Coverage.** Now break assumption 3: the same 100,000 pairs, less every pair that contains one
# response -- first the worst, then the best. The fit is the same DPO; what it can learn about the
# missing response is only what the normaliser drags along.

# %%
# NBVAL_CHECK_OUTPUT
for missing in (int(world.r.argmin()), int(world.r.argmax())):
    keep = (chosen != missing) & (rejected != missing)
    pi_cov, _ = toy.fit_toy_policy(world.pi_ref, chosen[keep], rejected[keep], beta)
    name = world.responses[missing]
    print(f"{name!r} in no pair ({int(keep.sum())} pairs left): pi_DPO({name}) = {pi_cov[missing].item():.3f}, "
          f"pi_ref = {world.pi_ref[missing].item():.3f}, pi* = {pi_star[missing].item():.3f}; "
          f"KL(pi_DPO || pi*) = {toy.kl_divergence(pi_cov, pi_star).item():.3f} "
          f"(all pairs: {toy.kl_divergence(pi_dpo, pi_star).item():.4f})")

# %% [markdown]
# The missing response's logit never moves; only the normaliser does, so its probability follows the
# others' fate, wherever $\pi^*$ puts it: compare its $\pi_{\mathrm{DPO}}$ with $\pi_{\mathrm{ref}}$ and $\pi^*$ in the two
# lines above -- an uncovered bad response is not pushed down, an uncovered good one is not pulled
# up (it loses share, as the covered responses it should beat gain it). On text this is the common case -- the pairs cover a
# vanishing fraction of all responses -- and why DPO's pairs should come from $\pi_{\mathrm{ref}}$ itself
# (notebook 05) and why notebook 09 asks what DPO really reaches.
#
# With more preferences the fit gets closer: the maximum-likelihood error shrinks like $1/\sqrt{n}$.
# (Each $n$: the error averaged over 5 independent samples of pairs.)

# %%
# NBVAL_CHECK_OUTPUT
ns = [100, 300, 1_000, 3_000, 10_000, 30_000, 100_000]
errors = []
for n in ns:
    errs = []
    for seed in range(5):
        c, rj = toy.sample_preferences(world.r, n, seed=seed)
        p, _ = toy.fit_toy_policy(world.pi_ref, c, rj, beta)
        errs.append((p - pi_star).abs().max().item())
    errors.append(sum(errs) / len(errs))
    print(f"n = {n:>6}: mean max |pi_DPO - pi*| = {errors[-1]:.3f}")
print(f"error shrinks at every step: {all(a > b for a, b in zip(errors, errors[1:]))}")

# %%
viz.plot_convergence(ns, errors)
plt.show()

# %% [markdown]
# ## The gradient, and who gets pushed
#
# ### Exercise 3 — derive the gradient yourself (before reading on)
#
# Take the toy's policy $\pi_\theta=\mathrm{softmax}(\theta)$ over the $K$ responses and **one** pair
# $(y_w, y_l)$ given as indices `w`, `l`. Derive $\nabla_\theta$ of its loss $-\log\sigma(\beta h)$ on paper,
# then write it with no autograd. Two facts to start from: $\frac{d}{dx}\log\sigma(x)=\sigma(-x)$, and
# in $\log\pi_\theta(y_w)-\log\pi_\theta(y_l)$ something about the softmax simplifies. The checker compares
# your vector with autograd's and names the usual slips.

# %%
def dpo_gradient(theta, pi_ref, w, l, beta):
    """theta: (K,) logits of pi_theta; pi_ref: (K,); w, l: indices of the pair -> (K,) gradient of the loss."""
    raise NotImplementedError  # derive it first; no torch.autograd here


checks.check_dpo_gradient(dpo_gradient)

# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def dpo_gradient(theta, pi_ref, w, l, beta):
    h = (theta[w] - theta[l]) - (torch.log(pi_ref[w]) - torch.log(pi_ref[l]))
    grad = torch.zeros_like(theta)
    grad[w], grad[l] = 1.0, -1.0
    return -beta * torch.sigmoid(-beta * h) * grad


checks.check_dpo_gradient(dpo_gradient)

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# $h = (\theta_w-\theta_l) - \log\frac{\pi_{\mathrm{ref}}(y_w)}{\pi_{\mathrm{ref}}(y_l)}$: the softmax's
# normaliser $\log\sum e^{\theta}$ appears in both log-probabilities and cancels. So
# $\nabla_\theta h = e_w - e_l$ and $\nabla_\theta\big[-\log\sigma(\beta h)\big] = -\beta\,\sigma(-\beta h)\,(e_w - e_l)$.
#
# </details>

# %% [markdown]
# In general (any parametrisation), differentiating the loss of one pair (with $\hat r=\beta\log\frac{\pi_\theta}{\pi_{\mathrm{ref}}}$):
#
# $$\nabla_\theta\mathcal{L}_{\mathrm{DPO}} = -\beta\;\sigma\big(\hat r(y_l)-\hat r(y_w)\big)\,\Big[\nabla_\theta\log\pi_\theta(y_w)-\nabla_\theta\log\pi_\theta(y_l)\Big].$$
#
# It raises the log-probability of $y_w$ and lowers that of $y_l$, weighted by
# $\sigma(\hat r_l-\hat r_w)$: **close to 1 when the implicit reward ranks the pair wrongly, close to 0
# when it already ranks it right**. For $\pi_\theta=\mathrm{softmax}(\theta)$, $\nabla_\theta\log\pi_\theta(y)=e_y-\pi_\theta$,
# so the bracket is $e_{y_w}-e_{y_l}$. Check the formula against autograd at a random $\theta$:

# %%
# NBVAL_CHECK_OUTPUT
gen = torch.Generator().manual_seed(1)
theta = torch.randn(6, generator=gen, dtype=torch.float64).requires_grad_(True)
w, l = 1, 4  # the pair ("good" preferred to "bad")
for b in (0.1, 1.0):
    logps = torch.log_softmax(theta, -1)
    loss = dpo_loss(logps[w:w + 1], logps[l:l + 1], log_ref[w:w + 1], log_ref[l:l + 1], b)[0].sum()
    (grad_autograd,) = torch.autograd.grad(loss, theta)
    weight = toy.dpo_gradient_weight(logps[w].detach(), logps[l].detach(), log_ref[w], log_ref[l], b)
    grad_formula = -b * weight * (F.one_hot(torch.tensor(w), 6) - F.one_hot(torch.tensor(l), 6)).double()
    print(f"beta = {b}: weight sigma(r_hat_l - r_hat_w) = {weight.item():.4f}, "
          f"max |grad_autograd - grad_formula| = {(grad_autograd - grad_formula).abs().max().item():.4f}")

# %%
viz.plot_dpo_weight()
plt.show()

# %% [markdown]
# Without the weight (a constant 1) the gradient would keep pushing on pairs that are already
# ranked right, by any margin — the paper reports that this "unlikelihood"-style variant degenerates.
# ("Unlikelihood" training: lowering the likelihood of unwanted text, Welleck et al. 2019; here
# the loss $-[\log\pi_\theta(y_w) - \log\pi_\theta(y_l)]$, DPO's gradient with the weight set to 1.)
# Checked on the toy, on 10,000 Bradley-Terry preferences, fitted both ways from $\pi_{\mathrm{ref}}$: DPO
# settles at the best fit of *these* 10,000 labels -- $\pi^*$ up to their sampling error (its distance
# to $\pi^*$ is printed) -- while the unweighted loss puts everything on the one response that wins
# most and stays there (its gradient never shrinks: for a softmax it is the constant mean of
# $e_{y_l} - e_{y_w}$).

# %%
# NBVAL_CHECK_OUTPUT
chosen_u, rejected_u = toy.sample_preferences(world.r, 10_000, seed=0)
pi_star_half = toy.optimal_policy(world.pi_ref, world.r, 0.5)
for name in ("DPO (beta 0.5)", "unweighted"):
    theta_u = torch.log(world.pi_ref).clone().requires_grad_(True)
    opt = torch.optim.SGD([theta_u], lr=1.0)  # plain gradient steps: the loss's own direction
    for step in range(1, 2001):
        logps = torch.log_softmax(theta_u, -1)
        if name.startswith("DPO"):
            loss = dpo_loss(logps[chosen_u], logps[rejected_u], log_ref[chosen_u], log_ref[rejected_u], 0.5)[0].mean()
        else:
            loss = -(logps[chosen_u] - logps[rejected_u]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (100, 2000):
            pi_u = torch.softmax(theta_u.detach(), -1)
            print(f"{name:>15} after {step:4d} steps: KL = {toy.kl_divergence(pi_u, world.pi_ref).item():.2f}, "
                  f"pi = {[round(v, 3) for v in pi_u.tolist()]}, "
                  f"KL(pi || pi*) = {toy.kl_divergence(pi_u, pi_star_half).item():.4f}")
print(f"{'pi* (beta 0.5)':>15}{'':17s}: KL = {toy.kl_divergence(pi_star_half, world.pi_ref).item():.2f}, "
      f"pi = {[round(v, 3) for v in pi_star_half.tolist()]}")

# %% [markdown]
# ## The direction of $\beta$
#
# Larger $\beta$ keeps the policy **closer** to $\pi_{\mathrm{ref}}$: in $\pi^*\propto\pi_{\mathrm{ref}}e^{r/\beta}$ the reward
# is divided by $\beta$, and DPO fits $\pi^*$. Check it on one set of preferences, fitting with
# several $\beta$:

# %%
# NBVAL_CHECK_OUTPUT
chosen, rejected = toy.sample_preferences(world.r, 10_000, seed=0)
kls = []
for b in (0.1, 0.5, 1.0, 2.0, 10.0):
    p, _ = toy.fit_toy_policy(world.pi_ref, chosen, rejected, b)
    kls.append(toy.kl_divergence(p, world.pi_ref).item())
    print(f"beta = {b:5.1f}: KL(pi_DPO || pi_ref) = {kls[-1]:.3f} nats, pi_DPO('superb') = {p[0].item():.3f}")
print(f"KL falls as beta grows: {all(a > b for a, b in zip(kls, kls[1:]))}")

# %% [markdown]
# **The same, read off the loss.** Why do students so often guess β's direction backwards? Because
# β multiplies the log-ratios *inside* the loss, $\sigma(\beta h)$ with
# $h = \log\frac{\pi_\theta(y_w)}{\pi_{\mathrm{ref}}(y_w)} - \log\frac{\pi_\theta(y_l)}{\pi_{\mathrm{ref}}(y_l)}$, and a
# larger multiplier looks like a stronger push. But the data fix the *product*: maximum likelihood
# matches the model's win probability $\sigma(\beta h)$ to the observed one $\sigma(\Delta r)$, so
# $\beta h \approx \Delta r$ and $h \approx \Delta r/\beta$ — the larger β, the smaller the log-ratio
# margin the policy needs, the less it moves. Checked on the fits above, for the pair ("superb", "awful"):

# %%
# NBVAL_CHECK_OUTPUT
top, bottom = 0, len(world.r) - 1  # "superb" and "awful"
for b in (0.1, 1.0, 10.0):
    p, _ = toy.fit_toy_policy(world.pi_ref, chosen, rejected, b)
    h = (torch.log(p[top] / world.pi_ref[top]) - torch.log(p[bottom] / world.pi_ref[bottom])).item()
    print(f"beta = {b:4.1f}: fitted h = {h:7.3f};  delta r / beta = {(world.r[top] - world.r[bottom]).item() / b:7.3f}")

# %% [markdown]
# ## Deterministic preferences: DPO vs cDPO vs IPO
#
# With **noiseless** preferences — $y_w$ always wins — the Bradley-Terry likelihood is maximised only
# at an infinite margin. DPO's loss $-\log\sigma(\beta h)$ keeps decreasing as $h\to\infty$, so it
# drives $\pi_\theta(y_l)\to 0$ no matter how large $\beta$ is: the KL "constraint" does not hold it back.
# Two fixes, on a single pair (two responses, $\pi_{\mathrm{ref}}$ uniform), with closed-form optima:
#
# * **cDPO** (label smoothing $\varepsilon$: labels assumed flipped with probability $\varepsilon$):
#   loss $-(1-\varepsilon)\log\sigma(\beta h)-\varepsilon\log\sigma(-\beta h)$, minimised at $\beta h^*=\log\frac{1-\varepsilon}{\varepsilon}$;
# * **IPO** (Azar et al., 2023): loss $\big(h-\frac{1}{2\beta}\big)^2$, minimised at $h^*=\frac{1}{2\beta}$.

# %%
# NBVAL_CHECK_OUTPUT
pi_ref_2 = torch.tensor([0.5, 0.5], dtype=torch.float64)
c2, r2 = torch.tensor([0]), torch.tensor([1])  # response 0 always preferred
b, eps = 0.5, 0.1
runs = {"DPO": dict(loss="dpo"), f"cDPO eps={eps}": dict(loss="dpo", label_smoothing=eps), "IPO": dict(loss="ipo")}
optimum = {"DPO": float("inf"), f"cDPO eps={eps}": torch.log(torch.tensor((1 - eps) / eps)).item() / b,
           "IPO": 1 / (2 * b)}
traj2 = {}
for name, kw in runs.items():
    _, traj2[name] = toy.fit_toy_policy(pi_ref_2, c2, r2, b, optimizer="adam", steps=3000, lr=0.05, **kw)
    h = torch.log(traj2[name][:, 0]) - torch.log(traj2[name][:, 1])
    print(f"{name:>13}: h after 300 / 1000 / 3000 steps = {h[300].item():6.2f} / {h[1000].item():6.2f} / "
          f"{h[3000].item():6.2f};  closed-form optimum h* = {optimum[name]:.2f};  "
          f"pi(y_l) at the end = {traj2[name][-1, 1].item():.1e}")

# %% [markdown]
# The same on the full toy: all 15 pairs of responses, the higher-reward response always preferred.
# Watch the probability of the worst response, "awful":

# %%
# NBVAL_CHECK_OUTPUT
chosen_d, rejected_d = toy.deterministic_preferences(world.r)
traj = {}
for name, kw in runs.items():
    _, traj[name] = toy.fit_toy_policy(world.pi_ref, chosen_d, rejected_d, b, optimizer="adam", steps=3000, lr=0.05, **kw)
    print(f"{name:>13}: pi('awful') after 300 / 1000 / 3000 steps = "
          + " / ".join(f"{traj[name][s, -1].item():.1e}" for s in (300, 1000, 3000)))

# %%
viz.plot_trajectories(traj, index=-1, ylabel="pi('awful') (log scale)",
                      title=rf"deterministic preferences, $\beta$ = {b}: DPO drives $\pi(y_l)$ to 0")
plt.show()

# %% [markdown]
# DPO's $\pi(\text{awful})$ keeps falling for as long as we train; cDPO and IPO settle at a finite
# margin. On real data preferences are rarely perfectly consistent, but a *finite* dataset often is:
# for a pair seen once, the empirical preference is deterministic.
#
# ## Certain labels or Bradley-Terry labels: which target does DPO fit?
#
# The derivation assumed the labels come from a Bradley-Terry annotator: $y_1$ is preferred with
# probability $\sigma(r_1-r_2)$. Then the loss is a cross-entropy whose minimum sits at
# $\beta h=r_w-r_l$ — exactly $\pi^*_\beta$. Our language-model pairs (notebook 05) are labelled
# differently: *chosen = the higher reward*, always. That is the deterministic case above, for every
# pair at once. Here is the difference on the toy with **the same pairs** (both responses drawn from
# $\pi_{\mathrm{ref}}$, as an SFT model would generate them), labelled two ways:
#
# * **Bradley-Terry labels:** a coin flip with $P(y_1\succ y_2)=\sigma(r_1-r_2)$ for each pair;
# * **certain labels:** the higher-reward response wins, every time.
#
# We follow $\mathrm{KL}(\pi_\theta\,\|\,\pi^*_\beta)$ — the distance to the policy DPO promises — along training.

# %%
# NBVAL_CHECK_OUTPUT
b = 0.5
target = toy.optimal_policy(world.pi_ref, world.r, b)
pairs_1, pairs_2 = toy.sample_preferences(world.r, 100_000, seed=1, pi_sample=world.pi_ref)  # BT coin flips
higher = world.r[pairs_1] > world.r[pairs_2]
certain_w, certain_l = torch.where(higher, pairs_1, pairs_2), torch.where(higher, pairs_2, pairs_1)
flipped = (certain_w != pairs_1).double().mean().item()
print(f"100,000 pairs from pi_ref; the Bradley-Terry annotator prefers the lower-reward response in {flipped:.1%} of them")
label_runs = {"Bradley-Terry labels": (pairs_1, pairs_2), "certain labels": (certain_w, certain_l)}
kl_to_target = {}
for name, (w, l) in label_runs.items():
    _, path = toy.fit_toy_policy(world.pi_ref, w, l, b, optimizer="adam", steps=3000, lr=0.05)
    kl_to_target[name] = torch.stack([toy.kl_divergence(p, target) for p in path])[:, None]  # (steps + 1, 1)
    print(f"{name:>20}: KL(pi_theta || pi*) after 100 / 1000 / 3000 steps = "
          + " / ".join(f"{kl_to_target[name][s, 0].item():.4f}" for s in (100, 1000, 3000))
          + f";  pi('superb') = {path[-1, 0].item():.3f} (pi* {target[0].item():.3f})")

# %%
viz.plot_trajectories(kl_to_target, index=0, ylabel="KL(pi_theta || pi*_beta) (log scale)",
                      title=rf"the same pairs, $\beta$ = {b}: Bradley-Terry labels converge, certain labels run away")
plt.show()

# %% [markdown]
# With Bradley-Terry labels the distance to $\pi^*$ falls towards zero (what is left is the sampling
# error of 100,000 labels). With certain labels it falls at first — the policy moves in the right
# direction — and then grows again, towards the distance of the one-hot policy on "superb":
# $\pi(\text{superb})\to 1$, the limit of certain labels whatever $\beta$ is. A finite $\beta$ no longer
# holds the policy anywhere. A check, in numbers:

# %%
# NBVAL_CHECK_OUTPUT
bt, certain = kl_to_target["Bradley-Terry labels"][:, 0], kl_to_target["certain labels"][:, 0]
print("Bradley-Terry labels end within 0.001 nats of pi*:", bool(bt[-1] < 1e-3))
print("certain labels: closest to pi* at step", int(certain.argmin()), "then moving away:",
      bool(certain[-1] > certain[1000] > certain.min()))

# %% [markdown]
# So the label process decides what DPO converges to. Notebook 09 measures the same thing on the
# language model: the course's certain-label pairs against labels from a Bradley-Terry annotator,
# their expected value (a *soft* label $p=\sigma(r_w-r_l)$, loss $-p\log\sigma(\beta h)-(1-p)\log\sigma(-\beta h)$),
# and $\pi^*$ itself distilled from the same samples.
#
# ## Summary
#
# | step | equation | checked |
# |---|---|---|
# | 1 | $r=\beta\log\frac{\pi^*}{\pi_{\mathrm{ref}}}+\beta\log Z$ | $r$ recovered from $\pi^*$ exactly |
# | 2 | $P(y_w\succ y_l)=\sigma(\hat r_w-\hat r_l)$, $Z$ cancels | same 36 probabilities; $r+f(x)$ changes nothing |
# | 3 | $\mathcal{L}_{\mathrm{DPO}}=-\mathbb{E}\log\sigma(\beta h)$ | $\ln 2$ at $\pi_{\mathrm{ref}}$; = BT loss of $r$ at $\pi^*$ |
# | 4 | fit $\pi_\theta$ on pairs | $\to\pi^*$, error $\sim 1/\sqrt{n}$ |
# | ∇ | weight $\sigma(\hat r_l-\hat r_w)$ | autograd = formula |
# | β | larger $\beta$, closer to $\pi_{\mathrm{ref}}$ | KL falls with $\beta$ |
# | labels | Bradley-Terry labels $\to\pi^*_\beta$; certain labels run away | KL to $\pi^*$ along training |
#
# **Next (04):** for a language model, $\log\pi_\theta(y\mid x)$ is a sum of token log-probabilities —
# computing it correctly (shifts, masks, padding) is where most DPO bugs live.
