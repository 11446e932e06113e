"""The discrete toy world of the theory notebooks (02, 03): one prompt, a handful of responses.

With K responses a policy is just a probability vector pi of shape (K,), so every quantity of the
DPO derivation can be computed exactly:

    objective   J(pi)  = E_{y~pi}[r(y)] - beta * KL(pi || pi_ref)
    optimum     pi*(y) = pi_ref(y) * exp(r(y) / beta) / Z,   Z = sum_y pi_ref(y) * exp(r(y) / beta)
    preferences P(y_w > y_l) = sigmoid(r(y_w) - r(y_l))                     (Bradley-Terry)

Every function works on the last dimension, so a batch of prompts is a (X, K) tensor. Everything
is float64: the toy is about exact agreement, not speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from helpers.config import torch_threads
from helpers.losses import dpo_loss, ipo_loss

DTYPE = torch.float64


@dataclass(frozen=True)
class ToyWorld:
    """One prompt, K responses, a reference policy and a reward."""

    prompt: str
    responses: tuple[str, ...]
    pi_ref: torch.Tensor  # (K,) sums to 1
    r: torch.Tensor  # (K,) reward of each response


def make_toy() -> ToyWorld:
    """The course's toy: a one-word film review. The reference model likes lukewarm words."""
    responses = ("superb", "good", "okay", "meh", "bad", "awful")
    pi_ref = torch.tensor([0.05, 0.20, 0.30, 0.25, 0.15, 0.05], dtype=DTYPE)
    r = torch.tensor([2.0, 1.0, 0.3, -0.4, -1.0, -2.0], dtype=DTYPE)
    return ToyWorld(prompt="The film, in one word:", responses=responses, pi_ref=pi_ref, r=r)


def as_tensor(x) -> torch.Tensor:
    """float64 tensor from a list / array / tensor."""
    return torch.as_tensor(x, dtype=DTYPE)


def single_thread():
    """Run torch on one thread inside the block, then restore the thread count.

    The toy's tensors have a few dozen elements; with several threads on a busy 2-core machine
    ``F.logsigmoid`` alone was measured at ~20 ms per call, against ~2 us on one thread.
    """
    return torch_threads(1)


# ----------------------------------------------------------------------------- the objective


def expected_reward(pi, r) -> torch.Tensor:
    """E_{y~pi}[r(y)] = sum_y pi(y) r(y).  (..., K) -> (...)"""
    return (as_tensor(pi) * as_tensor(r)).sum(-1)


def kl_divergence(pi, pi_ref) -> torch.Tensor:
    """KL(pi || pi_ref) = sum_y pi(y) log(pi(y) / pi_ref(y)), in nats; 0 log 0 = 0.  (..., K) -> (...)"""
    pi, pi_ref = as_tensor(pi), as_tensor(pi_ref)
    terms = pi * (torch.log(pi) - torch.log(pi_ref))
    return torch.where(pi > 0, terms, torch.zeros_like(terms)).sum(-1)


def rlhf_objective(pi, pi_ref, r, beta: float) -> torch.Tensor:
    """J(pi) = E_pi[r] - beta * KL(pi || pi_ref): the KL-constrained RLHF objective.  (..., K) -> (...)"""
    return expected_reward(pi, r) - beta * kl_divergence(pi, pi_ref)


def log_partition(pi_ref, r, beta: float) -> torch.Tensor:
    """log Z = log sum_y pi_ref(y) exp(r(y) / beta), computed with logsumexp (no overflow at small beta)."""
    return torch.logsumexp(torch.log(as_tensor(pi_ref)) + as_tensor(r) / beta, dim=-1)


def optimal_policy(pi_ref, r, beta: float) -> torch.Tensor:
    """pi*(y) = pi_ref(y) exp(r(y) / beta) / Z: the maximiser of ``rlhf_objective`` (a Gibbs distribution).

    Computed as softmax(log pi_ref + r / beta), which is the same thing without overflow.
    """
    return torch.softmax(torch.log(as_tensor(pi_ref)) + as_tensor(r) / beta, dim=-1)


def ascend_objective(pi_ref, r, beta: float, steps: int = 2000, lr: float = 2.0):
    """Maximise ``rlhf_objective`` by plain gradient ascent on the logits of pi (autograd).

    pi = softmax(theta), theta starts at log pi_ref (pi = pi_ref, KL = 0).

    Returns:
        pi: (..., K) the policy after ``steps`` steps.
        objective: (steps + 1,) J at every step (summed over a batch of prompts).
    """
    pi_ref, r = as_tensor(pi_ref), as_tensor(r)
    theta = torch.log(pi_ref).clone().requires_grad_(True)
    history = []
    with single_thread():
        pi = _ascend(theta, pi_ref, r, beta, steps, lr, history)
    return pi, torch.tensor(history, dtype=DTYPE)


def _ascend(theta, pi_ref, r, beta, steps, lr, history):
    for _ in range(steps):
        j = rlhf_objective(torch.softmax(theta, -1), pi_ref, r, beta).sum()
        history.append(j.item())
        (grad,) = torch.autograd.grad(j, theta)
        with torch.no_grad():
            theta += (lr / beta) * grad  # J / beta has curvature O(1) at any beta
    pi = torch.softmax(theta.detach(), -1)
    history.append(rlhf_objective(pi, pi_ref, r, beta).sum().item())
    return pi


def implicit_reward(pi, pi_ref, beta: float) -> torch.Tensor:
    """r_hat(y) = beta * log(pi(y) / pi_ref(y)): the reward a policy implies (DPO's reparametrisation)."""
    return beta * (torch.log(as_tensor(pi)) - torch.log(as_tensor(pi_ref)))


def reward_from_policy(pi_star, pi_ref, beta: float, log_z) -> torch.Tensor:
    """Invert pi* = pi_ref exp(r/beta) / Z:  r(y) = beta log(pi*(y) / pi_ref(y)) + beta log Z."""
    return implicit_reward(pi_star, pi_ref, beta) + beta * as_tensor(log_z).unsqueeze(-1)


# ----------------------------------------------------------------------------- preferences


def bradley_terry_prob(r_w, r_l) -> torch.Tensor:
    """P(y_w > y_l) = sigmoid(r_w - r_l) = exp(r_w) / (exp(r_w) + exp(r_l))."""
    return torch.sigmoid(as_tensor(r_w) - as_tensor(r_l))


def preference_matrix(r) -> torch.Tensor:
    """P[..., i, j] = P(y_i > y_j) under Bradley-Terry.  (..., K) -> (..., K, K)"""
    r = as_tensor(r)
    return torch.sigmoid(r.unsqueeze(-1) - r.unsqueeze(-2))


def sample_preferences(r, n_pairs: int, seed: int = 0, pi_sample=None):
    """Draw ``n_pairs`` labelled pairs: two different responses, then a Bradley-Terry coin flip.

    Args:
        r: (K,) true rewards.
        n_pairs: number of pairs.
        seed: seed of a private generator (the global RNG is untouched).
        pi_sample: (K,) distribution the two responses are drawn from (e.g. pi_ref, as when an SFT
            model generates both); uniform when None. Pairs of identical responses are redrawn.
    Returns:
        chosen, rejected: (n_pairs,) int64 response indices, y_w and y_l.
    """
    r = as_tensor(r)
    k = r.shape[-1]
    g = torch.Generator().manual_seed(seed)
    weights = torch.ones(k, dtype=DTYPE) if pi_sample is None else as_tensor(pi_sample)
    first = torch.multinomial(weights, n_pairs, replacement=True, generator=g)
    # the second response is drawn from the same distribution with the first one's mass removed
    rows = weights.expand(n_pairs, k).clone()
    rows[torch.arange(n_pairs), first] = 0.0
    second = torch.multinomial(rows, 1, generator=g).squeeze(1)
    p_first_wins = bradley_terry_prob(r[first], r[second])
    first_wins = torch.rand(n_pairs, generator=g, dtype=DTYPE) < p_first_wins
    chosen = torch.where(first_wins, first, second)
    rejected = torch.where(first_wins, second, first)
    return chosen, rejected


def deterministic_preferences(r):
    """Every pair of responses once, the higher-reward one always preferred (no label noise).

    Returns:
        chosen, rejected: (K*(K-1)/2,) int64 indices with r[chosen] > r[rejected].
    """
    r = as_tensor(r)
    i, j = torch.triu_indices(r.shape[-1], r.shape[-1], offset=1)
    i_wins = r[i] > r[j]
    return torch.where(i_wins, i, j), torch.where(i_wins, j, i)


def count_wins(chosen, rejected, n_responses: int) -> torch.Tensor:
    """N[i, j] = how many times y_i was preferred to y_j.  -> (K, K) float64"""
    flat = torch.as_tensor(chosen) * n_responses + torch.as_tensor(rejected)
    return torch.bincount(flat, minlength=n_responses * n_responses).reshape(n_responses, n_responses).to(DTYPE)


def bt_win_gap(scores, chosen, rejected) -> torch.Tensor:
    """Observed minus expected wins of each response under Bradley-Terry scores: the gradient of the
    summed log-likelihood sum log sigmoid(s_w - s_l) with respect to ``scores``. Zero at the
    maximum-likelihood scores (the moment condition).  -> (K,)"""
    scores = as_tensor(scores)
    chosen, rejected = torch.as_tensor(chosen), torch.as_tensor(rejected)
    p_win = torch.sigmoid(scores[chosen] - scores[rejected])  # P(the recorded winner wins), (N,)
    k = scores.shape[-1]
    # the winner won once and was expected to win p times; the loser expected to win 1 - p, won 0
    observed = torch.bincount(chosen, minlength=k).to(DTYPE)
    expected = torch.zeros(k, dtype=DTYPE).index_add_(0, chosen, p_win).index_add_(0, rejected, 1 - p_win)
    return observed - expected


def bayes_accuracy(r, chosen, rejected) -> torch.Tensor:
    """The highest expected accuracy any scorer can have on these pairs when the labels are
    Bradley-Terry coin flips of the true rewards ``r``: predict the likelier winner, right with
    probability sigma(|r_i - r_j|). The labels' order does not matter.  -> ()"""
    r = as_tensor(r)
    return torch.sigmoid((r[torch.as_tensor(chosen)] - r[torch.as_tensor(rejected)]).abs()).mean()


def fit_bt_rewards(chosen, rejected, n_responses: int, init=None, steps: int = 100):
    """Maximum-likelihood Bradley-Terry scores from labelled pairs (L-BFGS on ``bradley_terry_loss``).

    The likelihood depends only on score *differences*, so its gradient sums to zero over the
    responses: the mean score never moves from its initial value (``init``, zeros by default).

    Returns:
        (K,) fitted scores.
    """
    from helpers.losses import bradley_terry_loss

    wins = count_wins(chosen, rejected, n_responses)
    i, j = torch.nonzero(wins, as_tuple=True)
    weights = wins[i, j] / wins.sum()
    s = (torch.zeros(n_responses, dtype=DTYPE) if init is None else as_tensor(init).clone()).requires_grad_(True)
    opt = torch.optim.LBFGS([s], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = (weights * bradley_terry_loss(s[i], s[j])).sum()  # = mean over all pairs
        loss.backward()
        return loss

    with single_thread():
        opt.step(closure)
    return s.detach()


# ----------------------------------------------------------------------------- fitting a policy


def fit_toy_policy(pi_ref, chosen, rejected, beta: float, loss: str = "dpo", label_smoothing: float = 0.0,
                   optimizer: str = "lbfgs", steps: int = 200, lr: float = 0.1):
    """Fit pi_theta = softmax(theta) to preference pairs with ``helpers.losses.dpo_loss`` (or ``ipo_loss``).

    The loss is the mean over all pairs; pairs are grouped by (chosen, rejected) so a million pairs
    cost no more than K^2. theta starts at log pi_ref.

    Args:
        pi_ref: (K,) reference policy.
        chosen, rejected: (N,) response indices of the pairs.
        beta: KL strength.
        loss: "dpo" (``dpo_loss``, cDPO when label_smoothing > 0) or "ipo" (``ipo_loss``).
        optimizer: "lbfgs" (to convergence, for problems with a finite optimum) or "adam"
            (``steps`` fixed steps of size ``lr``, to watch a trajectory).
    Returns:
        pi: (K,) fitted policy.
        trajectory: (steps + 1, K) pi after each Adam step (for L-BFGS: just start and end).
    """
    pi_ref = as_tensor(pi_ref)
    k = pi_ref.shape[-1]
    wins = count_wins(chosen, rejected, k)
    i, j = torch.nonzero(wins, as_tuple=True)
    weights = wins[i, j] / wins.sum()
    ref_logps = torch.log(pi_ref)
    theta = ref_logps.clone().requires_grad_(True)

    def mean_loss():
        logps = torch.log_softmax(theta, -1)
        args = (logps[i], logps[j], ref_logps[i], ref_logps[j])
        if loss == "dpo":
            losses = dpo_loss(*args, beta=beta, label_smoothing=label_smoothing)[0]
        elif loss == "ipo":
            losses = ipo_loss(*args, beta=beta)[0]
        else:
            raise ValueError(f"loss must be 'dpo' or 'ipo', got {loss!r}")
        return (weights * losses).sum()

    trajectory = [torch.softmax(theta.detach(), -1)]
    with single_thread():
        _optimise(theta, mean_loss, trajectory, optimizer, steps, lr)
    return trajectory[-1], torch.stack(trajectory)


def _optimise(theta, mean_loss, trajectory, optimizer, steps, lr):
    """Minimise ``mean_loss()`` over ``theta``, appending softmax(theta) to ``trajectory``."""
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-12, tolerance_change=1e-14)

        def closure():
            opt.zero_grad()
            value = mean_loss()
            value.backward()
            return value

        opt.step(closure)
        trajectory.append(torch.softmax(theta.detach(), -1))
    elif optimizer == "adam":
        opt = torch.optim.Adam([theta], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            mean_loss().backward()
            opt.step()
            trajectory.append(torch.softmax(theta.detach(), -1))
    else:
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")


def dpo_gradient_weight(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                        beta: float) -> torch.Tensor:
    """sigma(r_hat_l - r_hat_w): how strongly DPO's gradient pushes on a pair.

    d loss / d theta = -beta * sigma(r_hat_l - r_hat_w) * [grad log pi(y_w) - grad log pi(y_l)]
    The weight is near 1 when the implicit reward ranks the pair wrongly and near 0 when it already
    ranks it right by a wide margin.
    """
    r_hat_w = beta * (as_tensor(policy_chosen_logps) - as_tensor(ref_chosen_logps))
    r_hat_l = beta * (as_tensor(policy_rejected_logps) - as_tensor(ref_rejected_logps))
    return torch.sigmoid(r_hat_l - r_hat_w)


def log_softmax(logits) -> torch.Tensor:
    """log softmax over the last dimension (used by the warm-up exercise of notebook 00)."""
    return F.log_softmax(as_tensor(logits), dim=-1)
