"""Preference pairs sampled from the SFT model and ranked by the ground-truth reward.

The DPO paper's recipe for the controlled-sentiment task (Section 6.1, Appendix C.1): for each
prompt (a 2-8 token review prefix), sample k completions from pi_SFT, score each with the reward,
and turn every pair of them into a preference: chosen = the higher reward. With k = 4 that is up to
k(k-1)/2 = 6 pairs per prompt. Pairs whose rewards are equal carry no preference: they are dropped
and counted (``n_ties``). Samples that hit ``max_new_tokens`` without EOS (counted, ``n_truncated``)
are dropped before pairing in the tiny world (``World.pairs_drop_truncated``); where they are kept
(the gpt2 world), the pairs carry ``chosen_ended``/``rejected_ended`` and ``helpers.data`` scores a
response that never ended exactly as generated -- appending an EOS would teach the policy to stop
where it had not stopped. Empty responses (EOS right after the prompt) are dropped too (``n_empty``): ``helpers.data``
rejects empty fields.

Prompts come from the world's ``pairs_split``, disjoint from the SFT texts and from the held-out
evaluation prompts. Text format: ``prompt`` has no trailing space, ``chosen``/``rejected`` start
where the prompt ends (usually with a space) and carry no EOS -- exactly what ``helpers.data``
expects (see ``helpers.world``'s module docstring for why this split re-tokenizes exactly).

The result is a ``datasets.Dataset`` with columns prompt, chosen, rejected, chosen_reward,
rejected_reward, saved with ``save_to_disk`` under the world's cache (``get_preference_pairs``
reloads it with ``load_from_disk``), with ``stats.json`` next to it.
"""

from __future__ import annotations

import json
import time
from itertools import combinations
from pathlib import Path

import numpy as np

from helpers.cache import artifact_path, build_artifact, is_built
from helpers.evaluate import sample_policy

COLUMNS = ("prompt", "chosen", "rejected", "chosen_reward", "rejected_reward")
ENDED_COLUMNS = ("chosen_ended", "rejected_ended")  # only where truncated samples are kept


def pairs_from_samples(prompts: list[str], responses: list[list[str]], rewards: list[list[float]],
                       tie_tolerance: float = 0.0, ended: list[list[bool]] | None = None) -> tuple[list[dict], int]:
    """All k(k-1)/2 pairs per prompt, chosen = higher reward; ties dropped.

    Args:
        prompts: P prompts.
        responses: P lists of responses (k each, or fewer after drops).
        rewards: P lists of the matching rewards.
        tie_tolerance: pairs with |reward gap| <= this are ties (default: exactly equal).
        ended: P lists of bools, False for a response cut at ``max_new_tokens`` (no EOS generated);
            when given, records carry ``chosen_ended``/``rejected_ended`` so ``helpers.data`` scores
            such a response as generated, without an EOS it never produced.
    Returns:
        (records with the ``COLUMNS`` keys (and the ``*_ended`` flags), number of ties dropped).
    """
    records, ties = [], 0
    for i, (prompt, texts, scores) in enumerate(zip(prompts, responses, rewards)):
        for a, b in combinations(range(len(texts)), 2):
            if abs(scores[a] - scores[b]) <= tie_tolerance:
                ties += 1
                continue
            hi, lo = (a, b) if scores[a] > scores[b] else (b, a)
            record = {"prompt": prompt, "chosen": texts[hi], "rejected": texts[lo],
                      "chosen_reward": float(scores[hi]), "rejected_reward": float(scores[lo])}
            if ended is not None:
                record.update(chosen_ended=bool(ended[i][hi]), rejected_ended=bool(ended[i][lo]))
            records.append(record)
    return records, ties


def count_pairs(rewards) -> int:
    """How many preference pairs k samples with these rewards give, without listing them: all
    k(k-1)/2 two-sample pairs minus the tied ones, C(n, 2) for every reward value n samples share."""
    from collections import Counter

    k = len(rewards)
    return k * (k - 1) // 2 - sum(n * (n - 1) // 2 for n in Counter(rewards).values())


def build_preference_pairs(model, tokenizer, prompts: list[str], reward_fn, k: int = 4,
                           max_new_tokens: int = 40, temperature: float = 1.0, seed: int = 0,
                           batch_size: int = 256, drop_truncated: bool = True,
                           tie_tolerance: float = 0.0, progress: bool = True):
    """Sample k responses per prompt from ``model``, score them, and pair them up.

    Args:
        model: pi_SFT. tokenizer: its tokenizer. prompts: P prompts.
        reward_fn: ``reward_fn(texts) -> list[float]``, applied to prompt + response.
        k: samples per prompt. max_new_tokens, temperature, seed, batch_size: sampling
            (pure sampling, see ``helpers.evaluate.sample_policy``).
        drop_truncated: drop samples without EOS before pairing (empty responses are always
            dropped).
        tie_tolerance: see ``pairs_from_samples``.
        progress: tqdm bar while sampling.
    Returns:
        (``datasets.Dataset`` with ``COLUMNS``, stats dict: n_prompts, k, n_samples, n_truncated,
        n_empty, n_pairs, n_ties, mean_gap, sample_reward_mean, sample_reward_std, sample_length_mean,
        eos_rate, seconds).
    """
    import datasets

    start = time.perf_counter()
    samples = sample_policy(model, tokenizer, prompts, k, max_new_tokens, temperature, seed,
                            batch_size, progress)
    texts = [p + r for p, r in zip(samples["prompt"], samples["response"])]
    all_rewards = np.asarray(reward_fn(texts), dtype=np.float64)
    responses = [[] for _ in prompts]
    rewards = [[] for _ in prompts]
    endings = [[] for _ in prompts]
    n_truncated = n_empty = 0
    for i, response, reward, ended in zip(samples["prompt_index"], samples["response"],
                                          all_rewards, samples["ended"]):
        if not ended:
            n_truncated += 1
            if drop_truncated:
                continue
        if not response.strip():
            n_empty += 1
            continue
        responses[i].append(response)
        rewards[i].append(float(reward))
        endings[i].append(bool(ended))
    # kept truncated samples: the pairs say which responses never ended, so none is scored with an EOS
    records, ties = pairs_from_samples(prompts, responses, rewards, tie_tolerance,
                                       ended=None if drop_truncated else endings)
    columns = {c: [r[c] for r in records] for c in COLUMNS + (() if drop_truncated else ENDED_COLUMNS)}
    dataset = datasets.Dataset.from_dict(columns)
    gaps = np.asarray(columns["chosen_reward"]) - np.asarray(columns["rejected_reward"])
    stats = {
        "n_prompts": len(prompts), "k": k, "n_samples": len(texts), "n_truncated": n_truncated,
        "n_empty": n_empty, "n_pairs": len(records), "n_ties": ties,
        "mean_gap": float(gaps.mean()) if len(gaps) else float("nan"),
        "sample_reward_mean": float(all_rewards.mean()),
        "sample_reward_std": float(all_rewards.std()),
        "sample_length_mean": float(np.mean(samples["length"])),
        "eos_rate": float(np.mean(samples["ended"])),
        "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed,
        "seconds": time.perf_counter() - start,
    }
    return dataset, stats


def pairs_spec(world, n_prompts: int, k: int, seed: int) -> dict:
    """Everything the pairs depend on: the world (its SFT model, prompts, reward) and the sampling."""
    from helpers.world import world_spec

    return {"artifact": "preference pairs", "world": world_spec(world), "n_prompts": n_prompts, "k": k,
            "seed": seed}


def _pairs_sizes(world, n_prompts: int | None, k: int | None) -> tuple[int, int]:
    """``n_prompts`` and ``k``, each defaulting to the profile's ``PAIRS_SIZES``."""
    from helpers.profiles import PAIRS_SIZES, sizes

    table = sizes(PAIRS_SIZES, world.profile)
    return (table["n_pair_prompts"] if n_prompts is None else n_prompts), (table["k"] if k is None else k)


def pairs_path(world, n_prompts: int | None = None, k: int | None = None, seed: int = 0) -> Path:
    """The folder of these pairs in the cache (``<folder>/dataset`` is the ``save_to_disk`` copy);
    ``n_prompts``, ``k``: default the profile's ``helpers.profiles.PAIRS_SIZES``."""
    n_prompts, k = _pairs_sizes(world, n_prompts, k)
    return artifact_path(world.pairs_dir, f"prompts{n_prompts}_k{k}_seed{seed}", pairs_spec(world, n_prompts, k, seed))


def pairs_are_built(world, n_prompts: int | None = None, k: int | None = None, seed: int = 0) -> bool:
    """Are these pairs (default: the profile's) built and complete in the cache?"""
    n_prompts, k = _pairs_sizes(world, n_prompts, k)
    return is_built(pairs_path(world, n_prompts, k, seed), pairs_spec(world, n_prompts, k, seed))


def get_preference_pairs(world, n_prompts: int | None = None, k: int | None = None, seed: int = 0,
                         force: bool = False, progress: bool = True, device=None):
    """The world's preference pairs as a ``datasets.Dataset``: loaded from the cache, or built
    (SFT model included, if missing) and saved first (a ``helpers.cache`` artifact).
    ``n_prompts``, ``k``: default the profile's ``helpers.profiles.PAIRS_SIZES``."""
    import datasets

    from helpers.config import get_device
    from helpers.world import build_threads, get_prompts, get_reward_fn, load_sft_model, load_tokenizer

    n_prompts, k = _pairs_sizes(world, n_prompts, k)
    spec = pairs_spec(world, n_prompts, k, seed)
    path = pairs_path(world, n_prompts, k, seed)

    def build(tmp: Path) -> None:
        dev = device or get_device()
        tokenizer = load_tokenizer(world)
        model = load_sft_model(world, device=dev)
        prompts = get_prompts(world, world.pairs_split, n_prompts, seed=seed, tokenizer=tokenizer)
        with build_threads(dev):  # same pairs whoever builds them (see helpers.world.build_threads)
            dataset, stats = build_preference_pairs(
                model, tokenizer, prompts, get_reward_fn(world, device=dev), k=k,
                max_new_tokens=world.max_new_tokens, seed=seed, drop_truncated=world.pairs_drop_truncated,
                progress=progress)
        if stats["n_pairs"] == 0:  # never cached as a finished build: every later step would fail on it
            raise ValueError(
                f"the {world.profile} world's SFT model ({world.sft_steps} steps) gave 0 preference pairs from "
                f"{stats['n_samples']} samples ({k} per prompt: {stats['n_ties']} tied pairs, {stats['n_empty']} empty "
                f"and {stats['n_truncated']} cut responses): its responses are all alike. Train it longer (a smoke-"
                f"scale rehearsal trains it only a few steps) or sample more per prompt (k).")
        dataset.save_to_disk(str(tmp / "dataset"))
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))

    build_artifact(path, spec, build, force=force)
    return datasets.load_from_disk(str(path / "dataset"))


def load_pairs_stats(world, n_prompts: int | None = None, k: int | None = None, seed: int = 0) -> dict:
    """The stats saved with ``get_preference_pairs(world, n_prompts, k, seed)`` (built if missing)."""
    get_preference_pairs(world, n_prompts, k, seed)
    return json.loads((pairs_path(world, n_prompts, k, seed) / "stats.json").read_text())


def bradley_terry_label_prob(reward_gap: float, tau: float) -> float:
    """P(the first response is preferred) for a Bradley-Terry annotator: sigmoid(reward_gap / tau)."""
    return float(1.0 / (1.0 + np.exp(-reward_gap / tau)))


def annotate_pairs(records, tau: float = 1.0, mode: str = "expected", seed: int = 0) -> tuple[list[dict], dict]:
    """A simulated Bradley-Terry annotator for ranked pairs: P(chosen preferred) = sigmoid((r_c - r_r) / tau).

    The course's pairs carry *certain* labels (chosen = the higher reward). DPO's derivation assumes
    labels drawn from the Bradley-Terry model; with them its loss is minimised by pi*_{tau beta}
    (``helpers.losses.soft_dpo_loss``). Two annotators:

    * ``mode="expected"``: every record gains ``chosen_prob`` = sigmoid((r_c - r_r) / tau), the
      expected label (train with ``DPOConfig(loss_type="soft")``);
    * ``mode="sampled"``: each pair's label is drawn once (seeded); where the draw prefers the
      rejected response the pair is swapped (rewards and ``*_ended`` flags with it), and
      ``chosen_prob`` is 1.0 -- what one human label per pair gives.

    Args:
        records: dicts with ``prompt``, ``chosen``, ``rejected``, ``chosen_reward``, ``rejected_reward``.
        tau: > 0, the annotator's temperature (small: nearly certain labels).
    Returns:
        (new records, stats: ``n_pairs``, ``n_flipped`` (sampled), ``mean_chosen_prob``).
    """
    if mode not in ("expected", "sampled"):
        raise ValueError(f"annotate_pairs: mode must be 'expected' or 'sampled', got {mode!r}")
    if not tau > 0:
        raise ValueError(f"annotate_pairs: tau must be > 0 (the annotator's temperature), got {tau!r}")
    rng = np.random.default_rng(seed)
    out, probs, flipped = [], [], 0
    for i, record in enumerate(records):
        if "chosen_reward" not in record or "rejected_reward" not in record:
            raise ValueError(f"annotate_pairs: record {i} has no 'chosen_reward'/'rejected_reward'")
        gap = float(record["chosen_reward"]) - float(record["rejected_reward"])
        p = bradley_terry_label_prob(gap, tau)
        probs.append(p)
        new = dict(record)
        if mode == "expected":
            new["chosen_prob"] = p
        else:
            if rng.random() >= p:  # the annotator preferred the other response
                flipped += 1
                for a, b in (("chosen", "rejected"), ("chosen_reward", "rejected_reward"),
                             ("chosen_ended", "rejected_ended")):
                    if a in record:
                        new[a], new[b] = record[b], record[a]
            new["chosen_prob"] = 1.0
        out.append(new)
    return out, {"n_pairs": len(out), "n_flipped": flipped,
                 "mean_chosen_prob": float(np.mean(probs)) if probs else float("nan")}


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


def response_ended(pairs, side: str) -> list[bool]:
    """``pairs``' ``{side}_ended`` flags (side ``"chosen"`` or ``"rejected"``): False for a response cut
    at ``max_new_tokens`` (kept where samples are truncated, gpt2); True for every pair without them."""
    if side not in ("chosen", "rejected"):
        raise ValueError(f"side must be 'chosen' or 'rejected', got {side!r}")
    name = f"{side}_ended"
    if hasattr(pairs, "column_names"):
        return [bool(v) for v in pairs[name]] if name in pairs.column_names else [True] * len(pairs)
    return [bool(r.get(name, True)) for r in pairs]


def best_vs_worst(pairs) -> list[dict]:
    """One pair per prompt: its highest-reward response against its lowest (the largest gap of the
    prompt's k samples), instead of all k(k-1)/2 pairs. Prompts in first-seen order."""
    best, worst = {}, {}
    for p in pairs:
        x = p["prompt"]
        if x not in best or p["chosen_reward"] > best[x][1]:
            best[x] = (p["chosen"], p["chosen_reward"])
        if x not in worst or p["rejected_reward"] < worst[x][1]:
            worst[x] = (p["rejected"], p["rejected_reward"])
    return [{"prompt": x, "chosen": best[x][0], "rejected": worst[x][0], "chosen_reward": best[x][1],
             "rejected_reward": worst[x][1]} for x in best]


def with_min_gap(pairs, gap: float) -> list[dict]:
    """The pairs whose reward gap is at least ``gap``: near-ties are dropped (a 0.02 gap is a coin
    flip to a human reader, but a certain preference to a deterministic label)."""
    return [dict(p) for p in pairs if p["chosen_reward"] - p["rejected_reward"] >= gap]

