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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dpo-course/dpo-from-scratch/blob/main/notebooks/02_rlhf_objective.ipynb)
#
# # 02 — The RLHF objective and its optimal policy
#
# RLHF does not simply maximise reward. It maximises reward **while staying close to a reference
# policy** $\pi_{\mathrm{ref}}$ (the SFT model):
#
# $$\max_{\pi}\; \mathbb{E}_{y\sim\pi(\cdot\mid x)}\big[r(x,y)\big] \;-\; \beta\,\mathrm{KL}\big(\pi(\cdot\mid x)\,\|\,\pi_{\mathrm{ref}}(\cdot\mid x)\big)$$
#
# This notebook shows that this objective has a **closed-form maximiser**, checks it against plain
# gradient ascent, and lets you move $\beta$ to see what it does. Notebook 03 turns that closed form
# into the DPO loss.
#
# Everything here happens in a *toy world*: one prompt $x$ and six possible responses, so a policy
# is just six probabilities and every sum can be computed exactly.

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
import math

import matplotlib.pyplot as plt
import torch

from helpers import checks, toy, viz

torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## The toy world
#
# The prompt is *"The film, in one word:"*. The reference policy $\pi_{\mathrm{ref}}$ likes lukewarm
# words; the reward $r(y)$ likes enthusiastic ones.

# %%
# NBVAL_CHECK_OUTPUT
world = toy.make_toy()
print(world.prompt)
print(f"{'response':>10} {'pi_ref':>8} {'r':>6}")
for y, p, r in zip(world.responses, world.pi_ref, world.r):
    print(f"{y:>10} {p.item():8.2f} {r.item():6.2f}")
print(f"sum pi_ref = {world.pi_ref.sum().item():.4f}")


# %% [markdown]
# ## The objective, term by term
#
# With finitely many responses both terms are sums:
#
# $$J(\pi) = \underbrace{\sum_y \pi(y)\,r(y)}_{\text{expected reward}} \;-\; \beta\,\underbrace{\sum_y \pi(y)\log\frac{\pi(y)}{\pi_{\mathrm{ref}}(y)}}_{\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})\ \text{(nats)}}$$
#
# The KL term is a *penalty*: it is zero at $\pi = \pi_{\mathrm{ref}}$ and positive everywhere else.
# It is weighted by $\pi$ — the policy being sampled — not by $\pi_{\mathrm{ref}}$. (A *policy* is the
# model's distribution over responses; a *nat* is the unit of a log taken base $e$; the set of all
# distributions over the $K$ responses, vectors $\ge 0$ summing to 1, is the *simplex*.)
#
# **Why the KL term is there.** Without it the maximiser puts all its mass on the single
# highest-reward response. Three reasons not to let it: (1) *reward hacking* — in practice $r$ is a
# learned reward model, trusted only near the responses it was trained on, which $\pi_{\mathrm{ref}}$
# wrote; far from them a policy finds responses the model overrates (notebook 08 shows it happen);
# (2) *fluency* — $\pi_{\mathrm{ref}}$ is a good language model, and staying close keeps its grammar and
# variety; (3) a *trust region* — the preference data only say something about where they were
# collected. $\beta$ sets the exchange rate: one nat of KL costs $\beta$ units of reward.
#
# **Many prompts.** Over a dataset of prompts the objective is an expectation,
#
# $$J(\pi) = \mathbb{E}_{x\sim\mathcal{D}}\Big[\mathbb{E}_{y\sim\pi(\cdot|x)}\,r(x,y) - \beta\,\mathrm{KL}\big(\pi(\cdot|x)\,\|\,\pi_{\mathrm{ref}}(\cdot|x)\big)\Big],$$
#
# and the distributions $\pi(\cdot|x)$ of different prompts share no constraint (each sums to 1 on its
# own), so maximising the expectation is maximising each prompt's bracket separately: the problem
# **splits per prompt**. One prompt, as in this toy world, is the whole story.
#
# **KL $\ge 0$, in one line (Jensen).** $\log$ is concave, so $\mathbb{E}[\log X] \le \log\mathbb{E}[X]$; with
# $X = q(y)/\pi(y)$ and $y\sim\pi$:
# $-\mathrm{KL}(\pi\|q) = \sum_y \pi(y)\log\frac{q(y)}{\pi(y)} \le \log\sum_y \pi(y)\frac{q(y)}{\pi(y)} = \log\sum_y q(y) = 0,$
# with equality only when $q/\pi$ is constant, i.e. $\pi = q$. Checked on random pairs:

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(1)
p_, q_ = torch.distributions.Dirichlet(torch.ones(6, dtype=torch.float64)).sample((2, 10_000))  # (10000, 6) each
lhs_ = (p_ * torch.log(q_ / p_)).sum(-1)  # E_p[log q/p] = -KL(p || q)
rhs_ = torch.log((p_ * q_ / p_).sum(-1))  # log E_p[q/p] = log 1 = 0
print(f"10,000 random pairs: max of -KL(p||q) = {lhs_.max().item():.4f} <= 0: {bool((lhs_ <= 1e-12).all())}; "
      f"max |log E_p[q/p]| = {rhs_.abs().max().item():.1e}")
print(f"KL(p||p) = {(p_ * torch.log(p_ / p_)).sum(-1).abs().max().item():.1f} (equality exactly at q = p)")

# %% [markdown]
# ### Exercise 1 — the objective
#
# Implement `rlhf_objective(pi, pi_ref, r, beta)` for a policy `pi` of shape `(K,)` -- or a batch of
# policies `(N, K)`, one per row, as used further down -- with `pi_ref` and rewards `r` of shape `(K,)`,
# returning one number per policy (shape `()` or `(N,)`). One of the checker's policies gives two of
# the six responses no mass at all -- as the policies at the end of this notebook do when $\beta\to 0$:
# what must its KL term be (notebook 00's Exercise 2)? Run the checker: it tells you what is wrong in
# plain words. (The notebook keeps running with the stub; the solution follows.)

# %%
def rlhf_objective(pi, pi_ref, r, beta):
    # YOUR CODE HERE
    raise NotImplementedError


checks.check_rlhf_objective(rlhf_objective)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def rlhf_objective(pi, pi_ref, r, beta):
    expected_reward = (pi * r).sum(-1)
    kl = (torch.special.xlogy(pi, pi) - torch.special.xlogy(pi, pi_ref)).sum(-1)  # 0 log 0 = 0
    return expected_reward - beta * kl


checks.check_rlhf_objective(rlhf_objective)

# %% [markdown]
# At $\pi = \pi_{\mathrm{ref}}$ the KL term vanishes and $J$ is the reference's expected reward. Putting
# all mass on the best response gets more reward but pays a large KL.

# %%
# NBVAL_CHECK_OUTPUT
beta = 1.0
best = torch.zeros(6, dtype=torch.float64)
best[0] = 0.999
best[1:] = 0.001 / 5
for name, pi in [("pi_ref", world.pi_ref), ("almost all on 'superb'", best)]:
    print(f"{name:>24}: E[r] = {toy.expected_reward(pi, world.r).item():.4f}, "
          f"KL = {toy.kl_divergence(pi, world.pi_ref).item():.4f} nats, "
          f"J = {rlhf_objective(pi, world.pi_ref, world.r, beta).item():.4f}")

# %% [markdown]
# ## The maximiser in closed form
#
# **Derived.** Maximise $J$ over the simplex: one equality constraint, $\sum_y \pi(y) = 1$, so add a
# Lagrange multiplier $\lambda$ (the constraint $\pi \ge 0$ will hold by itself):
#
# $$\mathcal{L}(\pi,\lambda) = \sum_y \pi(y)\,r(y) - \beta\sum_y \pi(y)\log\frac{\pi(y)}{\pi_{\mathrm{ref}}(y)} + \lambda\Big(\sum_y \pi(y) - 1\Big).$$
#
# Stationarity in each $\pi(y)$:
# $\;\partial\mathcal{L}/\partial\pi(y) = r(y) - \beta\big(\log\frac{\pi(y)}{\pi_{\mathrm{ref}}(y)} + 1\big) + \lambda = 0,\;$
# so $\log\frac{\pi(y)}{\pi_{\mathrm{ref}}(y)} = \frac{r(y)}{\beta} + \frac{\lambda - \beta}{\beta}$, i.e.
# $\pi(y) = \pi_{\mathrm{ref}}(y)\,e^{r(y)/\beta}\cdot e^{(\lambda-\beta)/\beta}$. The last factor is the same for
# every $y$, and the constraint fixes it: it is $1/Z$. This is the **Gibbs distribution**
#
# $$\pi^*(y) = \frac{1}{Z}\,\pi_{\mathrm{ref}}(y)\,\exp\!\big(r(y)/\beta\big), \qquad Z = \sum_y \pi_{\mathrm{ref}}(y)\,\exp\!\big(r(y)/\beta\big),$$
#
# and $Z$ is its **partition function** (the name from statistical physics for the normaliser of
# $e^{\text{score}}$; notebook 01's Bradley-Terry model has one too). Stationarity says the gradient of
# $J$ is the *same number* for every response at $\pi^*$ (it equals $-\lambda$: no direction along the
# simplex improves $J$); at any other policy it is not. Checked with autograd:

# %%
# NBVAL_CHECK_OUTPUT
def grad_J(pi):
    """dJ/dpi(y) for each response y, by autograd (pi treated as free coordinates)."""
    pi = pi.clone().requires_grad_(True)
    rlhf_objective(pi, world.pi_ref, world.r, beta).backward()
    return pi.grad


beta = 1.0
g_star = grad_J(toy.optimal_policy(world.pi_ref, world.r, beta))
g_ref = grad_J(world.pi_ref)
print(f"at pi*:     dJ/dpi = {[round(v, 4) for v in g_star.tolist()]}   spread {(g_star.max() - g_star.min()).item():.1e}")
print(f"            beta log Z - beta = {(beta * toy.log_partition(world.pi_ref, world.r, beta) - beta).item():.4f} (= -lambda)")
print(f"at pi_ref:  dJ/dpi = {[round(v, 4) for v in g_ref.tolist()]}   spread {(g_ref.max() - g_ref.min()).item():.2f}")

# %% [markdown]
# A stationary point need not be the maximum. That it is, and the only one, follows from rewriting
# $J$ around $\pi^*$:
#
# Since $\pi^*$ satisfies $r(y) = \beta\log\frac{\pi^*(y)}{\pi_{\mathrm{ref}}(y)} + \beta\log Z$, substituting it into $J$ gives
#
# $$J(\pi) = \sum_y \pi(y)\Big[\beta\log\tfrac{\pi^*(y)}{\pi_{\mathrm{ref}}(y)} + \beta\log Z - \beta\log\tfrac{\pi(y)}{\pi_{\mathrm{ref}}(y)}\Big] = \beta\log Z \;-\; \beta\,\mathrm{KL}(\pi\,\|\,\pi^*).$$
#
# $\beta\log Z$ does not depend on $\pi$, and a KL is $\ge 0$ with equality only when the two
# distributions are equal. So **$J$ is maximised exactly at $\pi = \pi^*$**, and its maximum is $\beta\log Z$.

# %% [markdown]
# The identity $J(\pi) = \beta\log Z - \beta\,\mathrm{KL}(\pi\|\pi^*)$ holds for *every* $\pi$, not just
# at the optimum. Check it on a thousand random policies:

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
random_pis = torch.distributions.Dirichlet(torch.ones(6, dtype=torch.float64)).sample((1000,))  # (1000, 6)
pi_star = toy.optimal_policy(world.pi_ref, world.r, beta)
log_z = toy.log_partition(world.pi_ref, world.r, beta)
lhs = rlhf_objective(random_pis, world.pi_ref, world.r, beta)
rhs = beta * log_z - beta * toy.kl_divergence(random_pis, pi_star)
print(f"beta log Z = {beta * log_z.item():.4f}")
print(f"max |J(pi) - (beta log Z - beta KL(pi || pi*))| over 1000 policies = {(lhs - rhs).abs().max().item():.4f}")
print(f"J(pi*) = {rlhf_objective(pi_star, world.pi_ref, world.r, beta).item():.4f} "
      f">= J of every random policy: {bool((lhs <= rlhf_objective(pi_star, world.pi_ref, world.r, beta)).all())}")


# %% [markdown]
# ### Exercise 2 — the optimal policy
#
# Implement `optimal_policy(pi_ref, r, beta)` $=\pi_{\mathrm{ref}}\exp(r/\beta)/Z$ -- the closed form you just
# derived. The checker also tries $\beta = 0.001$, where $e^{r/\beta} = e^{2000}$ is no floating-point
# number at all, and neither is $Z$. Which quantity can you compute instead that describes the same
# distribution, and which library function turns it into probabilities safely?

# %%
def optimal_policy(pi_ref, r, beta):
    # YOUR CODE HERE: a (K,) distribution; stay finite for beta = 0.001
    raise NotImplementedError


checks.check_optimal_policy(optimal_policy)


# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def optimal_policy(pi_ref, r, beta):
    return torch.softmax(torch.log(pi_ref) + r / beta, dim=-1)


checks.check_optimal_policy(optimal_policy)

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# $\log\pi^*(y) = \log\pi_{\mathrm{ref}}(y) + r(y)/\beta - \log Z$ — a softmax of
# $\log\pi_{\mathrm{ref}} + r/\beta$, which `torch.softmax` computes without overflow.
#
# </details>

# %% [markdown]
# ## Closed form versus gradient ascent
#
# Forget the derivation for a moment and simply climb $J$: parametrise $\pi = \mathrm{softmax}(\theta)$,
# start at $\theta = \log\pi_{\mathrm{ref}}$ and follow the gradient (autograd computes it).
# `toy.ascend_objective` does this; both answers should agree.

# %%
# NBVAL_CHECK_OUTPUT
pi_closed = optimal_policy(world.pi_ref, world.r, beta)
pi_ascent, history = toy.ascend_objective(world.pi_ref, world.r, beta, steps=2000)
print(f"beta = {beta}")
print("pi*_closed :", [round(p, 4) for p in pi_closed.tolist()])
print("pi*_ascent :", [round(p, 4) for p in pi_ascent.tolist()])
print(f"max |pi*_closed - pi*_ascent| = {(pi_closed - pi_ascent).abs().max().item():.4f}")
print(f"J(pi*_closed) = {rlhf_objective(pi_closed, world.pi_ref, world.r, beta).item():.4f}, "
      f"J after ascent = {history[-1].item():.4f}, beta log Z = {beta * log_z.item():.4f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
viz.plot_objective_ascent(history, beta * log_z.item(), ax=axes[0])
axes[0].set_title(rf"gradient ascent on $J$ ($\beta$ = {beta})")
viz.plot_policies({"pi_ref": world.pi_ref, "pi* closed form": pi_closed, "gradient ascent": pi_ascent},
                  world.responses, ax=axes[1], title="the two maximisers coincide")
plt.tight_layout()
plt.show()

# %% [markdown]
# The agreement is not special to $\beta = 1$. At small $\beta$ the optimum sits near a corner of the
# simplex, where softmax gradients are tiny, so ascent converges more slowly — the closed form does not care.

# %%
# NBVAL_CHECK_OUTPUT
for b in (0.3, 1.0, 3.0, 10.0):
    pa, _ = toy.ascend_objective(world.pi_ref, world.r, b, steps=2000)
    err = (optimal_policy(world.pi_ref, world.r, b) - pa).abs().max().item()
    print(f"beta = {b:5.1f}: max |pi*_closed - pi*_ascent| = {err:.4f}")

# %% [markdown]
# ## What $\beta$ does
#
# ### Exercise 3 — predict the limits before you look
#
# Where does $\pi^* \propto \pi_{\mathrm{ref}}\,e^{r/\beta}$ go as $\beta\to 0$, and as $\beta\to\infty$? Reason it
# out from the formula, then write `beta_limits(pi_ref, r)` returning the two limiting
# distributions, without calling `optimal_policy`. Think about what happens when **two responses
# tie** for the highest reward — the checker tries that case.

# %%
def beta_limits(pi_ref, r):
    """(K,) pi_ref and (K,) rewards -> (limit as beta -> 0, limit as beta -> infinity), each (K,)."""
    raise NotImplementedError


checks.check_beta_limits(beta_limits)

# %% [markdown]
# **Solution** (hidden; open it after you have tried).

# %% cellView="form" jupyter={"source_hidden": true}
# @title Solution
# NBVAL_CHECK_OUTPUT
def beta_limits(pi_ref, r):
    best = torch.where(r == r.max(), pi_ref, torch.zeros_like(pi_ref))
    return best / best.sum(), pi_ref.clone()


checks.check_beta_limits(beta_limits)

# %% [markdown]
# <details><summary><b>Why it works</b> (open after the solution)</summary>
#
# Divide numerator and denominator by $e^{r_{\max}/\beta}$: every response below the top
# gets a factor $e^{-(r_{\max}-r)/\beta}\to 0$, the tied top ones keep factor 1, so $\pi^*$ tends to
# $\pi_{\mathrm{ref}}$ restricted to the best responses and renormalised. As $\beta\to\infty$, $e^{r/\beta}\to 1$.
#
# </details>

# %% [markdown]
# So $\pi^*$ has two limits:
#
# * **large $\beta$** — $e^{r/\beta}\to 1$: the KL penalty dominates and $\pi^*\to\pi_{\mathrm{ref}}$;
# * **small $\beta$** — the response with the largest reward dominates: $\pi^*\to$ the argmax of $r$.
#
# So a **larger $\beta$ keeps the policy closer to the reference**. (Some tutorials state this
# backwards; the formula settles it.)

# %%
# NBVAL_CHECK_OUTPUT
for b in (0.05, 0.3, 1.0, 3.0, 100.0):
    ps = optimal_policy(world.pi_ref, world.r, b)
    print(f"beta = {b:6.2f}: pi*('superb') = {ps[0].item():.4f}, "
          f"KL(pi* || pi_ref) = {toy.kl_divergence(ps, world.pi_ref).item():.4f} nats, "
          f"E[r] = {toy.expected_reward(ps, world.r).item():.4f}")

# %% [markdown]
# ### Try it: a slider on $\beta$
#
# Drag the slider (log scale). The title shows the two terms of the objective at $\pi^*$: the
# expected reward and the KL it costs.

# %%
# NBVAL_IGNORE_OUTPUT
viz.beta_slider(world.pi_ref, world.r, world.responses, beta=1.0)

# %% [markdown]
# The same information as a static picture (for readers on GitHub, where widgets do not run):
# left, how $\pi^*$ shares its mass among the responses as $\beta$ grows; middle, the objective and
# its two terms at $\pi^*$, all in reward units ($\mathbb{E}[r]$ and the penalty $\beta\,\mathrm{KL}$);
# right, the KL itself in nats. Reward and KL both fall as $\beta$ grows: less reward, less drift.

# %%
viz.plot_beta_sweep(world.pi_ref, world.r, world.responses)
plt.show()

# %% [markdown]
# ## Why RLHF needs reinforcement learning for text
#
# Here we wrote $\pi^*$ down because we could sum over all six responses. A language model's
# responses are **sequences**: with a vocabulary of $V$ tokens and responses of $T$ tokens there are
# $V^T$ of them, so neither $Z$ nor $\mathbb{E}_\pi[r]$ can be summed. RLHF therefore *samples*
# responses from $\pi$, scores them with a reward model and estimates the gradient from the samples
# (policy gradients, PPO — notebook 08). And $\pi^*$ cannot be used directly: we cannot even evaluate
# $\pi^*(y)$, because of $Z$.

# %%
# NBVAL_IGNORE_OUTPUT
from helpers.world import load_tokenizer, tiny_world

tiny_vocab = len(load_tokenizer(tiny_world()))  # the tiny profile's BPE (built here if missing: seconds)

# %%
# NBVAL_CHECK_OUTPUT
for name, vocab in [(f"tiny profile (V = {tiny_vocab:,})", tiny_vocab), ("GPT-2 (V = 50,257)", 50_257)]:
    for T in (20, 40):
        print(f"{name:>26}, T = {T}: V^T = 10^{T * math.log10(vocab):.0f} possible responses")

# %% [markdown]
# What sampling buys you, in the toy: estimate $\mathbb{E}_{\pi^*}[r]$ and $\mathrm{KL}(\pi^*\|\pi_{\mathrm{ref}})$
# from $n$ samples $y\sim\pi^*$ (the KL as the average of $\log\pi^*(y)-\log\pi_{\mathrm{ref}}(y)$). The
# estimates approach the exact sums at the Monte-Carlo rate $1/\sqrt n$ — that noise is what RL has to live with.
# Each estimate is printed with its standard error (notebook 00's Exercise 3), and how many SEs it
# lands from the exact value. (The two columns' errors move together: at $\pi^*$ the log-ratio
# $\log\frac{\pi^*}{\pi_{\mathrm{ref}}} = r/\beta - \log Z$ is the reward, rescaled and shifted.)

# %%
# NBVAL_CHECK_OUTPUT
exact_r = toy.expected_reward(pi_closed, world.r).item()
exact_kl = toy.kl_divergence(pi_closed, world.pi_ref).item()
print(f"exact: E[r] = {exact_r:.4f}, KL = {exact_kl:.4f} nats")
gen = torch.Generator().manual_seed(0)
for n in (10, 100, 10_000):
    ys = torch.multinomial(pi_closed, n, replacement=True, generator=gen)
    rs, logratios = world.r[ys], torch.log(pi_closed[ys]) - torch.log(world.pi_ref[ys])  # (n,) each
    print(f"n = {n:>6}: E[r] ~ {rs.mean().item():.3f} ± {(rs.std() / n ** 0.5).item():.3f}, "
          f"KL ~ {logratios.mean().item():.3f} ± {(logratios.std() / n ** 0.5).item():.3f} nats "
          f"(off by {abs(rs.mean().item() - exact_r) / (rs.std() / n ** 0.5).item():.1f} and "
          f"{abs(logratios.mean().item() - exact_kl) / (logratios.std() / n ** 0.5).item():.1f} SE)")

# %% [markdown]
# ## Summary
#
# * The KL-regularised objective $\mathbb{E}_\pi[r]-\beta\,\mathrm{KL}(\pi\|\pi_{\mathrm{ref}})$ equals
#   $\beta\log Z-\beta\,\mathrm{KL}(\pi\|\pi^*)$, so its maximiser is $\pi^*=\pi_{\mathrm{ref}}e^{r/\beta}/Z$.
# * Gradient ascent on the objective finds the same policy.
# * Larger $\beta$ keeps $\pi^*$ closer to $\pi_{\mathrm{ref}}$; smaller $\beta$ chases the reward.
# * For sequences, $Z$ is a sum over astronomically many responses — which is why RLHF samples.
#
# **Next (03):** turn $\pi^*$ around, express the reward through the policy, and watch $Z$ cancel:
# that is the DPO loss.
