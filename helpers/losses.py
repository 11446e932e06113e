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
    h = preference_logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    chosen_rewards = implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta)
    rejected_rewards = implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta)
    return losses, chosen_rewards, rejected_rewards


LOSS_TYPES = ("sigmoid", "ipo")


def preference_loss(loss_type: str, *logps: torch.Tensor, beta: float, label_smoothing: float = 0.0):
    """Dispatch by name (``"sigmoid"`` = DPO/cDPO, ``"ipo"``), as training scripts take it."""
    if loss_type == "sigmoid":
        return dpo_loss(*logps, beta=beta, label_smoothing=label_smoothing)
    if loss_type == "ipo":
        if label_smoothing:
            raise ValueError("label_smoothing applies to the sigmoid (DPO) loss only")
        return ipo_loss(*logps, beta=beta)
    raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {LOSS_TYPES}")
