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

import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from helpers.data import collate_preferences, tokenize_preference, tokenize_preferences
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
                            max_prompt_length: int) -> list[dict]:
    """Tokenize (prompt, response) with ``helpers.data`` (prompt masked, EOS appended and scored).

    ``tokenize_preference`` tokenizes pairs; each response is passed as both halves and only the
    chosen half is used. (An empty response is allowed here: it is scored on its EOS alone.)
    """
    records = [{"prompt": p, "chosen": r, "rejected": r} for p, r in zip(prompts, responses)]
    return [tokenize_preference(rec, tokenizer, max_length, max_prompt_length, index=i) for i, rec in enumerate(records)]


def response_token_rewards(policy, ref_model, tokenizer, prompts: list[str], responses: list[str], beta: float,
                           max_length: int = 64, max_prompt_length: int = 16, batch_size: int = 64
                           ) -> list[dict]:
    """Token-level implicit rewards of each (prompt, response), ready to draw as a heat map.

    Returns:
        one dict per response: ``prompt``, ``response``, ``tokens`` (the scored tokens as text, the
        response's tokens then ``<|endoftext|>``), ``ids``, ``rewards`` (list of float, one per token),
        ``total`` (their sum = r_hat(x, y)).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    examples = _examples_for_responses(tokenizer, prompts, responses, max_length, max_prompt_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
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
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
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


def response_implicit_rewards(policy, ref_model, tokenizer, prompts: list[str], responses: list[str], beta: float,
                              max_length: int = 64, max_prompt_length: int = 16, batch_size: int = 64
                              ) -> np.ndarray:
    """r_hat(x, y) for each (prompt, response): (N,) array."""
    rows = response_token_rewards(policy, ref_model, tokenizer, prompts, responses, beta, max_length,
                                  max_prompt_length, batch_size)
    return np.array([r["total"] for r in rows], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# implicit vs true reward
# --------------------------------------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank (as scipy.stats.rankdata - 1)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # average the ranks of tied values
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def pearson(x, y) -> float:
    """Pearson correlation of two 1-D arrays."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson of the ranks, ties averaged)."""
    return pearson(_ranks(x), _ranks(y))


def ranking_accuracy(chosen_scores, rejected_scores) -> float:
    """Fraction of pairs whose chosen score is higher; a tie counts one half."""
    c, r = np.asarray(chosen_scores, np.float64), np.asarray(rejected_scores, np.float64)
    if c.shape != r.shape or c.ndim != 1 or len(c) == 0:
        raise ValueError(f"need two equal-length 1-D arrays, got {c.shape} and {r.shape}")
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


# --------------------------------------------------------------------------------------------
# DPO runs of the task world: sizes per profile, held-out pairs, load-or-train, the beta sweep
# --------------------------------------------------------------------------------------------

# One place for the sizes of notebooks 06-07, keyed by profile. tiny: a ~1 M-parameter GPT-2 on a
# laptop CPU in about a minute per run; gpt2: GPT-2 124M on a GPU (Colab), batch 8 x 4 accumulated.
DPO_SIZES = {
    "tiny": dict(beta=0.1, lr=1e-4, batch_size=32, gradient_accumulation_steps=1, max_steps=120, warmup_steps=10,
                 max_length=64, max_prompt_length=16, eval_every=40, n_eval_prompts=32, n_final_prompts=128,
                 samples_per_prompt=4, sweep_betas=(0.05, 0.2, 1.0), sweep_steps=60, sweep_lr=3e-4,
                 bon_ns=(1, 2, 4, 8, 16)),
    "gpt2": dict(beta=0.1, lr=5e-6, batch_size=8, gradient_accumulation_steps=4, max_steps=300, warmup_steps=30,
                 max_length=96, max_prompt_length=16, eval_every=100, n_eval_prompts=64, n_final_prompts=200,
                 samples_per_prompt=4, sweep_betas=(0.05, 0.1, 0.5, 1.0), sweep_steps=200, sweep_lr=5e-6,
                 bon_ns=(1, 2, 4, 8, 16)),
}


def dpo_sizes(profile: str) -> dict:
    """A copy of ``DPO_SIZES[profile]``."""
    return dict(DPO_SIZES[profile])


def split_pairs(pairs, held_out_fraction: float = 0.1, seed: int = 0):
    """Split preference pairs by *prompt* into training and held-out pairs.

    All pairs of one prompt land on the same side, so held-out accuracy measures generalisation to
    new prompts, not to new pairings of responses already seen.

    Args:
        pairs: a ``datasets.Dataset`` (or list of dicts) with a ``prompt`` column.
    Returns:
        (train, held_out), same type as ``pairs`` (a Dataset is split with ``select``).
    """
    prompts = sorted({p for p in (pairs["prompt"] if hasattr(pairs, "column_names") else [r["prompt"] for r in pairs])})
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(prompts)[: max(1, int(round(held_out_fraction * len(prompts))))].tolist())
    column = pairs["prompt"] if hasattr(pairs, "column_names") else [r["prompt"] for r in pairs]
    train_idx = [i for i, p in enumerate(column) if p not in held]
    held_idx = [i for i, p in enumerate(column) if p in held]
    if hasattr(pairs, "select"):
        return pairs.select(train_idx), pairs.select(held_idx)
    return [pairs[i] for i in train_idx], [pairs[i] for i in held_idx]


def file_fingerprint(path) -> str:
    """A short content hash of a file (identifies the SFT weights a DPO run started from)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def dpo_run_dir(world, config, train_pairs) -> Path:
    """Where a DPO run's checkpoint lives: ``<world.root>/dpo/beta<beta>-<hash>``.

    The hash covers the config (minus bookkeeping fields), the SFT weights and the training pairs,
    so a cached policy is reused only by a run that would have produced it.
    """
    import hashlib

    sft_weights = next(Path(world.sft_dir).glob("*.safetensors"), None) or next(Path(world.sft_dir).glob("*.bin"))
    pairs_id = getattr(train_pairs, "_fingerprint", None) or hashlib.sha256(
        json.dumps([dict(r) for r in train_pairs], sort_keys=True).encode()).hexdigest()
    cfg = {k: v for k, v in asdict(config).items() if k not in ("checkpoint_dir", "metrics_csv", "checkpoint_every",
                                                                  "eval_every", "ref_batch_size")}
    key = json.dumps({"config": cfg, "sft": file_fingerprint(sft_weights), "pairs": pairs_id, "n": len(train_pairs)},
                     sort_keys=True)
    return Path(world.root) / "dpo" / f"beta{config.beta:g}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def make_dpo_config(world, **overrides):
    """The ``helpers.train.DPOConfig`` of the profile's sizes (``DPO_SIZES``), with ``overrides``."""
    from helpers.train import DPOConfig

    sizes = dpo_sizes(world.profile)
    fields = {k: sizes[k] for k in ("beta", "lr", "batch_size", "gradient_accumulation_steps", "max_steps",
                                    "warmup_steps", "max_length", "max_prompt_length", "eval_every")}
    fields.update(precompute_ref_logps=True, seed=0)
    fields.update(overrides)
    return DPOConfig(**fields)


def scalar_eval_fn(ref_model, tokenizer, prompts, reward_fn, n_samples_per_prompt: int = 4,
                   max_new_tokens: int = 40, seed: int = 0):
    """An ``eval_fn`` for ``train_dpo``: mean reward and KL (with standard errors), length, EOS rate,
    "!" rate of the policy on ``prompts`` -- the scalars only (``helpers.evaluate.evaluate_policy``)."""
    from helpers.evaluate import evaluate_policy

    keys = ("reward_mean", "reward_se", "kl_mean", "kl_se", "length_mean", "eos_rate", "exclaim_rate")

    def eval_fn(policy) -> dict:
        out = evaluate_policy(policy, ref_model, tokenizer, prompts, reward_fn, n_samples_per_prompt,
                              max_new_tokens, seed=seed, progress=False)
        return {k: float(out[k]) for k in keys}

    return eval_fn


def load_or_train_dpo(world, config, train_pairs, tokenizer=None, ref_model=None, ref_logps=None, eval_fn=None,
                      device=None, progress: bool = True, resume: bool = True):
    """A DPO policy trained from the SFT model on ``train_pairs``: from the cache if this exact run
    finished before (or resumed if it was interrupted), else trained now and cached.

    Args:
        world: ``helpers.world.World``.
        config: a ``DPOConfig``; its ``checkpoint_dir`` is set to ``dpo_run_dir(...)``.
        train_pairs: preference records.
        tokenizer, ref_model: default ``load_tokenizer(world)``, ``load_sft_model(world)``.
        ref_logps: precomputed reference log-probs of ``train_pairs`` (shared across a beta sweep).
        eval_fn: periodic evaluation (see ``train_dpo``).
    Returns:
        (policy in eval mode, metrics list).
    """
    from helpers.config import get_device
    from helpers.train import train_dpo
    from helpers.world import load_sft_model, load_tokenizer

    device = device or get_device()
    tokenizer = tokenizer or load_tokenizer(world)
    ref_model = ref_model if ref_model is not None else load_sft_model(world, device=device)
    run_dir = dpo_run_dir(world, config, train_pairs)
    config = replace(config, checkpoint_dir=str(run_dir), metrics_csv=str(run_dir / "metrics.csv"))
    policy = load_sft_model(world, device=device)
    policy.train()
    metrics = train_dpo(policy, ref_model, tokenizer, train_pairs, config, eval_fn=eval_fn, ref_logps=ref_logps,
                        resume=resume, progress=progress)
    policy.eval()
    return policy, metrics


def best_of_n_curve(model, tokenizer, prompts, reward_fn, ns=(1, 2, 4, 8, 16), max_new_tokens: int = 40,
                    seed: int = 0, progress: bool = True) -> list[dict]:
    """Best-of-N sampling from ``model`` (the SFT model): mean reward of the best of N samples, for
    each N, from max(ns) samples per prompt (``expected_best_of_n``), with its KL bound.

    Returns:
        one dict per N: ``n``, ``reward_mean``, ``reward_se`` (over prompts), ``kl_bound``.
    """
    from helpers.evaluate import sample_policy

    m = max(ns)
    samples = sample_policy(model, tokenizer, prompts, m, max_new_tokens, seed=seed, progress=progress)
    rewards = np.asarray(reward_fn([p + r for p, r in zip(samples["prompt"], samples["response"])]), np.float64)
    rewards = rewards.reshape(len(prompts), m)  # prompt-major
    out = []
    for n in ns:
        per_prompt = expected_best_of_n(rewards, n)
        out.append({"n": int(n), "reward_mean": float(per_prompt.mean()),
                    "reward_se": float(per_prompt.std(ddof=1) / math.sqrt(len(per_prompt))),
                    "kl_bound": bon_kl_bound(n)})
    return out


def beta_sweep(world, betas, train_pairs, eval_prompts, reward_fn, base_config=None, tokenizer=None, ref_model=None,
               n_samples_per_prompt: int = 4, device=None, progress: bool = True) -> list[dict]:
    """Train (or load) one DPO policy per beta and evaluate each on ``eval_prompts``.

    The reference log-probs of the training pairs do not depend on beta: they are computed once and
    shared by every run.

    Returns:
        one dict per beta: ``beta``, ``reward_mean``, ``reward_se``, ``kl_mean``, ``kl_se``,
        ``length_mean``, ``eos_rate``, ``exclaim_rate``, ``final_accuracy`` (last 10 steps' mean of
        ``rewards/accuracies``), ``seconds``, and ``metrics`` (the run's per-step list).
    """
    from helpers.config import get_device
    from helpers.evaluate import evaluate_policy
    from helpers.train import compute_ref_logps
    from helpers.world import load_sft_model, load_tokenizer

    device = device or get_device()
    tokenizer = tokenizer or load_tokenizer(world)
    ref_model = ref_model if ref_model is not None else load_sft_model(world, device=device)
    base_config = base_config or make_dpo_config(world)
    examples = tokenize_preferences(train_pairs, tokenizer, base_config.max_length, base_config.max_prompt_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ref_logps = compute_ref_logps(ref_model, examples, pad, base_config.ref_batch_size)
    results = []
    for beta in betas:
        start = time.perf_counter()
        config = replace(base_config, beta=float(beta), eval_every=0)
        policy, metrics = load_or_train_dpo(world, config, train_pairs, tokenizer, ref_model, ref_logps=ref_logps,
                                            device=device, progress=progress)
        ev = evaluate_policy(policy, ref_model, tokenizer, eval_prompts, reward_fn, n_samples_per_prompt,
                             world.max_new_tokens, seed=0, progress=False)
        row = {"beta": float(beta)}
        row.update({k: float(ev[k]) for k in ("reward_mean", "reward_se", "kl_mean", "kl_se", "length_mean",
                                              "eos_rate", "exclaim_rate")})
        row["final_accuracy"] = float(np.mean([m["rewards/accuracies"] for m in metrics[-10:]]))
        row["seconds"] = time.perf_counter() - start
        row["metrics"] = metrics
        results.append(row)
        del policy
    return results
