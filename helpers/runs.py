"""DPO runs of the task world: held-out pairs, one run's config from the profile's sizes, a run
trained once and then loaded from the cache, best-of-N, and the beta sweep (notebooks 06-08).

A finished run is a ``helpers.cache`` artifact, ``<world.root>/dpo/beta<beta>-<hash>``, saved with
``save_pretrained`` (safetensors) plus ``metrics.csv``; a cache hit is ``from_pretrained``. While a
run trains, its resume state (weights, AdamW moments, RNG states) lives next to it in
``<name>.resume/`` and is deleted when the run completes.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from helpers.cache import (
    artifact_path,
    artifact_problems,
    build_artifact,
    file_fingerprint,
    is_built,
    records_fingerprint,
)
from helpers.data import pad_token_id_of, tokenize_preferences
from helpers.implicit import bon_kl_bound, expected_best_of_n
from helpers.optimum import optimum_frontier
from helpers.pairs import split_pairs  # noqa: F401  (notebooks 06-08 import it from here, next to the runs)
from helpers.profiles import dpo_sizes

# DPOConfig fields that do not change the trained policy: left out of a run's spec.
BOOKKEEPING = ("checkpoint_dir", "metrics_csv", "checkpoint_every", "eval_every", "ref_batch_size")


def dpo_run_spec(world, config, train_pairs) -> dict:
    """Everything a DPO run's result depends on: its config (minus ``BOOKKEEPING``), the SFT weights
    it starts from and the training pairs."""
    sft_weights = next(Path(world.sft_dir).glob("*.safetensors"))
    cfg = {k: v for k, v in asdict(config).items() if k not in BOOKKEEPING}
    return {"artifact": "dpo run", "config": cfg, "sft": file_fingerprint(sft_weights),
            "pairs": records_fingerprint(train_pairs), "n": len(train_pairs)}


def dpo_run_dir(world, config, train_pairs) -> Path:
    """Where a finished DPO run lives: ``<world.root>/dpo/beta<beta>-<hash of dpo_run_spec>``."""
    return artifact_path(Path(world.root) / "dpo", f"beta{config.beta:g}", dpo_run_spec(world, config, train_pairs))


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
                      device=None, progress: bool = True, resume: bool = True, checkpoint_every: int = 0):
    """A DPO policy trained from the SFT model on ``train_pairs``: loaded (``from_pretrained``) if this
    exact run finished before, else trained now -- resumed if it was interrupted -- and cached.

    Args:
        world: ``helpers.world.World``.
        config: a ``DPOConfig`` (its ``checkpoint_dir``/``metrics_csv`` are set here).
        train_pairs: preference records.
        tokenizer, ref_model: default ``load_tokenizer(world)``, ``load_sft_model(world)``.
        ref_logps: precomputed reference log-probs of ``train_pairs`` (shared across a beta sweep).
        eval_fn: periodic evaluation (see ``train_dpo``); its results are part of ``metrics.csv``.
        resume: continue an interrupted run from its resume state.
        checkpoint_every: save the resume state every this many steps (0: only at the end).
    Returns:
        (policy in eval mode, metrics list as read back from ``metrics.csv``).
    """
    from transformers import AutoModelForCausalLM

    from helpers.config import get_device
    from helpers.train import read_metrics_csv, train_dpo, write_metrics_csv
    from helpers.world import load_sft_model, load_tokenizer

    device = device or get_device()
    spec = dpo_run_spec(world, config, train_pairs)
    run_dir = dpo_run_dir(world, config, train_pairs)
    resume_dir = run_dir.with_name(run_dir.name + ".resume")

    def train(tmp: Path) -> None:
        tok = tokenizer or load_tokenizer(world)
        ref = ref_model if ref_model is not None else load_sft_model(world, device=device)
        run_config = replace(config, checkpoint_dir=str(resume_dir), checkpoint_every=checkpoint_every,
                             metrics_csv=str(resume_dir / "metrics.csv"))
        policy = load_sft_model(world, device=device)
        policy.train()
        metrics = train_dpo(policy, ref, tok, train_pairs, run_config, eval_fn=eval_fn, ref_logps=ref_logps,
                            resume=resume, progress=progress)
        policy.save_pretrained(tmp)  # safetensors
        write_metrics_csv(metrics, tmp / "metrics.csv")

    if not is_built(run_dir, spec):
        build_artifact(run_dir, spec, train)
    damaged = artifact_problems(run_dir, digests=True)  # a flipped byte must not load in silence
    if damaged:
        print(f"the cached DPO run {run_dir.name} is damaged ({'; '.join(damaged)}): training it again")
        build_artifact(run_dir, spec, train, force=True)
    shutil.rmtree(resume_dir, ignore_errors=True)  # finished: the resume state has no more use
    policy = AutoModelForCausalLM.from_pretrained(run_dir).to(device)
    policy.eval()
    return policy, read_metrics_csv(run_dir / "metrics.csv")


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


OPTIMUM_BETAS = (0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)


def optimum_curve(model, tokenizer, prompts, reward_fn, m: int = 64, max_new_tokens: int = 40,
                  betas=OPTIMUM_BETAS, seed: int = 3, progress: bool = True) -> list[dict]:
    """The optimum pi*_beta on ``prompts``: ``m`` samples per prompt from ``model`` (pi_ref, the SFT
    model), scored by ``reward_fn``, reweighted by exp(r / beta) (``helpers.optimum.optimum_frontier``).

    Returns:
        the frontier points (dicts with ``beta``, ``reward_mean``, ``reward_se``, ``kl_mean``,
        ``kl_se``, ``ess_median``, ``reliable``, ``length_mean``, ...), sorted by KL, pi_ref's point first.
    """
    from helpers.evaluate import sample_policy

    samples = sample_policy(model, tokenizer, prompts, m, max_new_tokens, seed=seed, progress=progress)
    rewards = np.asarray(reward_fn([p + r for p, r in zip(samples["prompt"], samples["response"])]), np.float64)
    return optimum_frontier(rewards.reshape(len(prompts), m), betas,  # prompt-major
                            lengths=np.asarray(samples["length"]).reshape(len(prompts), m))


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
    pad = pad_token_id_of(tokenizer)
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
