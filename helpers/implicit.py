"""Implicit rewards made visible: r_hat(x, y) = beta * log(pi_theta(y|x) / pi_ref(y|x)).

DPO never fits a reward model, yet a trained policy *is* one (Rafailov et al. 2023): the log-ratio
to the reference, times beta, is the reward the policy is optimal for (up to a prompt-only term
beta * log Z(x), which cancels in every comparison of two responses to the same prompt).

Because log pi(y|x) is a sum over tokens, so is the implicit reward:

    r_hat(x, y) = sum_t beta * (log pi_theta(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t))

and each term is a per-token credit (Rafailov et al. 2024, "From r to Q*"): which tokens the policy
raised (> 0) or lowered (< 0) relative to the reference. This module computes those quantities,
compares them with the ground-truth reward, and runs the beta sweep behind the reward-vs-KL
frontier, with best-of-N sampling from the SFT model as a reference curve.

Layer 4 (beside ``viz``): it uses ``train``, ``evaluate`` and ``pairs`` (layer 3).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

from helpers.data import collate_preferences, pad_token_id_of, tokenize_preference, tokenize_preferences
from helpers.logprobs import token_logprobs

# --------------------------------------------------------------------------------------------
# token- and sequence-level implicit rewards
# --------------------------------------------------------------------------------------------


def token_implicit_rewards_from_logits(policy_logits: torch.Tensor, ref_logits: torch.Tensor,
                                       labels: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """beta * (log pi_theta(y_t|.) - log pi_ref(y_t|.)) for every scored token.

    Args:
        policy_logits, ref_logits: (B, T, V).
        labels: (B, T), -100 where not scored (prompt, padding).
        beta: the DPO beta the policy was trained with.
    Returns:
        rewards: (B, T-1) float32, 0 where masked; entry t belongs to token labels[:, t+1].
        mask: (B, T-1) bool.
    """
    policy_logps, mask = token_logprobs(policy_logits, labels)
    ref_logps, _ = token_logprobs(ref_logits, labels)
    return beta * (policy_logps - ref_logps) * mask, mask


@torch.no_grad()
def token_implicit_rewards(policy, ref_model, batch: dict, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token implicit rewards of a collated batch (``input_ids``, ``attention_mask``, ``labels``).

    Both models run in eval mode (dropout off); their sum over a row is the sequence's r_hat.

    Returns:
        rewards: (B, T-1) float32 on the CPU, 0 where masked; mask: (B, T-1) bool.
    """
    device = next(policy.parameters()).device
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}
    was = policy.training, ref_model.training
    policy.eval()
    ref_model.eval()
    try:
        policy_logits = policy(**inputs).logits
        ref_logits = ref_model(**inputs).logits
    finally:
        policy.train(was[0])
        ref_model.train(was[1])
    rewards, mask = token_implicit_rewards_from_logits(policy_logits, ref_logits, batch["labels"].to(device), beta)
    return rewards.float().cpu(), mask.cpu()


def _examples_for_responses(tokenizer, prompts: list[str], responses: list[str], max_length: int,
                            max_prompt_length: int, ended: list[bool]) -> list[dict]:
    """Tokenize (prompt, response) with ``helpers.data`` (prompt masked; EOS appended and scored
    only where the response ended -- one cut at ``max_new_tokens`` is scored as generated).

    ``tokenize_preference`` tokenizes pairs; each response is passed as both halves and only the
    chosen half is used. (An empty response is allowed here: it is scored on its EOS alone.)
    """
    records = [{"prompt": p, "chosen": r, "rejected": r, "chosen_ended": bool(e), "rejected_ended": bool(e)}
               for p, r, e in zip(prompts, responses, ended)]
    return [tokenize_preference(rec, tokenizer, max_length, max_prompt_length, index=i) for i, rec in enumerate(records)]


def response_token_rewards(policy, ref_model, tokenizer, prompts: list[str], responses: list[str], beta: float,
                           max_length: int = 64, max_prompt_length: int = 16, batch_size: int = 64,
                           ended: list[bool] | None = None) -> list[dict]:
    """Token-level implicit rewards of each (prompt, response), ready to draw as a heat map.

    Args:
        ended: one bool per response, False for one cut at ``max_new_tokens`` (a pair's
            ``chosen_ended``/``rejected_ended``, ``sample_policy``'s ``ended``); such a response is
            scored as generated, without an EOS -- as ``pair_implicit_rewards`` scores it. None: all ended.

    Returns:
        one dict per response: ``prompt``, ``response``, ``tokens`` (the scored tokens as text, the
        response's tokens then ``<|endoftext|>`` where it ended), ``ids``, ``rewards`` (list of float,
        one per token), ``total`` (their sum = r_hat(x, y)).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    ended = [True] * len(responses) if ended is None else list(ended)
    if len(ended) != len(responses):
        raise ValueError(f"{len(responses)} responses but {len(ended)} 'ended' flags")
    examples = _examples_for_responses(tokenizer, prompts, responses, max_length, max_prompt_length, ended)
    pad = pad_token_id_of(tokenizer)
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = collate_preferences(chunk, pad)
        n = len(chunk)
        batch = {k: v[:n] for k, v in batch.items()}  # the chosen rows only
        rewards, mask = token_implicit_rewards(policy, ref_model, batch, beta)
        labels = batch["labels"][:, 1:]
        for row in range(n):
            keep = mask[row]
            ids = labels[row][keep].tolist()
            values = rewards[row][keep].tolist()
            i = start + row
            out.append({"prompt": prompts[i], "response": responses[i], "ids": ids,
                        "tokens": [tokenizer.decode([t]) for t in ids], "rewards": values,
                        "total": float(sum(values))})
    return out


@torch.no_grad()
def pair_logps(model, tokenizer, pairs, max_length: int = 64, max_prompt_length: int = 16,
               batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(y_w|x) and log pi(y_l|x) for every pair (summed over response tokens + EOS).

    Returns:
        chosen_logps, rejected_logps: (N,) float32 on the CPU, in the order of ``pairs``.
    """
    from helpers.logprobs import concatenated_forward

    examples = tokenize_preferences(pairs, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
    pad = pad_token_id_of(tokenizer)
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    chosen, rejected = [], []
    try:
        for start in range(0, len(examples), batch_size):
            batch = collate_preferences(examples[start:start + batch_size], pad)
            batch = {k: v.to(device) for k, v in batch.items()}
            c, r = concatenated_forward(model, batch)
            chosen.append(c.float().cpu())
            rejected.append(r.float().cpu())
    finally:
        model.train(was)
    return torch.cat(chosen), torch.cat(rejected)


def pair_implicit_rewards(policy, ref_model, tokenizer, pairs, beta: float, max_length: int = 64,
                          max_prompt_length: int = 16, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Implicit rewards of the chosen and rejected response of every pair.

    Returns:
        dict of (N,) arrays: ``chosen``, ``rejected`` (beta * log-ratios), ``margins`` (chosen -
        rejected), and the raw ``policy_chosen_logps`` ... ``ref_rejected_logps``.
    """
    pc, pr = pair_logps(policy, tokenizer, pairs, max_length, max_prompt_length, batch_size)
    rc, rr = pair_logps(ref_model, tokenizer, pairs, max_length, max_prompt_length, batch_size)
    chosen = beta * (pc - rc)
    rejected = beta * (pr - rr)
    return {"chosen": chosen.numpy(), "rejected": rejected.numpy(), "margins": (chosen - rejected).numpy(),
            "policy_chosen_logps": pc.numpy(), "policy_rejected_logps": pr.numpy(),
            "ref_chosen_logps": rc.numpy(), "ref_rejected_logps": rr.numpy()}


def pearson(x, y) -> float:
    """Pearson correlation of two 1-D arrays (NaN when either is constant)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson of the ranks, ties averaged: ``scipy.stats.spearmanr``)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def ranking_accuracy(chosen_scores, rejected_scores) -> float:
    """Fraction of pairs whose chosen score is higher; a tie counts one half."""
    c, r = np.asarray(chosen_scores, np.float64), np.asarray(rejected_scores, np.float64)
    if c.shape != r.shape or c.ndim != 1 or len(c) == 0:
        raise ValueError(f"need two equal-length 1-D arrays, got {c.shape} and {r.shape}")
    bad = np.flatnonzero(np.isnan(c) | np.isnan(r))
    if len(bad):  # a NaN compares False both ways: it would count as a wrong ranking, silently
        raise ValueError(f"pair {bad[0]} has a NaN score ({len(bad)} of {len(c)} pairs): a ranking needs numbers")
    return float(((c > r) + 0.5 * (c == r)).mean())


def implicit_vs_true(implicit, true) -> dict[str, float]:
    """How well the implicit rewards of N responses track their ground-truth rewards.

    Pairwise accuracy: over all pairs (i, j) with different true rewards, how often the implicit
    reward orders them the same way -- what the Bradley-Terry model cares about. (The implicit
    reward is defined only up to a per-prompt constant beta * log Z(x), so comparisons across
    prompts mix in that constant: the within-prompt pair accuracy, from ``ranking_accuracy`` on
    held-out pairs, is the cleaner number.)

    Returns:
        ``pearson``, ``spearman``, ``pairwise_accuracy``, ``n``.
    """
    imp, tru = np.asarray(implicit, np.float64), np.asarray(true, np.float64)
    if imp.shape != tru.shape:
        raise ValueError(f"shapes differ: {imp.shape} vs {tru.shape}")
    di = imp[:, None] - imp[None, :]
    dt = tru[:, None] - tru[None, :]
    upper = np.triu(np.ones_like(dt, dtype=bool), k=1) & (dt != 0)
    agree = (np.sign(di[upper]) == np.sign(dt[upper])) + 0.5 * (di[upper] == 0)
    return {"pearson": pearson(imp, tru), "spearman": spearman(imp, tru),
            "pairwise_accuracy": float(agree.mean()) if upper.any() else float("nan"), "n": int(len(imp))}


def calibration_slope(implicit, rewards, groups) -> float:
    """The within-prompt least-squares slope of implicit rewards on true rewards.

    beta * log(pi_theta / pi_ref) is a reward only up to a per-prompt constant, so both are centred
    per prompt (``groups``: the prompt of each response) before the slope is fitted. A policy at
    pi*_{tau beta} has implicit rewards r / tau + c(x): slope 1 / tau (1 for the KL-optimal policy
    of the same beta); below it the policy moved less than the target asks, above it more.
    """
    imp, tru, g = (np.asarray(a) for a in (implicit, rewards, groups))
    imp, tru = imp.astype(np.float64), tru.astype(np.float64)
    if not imp.shape == tru.shape == g.shape or imp.ndim != 1:
        raise ValueError(f"need three equal-length 1-D arrays, got {imp.shape}, {tru.shape}, {g.shape}")
    for key in np.unique(g):
        at = g == key
        imp[at] -= imp[at].mean()
        tru[at] -= tru[at].mean()
    if not (tru ** 2).sum() > 0:
        return float("nan")
    return float((imp * tru).sum() / (tru ** 2).sum())


def token_reward_table(rows: list[dict], min_count: int = 5) -> list[dict]:
    """Average per-token implicit reward of each distinct token over many responses.

    Args:
        rows: ``response_token_rewards`` output.
        min_count: drop tokens seen fewer times (single samples are noisy).
    Returns:
        one dict per token, sorted by mean reward (highest first): ``token``, ``mean``, ``count``.
    """
    sums, counts = defaultdict(float), defaultdict(int)
    for row in rows:
        for tok, value in zip(row["tokens"], row["rewards"]):
            sums[tok] += value
            counts[tok] += 1
    table = [{"token": t, "mean": sums[t] / counts[t], "count": counts[t]} for t in sums if counts[t] >= min_count]
    return sorted(table, key=lambda d: -d["mean"])


# --------------------------------------------------------------------------------------------
# best-of-N from SFT: the reference curve of the frontier
# --------------------------------------------------------------------------------------------


def bon_kl_bound(n: int) -> float:
    """KL(pi_BoN || pi_ref) <= log n - (n - 1) / n (exact for continuous, tie-free rewards).

    Beirami et al. (2024), "Theoretical guarantees on the best-of-n alignment policy".
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def expected_best_of_n(rewards: np.ndarray, n: int) -> np.ndarray:
    """Unbiased estimate of E[max of n draws] from m >= n i.i.d. samples per prompt.

    With the m rewards of a prompt sorted ascending r_(1) <= ... <= r_(m), the max of a random
    n-subset (drawn without replacement) is r_(i) with probability C(i-1, n-1) / C(m, n). Averaging
    over all n-subsets uses every sample, so it is far less noisy than taking one block of n.

    Args:
        rewards: (P, m) rewards of m samples for each of P prompts.
        n: 1 <= n <= m.
    Returns:
        (P,) expected best-of-n reward per prompt.
    """
    rewards = np.sort(np.asarray(rewards, np.float64), axis=1)
    m = rewards.shape[1]
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= m = {m}, got n = {n}")
    weights = np.array([math.comb(i, n - 1) for i in range(m)], dtype=np.float64) / math.comb(m, n)
    return rewards @ weights
