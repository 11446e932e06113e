"""The optimum itself: the reward and KL of the KL-optimal policy pi*_beta, from samples of pi_ref.

RLHF and DPO aim at the same policy (notebooks 02-03):

    pi*_beta(y|x) = pi_ref(y|x) * exp(r(x, y) / beta) / Z(x),     Z(x) = E_{y ~ pi_ref}[exp(r / beta)].

On a real language model pi* cannot be written down, but its reward and KL can be *estimated* from
M samples y_1..y_M ~ pi_ref(.|x) of each prompt, by self-normalised importance sampling:

    w_i = exp(r_i / beta) / sum_j exp(r_j / beta)                        (weights of pi* / pi_ref)
    E_{pi*}[r]         ~= sum_i w_i r_i
    KL(pi* || pi_ref)  =  E_{pi*}[r] / beta - log Z   ~=  sum_i w_i r_i / beta - log mean_i exp(r_i / beta)

Each point of the curve beta -> (KL, reward) is the best reward any policy can reach at that KL:
the reward-vs-KL frontier every method's point is measured against (``fraction_of_optimum``).

Honest limits, both visible in the effective sample size ESS = 1 / sum_i w_i^2 (between 1 and M):
at small beta the weights pile onto the best of the M samples, so the estimate is at most the
best-of-M reward and the KL at most log M (the estimate is biased low there); ``optimum_frontier``
reports the median ESS per prompt and marks a beta *unreliable* below ``MIN_ESS``.
"""

from __future__ import annotations

import numpy as np

# A beta whose median effective sample size per prompt is below this is not drawn as the optimum:
# its estimate leans on a handful of samples per prompt and is biased low (at most best-of-M).
MIN_ESS = 5.0


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def optimal_point(rewards: np.ndarray, beta: float) -> dict:
    """Estimated reward and KL(pi*_beta || pi_ref) of each prompt, from pi_ref samples' rewards.

    Args:
        rewards: (P, M) ground-truth rewards r(x_p, y_pm) of M samples y ~ pi_ref per prompt.
        beta: > 0.
    Returns:
        dict of (P,) arrays: ``reward`` (E_{pi*}[r]), ``kl`` (nats), ``ess`` (effective sample size);
        and ``weights``, (P, M): pi*'s self-normalised importance weights of the samples.
    """
    r = np.asarray(rewards, dtype=np.float64)  # (P, M)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must be (prompts, samples) with >= 2 samples, got shape {r.shape}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not np.isfinite(r).all():  # one NaN would turn every prompt's average into NaN, silently
        p, i = map(int, np.argwhere(~np.isfinite(r))[0])
        raise ValueError(f"rewards[{p}, {i}] (prompt {p}, sample {i}) is {r[p, i]}: every reward must be finite "
                         f"({int((~np.isfinite(r)).sum())} of {r.size} are not); check the reward function")
    logits = r / beta  # (P, M)
    log_z_sum = _logsumexp(logits, axis=1)  # log sum_j exp(r_j / beta)
    w = np.exp(logits - log_z_sum[:, None])  # (P, M), rows sum to 1
    reward = (w * r).sum(axis=1)
    log_z = log_z_sum - np.log(r.shape[1])  # log mean exp(r / beta) = log Z-hat
    kl = reward / beta - log_z
    return {"reward": reward, "kl": np.maximum(kl, 0.0), "ess": 1.0 / (w ** 2).sum(axis=1), "weights": w}


def optimum_frontier(rewards: np.ndarray, betas, min_ess: float = MIN_ESS, lengths: np.ndarray | None = None
                     ) -> list[dict]:
    """The pi* frontier: one point per beta, averaged over prompts, with standard errors over prompts.

    Args:
        rewards: (P, M) rewards of M pi_ref samples for each of P prompts.
        betas: the beta grid.
        min_ess: a beta whose median per-prompt ESS is below this is marked ``reliable=False``
            (its point leans on a handful of samples per prompt; do not draw it as the optimum).
        lengths: optional (P, M) response lengths of the samples: each point then also has
            ``length_mean``, pi*'s expected length (the same weights as its reward).
    Returns:
        list of dicts sorted by KL: ``beta``, ``reward_mean``, ``reward_se``, ``kl_mean``, ``kl_se``,
        ``ess_median``, ``ess_min``, ``reliable``, ``n_prompts``, ``n_samples``; and the pi_ref point
        (beta = inf: KL 0, the mean reward of the samples) first.
    """
    r = np.asarray(rewards, dtype=np.float64)
    n_prompts, m = r.shape
    se = lambda v: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")  # noqa: E731
    lengths = None if lengths is None else np.asarray(lengths, dtype=np.float64).reshape(r.shape)
    points = [{"beta": float("inf"), "reward_mean": float(r.mean()), "reward_se": se(r.mean(axis=1)),
               "kl_mean": 0.0, "kl_se": 0.0, "ess_median": float(m), "ess_min": float(m), "reliable": True,
               "n_prompts": n_prompts, "n_samples": m}]
    if lengths is not None:
        points[0]["length_mean"] = float(lengths.mean())
    for beta in betas:
        p = optimal_point(r, beta)
        point = {"beta": float(beta), "reward_mean": float(p["reward"].mean()), "reward_se": se(p["reward"]),
                 "kl_mean": float(p["kl"].mean()), "kl_se": se(p["kl"]),
                 "ess_median": float(np.median(p["ess"])), "ess_min": float(p["ess"].min()),
                 "reliable": bool(np.median(p["ess"]) >= min_ess), "n_prompts": n_prompts, "n_samples": m}
        if lengths is not None:
            point["length_mean"] = float((p["weights"] * lengths).sum(axis=1).mean())
        points.append(point)
    return sorted(points, key=lambda q: q["kl_mean"])


def optimum_reward_at(frontier: list[dict], kl: float) -> float:
    """pi*'s reward at ``kl`` nats, interpolated linearly on the reliable frontier points (NaN past
    the last reliable point: the estimate does not reach that far)."""
    pts = [q for q in frontier if q["reliable"]]
    kls = np.array([q["kl_mean"] for q in pts])
    rewards = np.array([q["reward_mean"] for q in pts])
    if kl > kls.max():
        return float("nan")
    return float(np.interp(kl, kls, rewards))


def reference_point(frontier: list[dict]) -> dict:
    """pi_ref's point of the frontier (KL 0: the same prompts' reference samples) -- the baseline of
    every fraction of pi*'s gain, and where a plot's SFT star belongs."""
    return next(q for q in frontier if q["kl_mean"] == 0.0)


def fraction_of_optimum(frontier: list[dict], kl: float, reward: float) -> float:
    """(reward - reward of pi_ref) / (pi*'s reward at the same KL - reward of pi_ref).

    1.0: the point is on the optimum; 0.0: no better than pi_ref; NaN: beyond the reliable frontier.
    pi_ref's reward is the frontier's own KL-0 point (the same prompts' reference samples).
    """
    base = reference_point(frontier)["reward_mean"]
    best = optimum_reward_at(frontier, kl)
    return float((reward - base) / (best - base)) if best > base else float("nan")


def reward_at_kl(points: list[dict], kl: float, base: dict | None = None) -> tuple[float, float]:
    """A method's reward at ``kl`` nats, read off its own curve: linear interpolation between its
    measured (KL, reward) points -- ``base`` (the SFT point, KL 0) included when given. NaN outside
    the KLs it measured (no extrapolation).

    Args:
        points: dicts with ``kl_mean``, ``reward_mean``, ``reward_se`` (e.g. one per beta).
    Returns:
        (reward, its standard error interpolated the same way)
    """
    pts = sorted(([base] if base is not None else []) + list(points), key=lambda q: q["kl_mean"])
    kls = np.array([q["kl_mean"] for q in pts])
    if not len(pts) or kl < kls.min() or kl > kls.max():
        return float("nan"), float("nan")
    reward = np.interp(kl, kls, [q["reward_mean"] for q in pts])
    se = np.interp(kl, kls, [q.get("reward_se", 0.0) for q in pts])
    return float(reward), float(se)


def fraction_of_optimum_bound(frontier: list[dict], kl: float, reward: float) -> tuple[float, bool]:
    """The fraction of the optimum's gain, or -- past the estimate's reach -- an upper bound on it.

    pi*'s reward only grows with KL, so for a point beyond the last reliable frontier point its
    fraction at equal KL is at most its fraction against that last point -- and never more than 1,
    since no policy beats pi* at pi*'s own KL.

    Returns:
        (fraction, exact): ``exact`` is False when the value is an upper bound ("<= value").
    """
    exact = fraction_of_optimum(frontier, kl, reward)
    if not np.isnan(exact):
        return exact, True
    pts = [q for q in frontier if q["reliable"]]
    last = max(pts, key=lambda q: q["kl_mean"])
    base = reference_point(frontier)["reward_mean"]
    if kl < last["kl_mean"] or last["reward_mean"] <= base:
        return float("nan"), True
    return float(min(1.0, (reward - base) / (last["reward_mean"] - base))), False


def format_fraction(frontier: list[dict], kl: float, reward: float, spec: str = ".2f") -> str:
    """``fraction_of_optimum_bound`` as text: "0.29", or "<=0.55" past the estimate's reach."""
    value, exact = fraction_of_optimum_bound(frontier, kl, reward)
    if np.isnan(value):
        return "-"
    return format(value, spec) if exact else "<=" + format(value, spec)
