"""Every preference loss, side by side.

Notation follows Rafailov et al. (2023). For a batch of B preference pairs (x, y_w, y_l):

    policy_chosen_logps   = log pi_theta(y_w | x)      (B,)  summed over response tokens
    policy_rejected_logps = log pi_theta(y_l | x)      (B,)
    ref_chosen_logps      = log pi_ref(y_w | x)        (B,)
    ref_rejected_logps    = log pi_ref(y_l | x)        (B,)

    h = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)

h is the difference of the two log-ratios; beta * h is the difference of the implicit rewards
r_hat(x, y) = beta * log(pi_theta(y|x) / pi_ref(y|x)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the Bradley-Terry model, per pair.

    P(y_w > y_l) = sigmoid(s_w - s_l), so the loss is -log sigmoid(s_w - s_l).

    Args:
        chosen_scores: (B,) scores (rewards) of the preferred responses.
        rejected_scores: (B,) scores of the dispreferred responses.
    Returns:
        (B,) per-pair losses.
    """
    # logsigmoid, not log(sigmoid): sigmoid(-100) underflows to 0 in float32 and log(0) = -inf.
    return -F.logsigmoid(chosen_scores - rejected_scores)


def preference_logratios(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """h = (log pi_c - log pi_r) - (log ref_c - log ref_r), shape (B,)."""
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = ref_chosen_logps - ref_rejected_logps
    return pi_logratios - ref_logratios


def implicit_rewards(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float
) -> torch.Tensor:
    """r_hat = beta * (log pi_theta - log pi_ref), detached: a metric, not part of the graph."""
    return beta * (policy_logps - ref_logps).detach()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss (Rafailov et al. 2023, eq. 7), and conservative DPO when label_smoothing > 0.

        loss = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

    eps = label_smoothing is the probability that a preference label is flipped (cDPO); with
    eps = 0 this is plain DPO. At pi_theta = pi_ref, h = 0 and the loss is ln 2 for every eps.

    Args:
        policy_chosen_logps: (B,) summed log-probs of chosen responses under the policy.
        policy_rejected_logps: (B,) same for rejected responses.
        ref_chosen_logps: (B,) summed log-probs of chosen responses under the reference.
        ref_rejected_logps: (B,) same for rejected responses.
        beta: KL-penalty strength; larger beta keeps the policy closer to the reference.
        label_smoothing: eps in [0, 0.5).
    Returns:
        losses: (B,) per-pair losses (take .mean() for the batch loss).
        chosen_rewards: (B,) beta * (policy_chosen_logps - ref_chosen_logps), detached.
        rejected_rewards: (B,) beta * (policy_rejected_logps - ref_rejected_logps), detached.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    logits = beta * preference_logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    # logsigmoid stays finite for |beta*h| up to float32's range; log(sigmoid(.)) is -inf past ~-88.
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    chosen_rewards = implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta)
    rejected_rewards = implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta)
    return losses, chosen_rewards, rejected_rewards


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IPO (Azar et al. 2023): regress h onto the finite target 1 / (2 beta).

        loss = (h - 1 / (2 beta))^2

    Here h uses log-probs *summed* over response tokens, as everywhere in this course. TRL's
    ``loss_type="ipo"`` averages log-probs per token instead, so its h (and its best beta) differ
    from ours by a factor of the response length.

    Unlike DPO, whose loss keeps falling as h -> infinity (pushing pi(y_l) -> 0 on deterministic
    preferences), IPO stops at a finite margin.

    Args/Returns: as ``dpo_loss``.
    """
    if not beta > 0:
        raise ValueError(f"ipo_loss: beta must be > 0 (the target margin is 1 / (2 beta)), got {beta!r}")
    h = preference_logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    chosen_rewards = implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta)
    rejected_rewards = implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta)
    return losses, chosen_rewards, rejected_rewards


def soft_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    chosen_probs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO against a label *probability* instead of a certain label.

        loss = -p * log sigmoid(beta * h) - (1 - p) * log sigmoid(-beta * h),   p = P(y_w > y_l)

    The cross-entropy between the annotator's preference probability p and the model's
    sigma(beta h). With p = 1 it is ``dpo_loss``; with the same p for every pair, cDPO
    (eps = 1 - p). Its minimum over h is at beta * h = logit(p): when the labels come from a
    Bradley-Terry annotator, p = sigma((r_w - r_l) / tau), that is beta * h = (r_w - r_l) / tau, so
    the minimiser is pi_ref * exp(r / (tau * beta)) / Z -- the KL-optimal policy, at a finite KL.
    Certain labels (p = 1) have no finite minimiser: the loss falls for ever as h grows.

    Args: as ``dpo_loss``, plus
        chosen_probs: (B,) p in [0, 1], the probability that ``chosen`` is the preferred response
            (``helpers.pairs.label_probabilities``; 0/1 for sampled or certain labels).
    Returns: as ``dpo_loss``.
    """
    p = torch.as_tensor(chosen_probs, dtype=policy_chosen_logps.dtype, device=policy_chosen_logps.device)
    if p.shape != policy_chosen_logps.shape:
        raise ValueError(f"chosen_probs has shape {tuple(p.shape)}, the log-probs {tuple(policy_chosen_logps.shape)}")
    if bool(((p < 0) | (p > 1) | torch.isnan(p)).any()):
        raise ValueError("chosen_probs must lie in [0, 1] (the probability that chosen is preferred)")
    logits = beta * preference_logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    losses = -p * F.logsigmoid(logits) - (1.0 - p) * F.logsigmoid(-logits)
    chosen_rewards = implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta)
    rejected_rewards = implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta)
    return losses, chosen_rewards, rejected_rewards


# ----------------------------------------------------------------------------- lists of responses
# The losses below see all k sampled responses of a prompt at once: (B, K) log-probs, a (B, K) mask
# (False where a prompt has fewer than K usable samples) and (B, K) ground-truth rewards.


def _masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax over the last dimension, the masked-out entries excluded (their value: 0)."""
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.log_softmax(logits, dim=-1).masked_fill(~mask, 0.0)


def listwise_dpo_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    rewards: torch.Tensor,
    beta: float,
    tau: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Listwise DPO: the k implicit rewards of a prompt's responses, as a softmax, fitted to
    softmax(r / tau) by cross-entropy.

        q_i = softmax_i(r_i / tau),   m_i = softmax_i(beta * (log pi_theta(y_i) - log pi_ref(y_i)))
        loss = -sum_i q_i log m_i

    Minimised where beta * log(pi_theta / pi_ref) = r / tau + c(x): the policy pi_ref * exp(r / (tau
    beta)) / Z again. With k = 2 it is ``soft_dpo_loss`` with p = sigma((r_1 - r_2) / tau) (tested).
    Z(x) cancels inside the softmax exactly as in the pairwise derivation.

    Args:
        policy_logps, ref_logps: (B, K) summed log-probs of each response.
        rewards: (B, K) ground-truth rewards (or scores).
        mask: (B, K) bool, True for a real response; default all.
    Returns:
        (B,) per-prompt losses.
    """
    mask = torch.ones_like(policy_logps, dtype=torch.bool) if mask is None else mask.bool()
    target = torch.softmax(rewards.to(policy_logps.dtype).masked_fill(~mask, float("-inf")) / tau, dim=-1)
    log_model = _masked_log_softmax(beta * (policy_logps - ref_logps), mask)
    return -(target * log_model).sum(-1)


def distillation_loss(policy_logps: torch.Tensor, rewards: torch.Tensor, beta: float,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """pi* distilled: the negative log-likelihood of a prompt's samples y_i ~ pi_ref, each weighted
    by pi*_beta's self-normalised importance weight w_i = softmax_i(r_i / beta).

        loss = -sum_i w_i log pi_theta(y_i | x)

    Maximum likelihood on pi*'s own samples, estimated from pi_ref's (``helpers.optimum``): with many
    samples per prompt its minimiser is pi*_beta. No pairs, no reference model in the loss: the
    yardstick of what the model class reaches from the same samples.

    Args:
        policy_logps: (B, K) summed log-probs. rewards: (B, K). mask: (B, K) bool, default all.
    Returns:
        (B,) per-prompt losses.
    """
    mask = torch.ones_like(policy_logps, dtype=torch.bool) if mask is None else mask.bool()
    weights = torch.softmax(rewards.to(policy_logps.dtype).masked_fill(~mask, float("-inf")) / beta, dim=-1)
    return -(weights * policy_logps.masked_fill(~mask, 0.0)).sum(-1)


LOSS_TYPES = ("sigmoid", "ipo", "soft")


def preference_loss(loss_type: str, *logps: torch.Tensor, beta: float, label_smoothing: float = 0.0,
                    chosen_probs: torch.Tensor | None = None):
    """Dispatch by name (``"sigmoid"`` = DPO/cDPO, ``"ipo"``, ``"soft"`` = ``soft_dpo_loss`` with the
    pairs' ``chosen_probs``), as training scripts take it."""
    if loss_type == "soft":
        if chosen_probs is None:
            raise ValueError("loss_type 'soft' needs each pair's chosen_prob (helpers.pairs.annotate_pairs)")
        if label_smoothing:
            raise ValueError("label_smoothing applies to the sigmoid (DPO) loss only")
        return soft_dpo_loss(*logps, beta=beta, chosen_probs=chosen_probs)
    if loss_type == "sigmoid":
        return dpo_loss(*logps, beta=beta, label_smoothing=label_smoothing)
    if loss_type == "ipo":
        if label_smoothing:
            raise ValueError("label_smoothing applies to the sigmoid (DPO) loss only")
        return ipo_loss(*logps, beta=beta)
    raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}")
