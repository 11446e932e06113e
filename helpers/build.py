"""Build a world in one command, fetch what the gpt2 profile loads, and report a world's numbers.

    python -m helpers.build build [--profile tiny|gpt2] [--force] [--no-pairs]
    python -m helpers.build download [--profile gpt2]   # online, once: fills the Hugging Face caches
    python -m helpers.build report

The top of the stack: it calls ``helpers.world`` (corpus, tokenizer, models) and ``helpers.pairs``
(preference pairs), which never import it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from helpers.pairs import get_preference_pairs, load_pairs_stats
from helpers.profiles import PROFILES, set_hub_offline
from helpers.world import (
    World,
    build_base_model,
    build_corpus,
    build_sft_model,
    build_tokenizer,
    get_prompts,
    get_reward_fn,
    get_world,
    load_base_model,
    load_reviews,
    load_sft_history,
    load_sft_model,
    load_tokenizer,
    tiny_world,
)


def build_world(world: World | None = None, force: bool = False, pairs: bool = True,
                progress: bool = True) -> dict:
    """Build every stage that is missing (all of them with ``force``), printing each stage's time.

    Returns:
        {stage: seconds}.
    """
    world = world or tiny_world()
    stages = [("corpus", build_corpus), ("tokenizer", build_tokenizer),
              ("base model", build_base_model),
              ("sft model", lambda w, force: build_sft_model(w, force=force, progress=progress))]
    if pairs:
        stages.append(("pairs", lambda w, force: get_preference_pairs(w, force=force, progress=progress)))
    timings = {}
    print(f"building {world.root}", flush=True)
    for name, build in stages:
        start, cpu_start = time.perf_counter(), time.process_time()
        build(world, force=force)
        timings[name] = time.perf_counter() - start
        # CPU seconds tell what the stage costs on its own when the machine is shared
        cpu = time.process_time() - cpu_start
        print(f"{name:>10}: {timings[name]:6.1f} s  (CPU {cpu:6.1f} s)", flush=True)
    print(f"{'total':>10}: {sum(timings.values()):6.1f} s  ({world.root})")
    return timings


def world_report(world: World, n_prompts: int = 200, n_samples_per_prompt: int = 4, seed: int = 0,
                 n_examples: int = 5) -> dict:
    """The numbers that describe a built world (for docs/tiny_world.md): corpus, vocabulary, SFT
    losses, a few SFT samples, reward/KL of the SFT model against itself, pair statistics."""
    import numpy as np

    from helpers.corpus import content_words
    from helpers.evaluate import evaluate_policy, sample_policy, word_rate

    tok = load_tokenizer(world)
    splits = {s: load_reviews(world, s) for s in (world.sft_split, world.pairs_split, world.eval_split)}
    everything = [t for texts in splits.values() for t in texts]
    history = load_sft_history(world)
    model = load_sft_model(world)
    prompts = get_prompts(world, world.eval_split, n_prompts, seed=seed, tokenizer=tok)
    examples = sample_policy(model, tok, prompts[:n_examples], 1, world.max_new_tokens, seed=seed,
                             progress=False)
    reward_fn = get_reward_fn(world)
    result = evaluate_policy(model, model, tok, prompts, reward_fn, n_samples_per_prompt,
                             world.max_new_tokens, seed=seed, progress=False)
    from helpers.corpus import GOODHART_WORD

    return {
        "reviews": {s: len(t) for s, t in splits.items()},
        "distinct_reviews": len(set(everything)),
        "content_words": len(content_words(everything)),
        "vocab_size": len(tok),
        "tokens_per_review": float(np.mean([len(ids) + 1 for ids in tok(splits[world.eval_split])["input_ids"]])),
        "corpus_reward_mean": float(np.mean(reward_fn(splits[world.eval_split]))),
        "corpus_reward_std": float(np.std(reward_fn(splits[world.eval_split]))),
        "n_params": history["n_params"], "sft_steps": world.sft_steps,
        "sft_batch_size": world.sft_batch_size, "sft_seconds": history["seconds"],
        "sft_train_loss": history.get("final_train_eval_loss"), "sft_eval_loss": history["final_eval_loss"],
        "examples": [p + r + ("" if e else " [no EOS]") for p, r, e in
                     zip(examples["prompt"], examples["response"], examples["ended"])],
        "sft_reward_mean": result["reward_mean"], "sft_reward_se": result["reward_se"],
        "sft_reward_std": float(np.std(result["rewards"])),
        "sft_kl_self": result["kl_mean"], "sft_length_mean": result["length_mean"],
        "sft_eos_rate": result["eos_rate"], "sft_exclaim_rate": result["exclaim_rate"],
        "sft_goodhart_rate": word_rate(result["responses"], GOODHART_WORD),
        "eval": {"n_prompts": n_prompts, "n_samples_per_prompt": n_samples_per_prompt},
        "pairs": load_pairs_stats(world),
    }


def download_world(world: World) -> list[str]:
    """Load everything ``world`` loads from the hub, through the notebooks' own calls
    (``from_pretrained(name)``, ``load_dataset(name, split=...)``, the reward ``pipeline``): online
    this fills the Hugging Face caches (``$HF_HOME``) so that later runs need no network; offline
    (``HF_HUB_OFFLINE=1``) it checks that a prepared machine has them all.

    Returns:
        the names of what could not be loaded (empty: all there), each printed with the error.
    """
    if world.profile == "tiny":
        print("the tiny profile loads nothing from the hub (it builds its world here)")
        return []
    items = [(f"tokenizer {world.tokenizer_name}", lambda: f"{len(load_tokenizer(world))} tokens"),
             (f"model {world.base_model}", lambda: f"{load_base_model(world).num_parameters() / 1e6:.1f} M parameters")]
    for split in dict.fromkeys((world.sft_split, world.pairs_split, world.eval_split)):
        items.append((f"dataset {world.dataset_name} [{split}]",
                      lambda split=split: f"{len(load_reviews(world, split))} reviews"))
    items.append((f"reward {world.reward}",
                  lambda: f"scores {get_reward_fn(world, device='cpu')(['A wonderful film.'])[0]:+.2f} for 'A wonderful film.'"))
    missing = []
    for name, load in items:
        start = time.perf_counter()
        try:
            what = load()
        except Exception as e:  # noqa: BLE001 -- reported by name, then the command fails
            missing.append(name)
            print(f"  MISSING {name}: {type(e).__name__}: {str(e).splitlines()[0][:300]}", flush=True)
            continue
        print(f"  ok      {name}: {what} ({time.perf_counter() - start:.1f} s)", flush=True)
    import datasets
    import huggingface_hub.constants

    print(f"hub cache: {huggingface_hub.constants.HF_HUB_CACHE}\ndatasets cache: {datasets.config.HF_DATASETS_CACHE}")
    return missing


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.build",
                                     description="Build the tiny world into helpers.config.cache_dir().")
    parser.add_argument("command", choices=["build", "download", "report"],
                        help="build: every missing stage (and print timings); download: fetch (online) or check "
                             "(offline) everything the profile loads from the hub; report: a world's numbers as JSON")
    parser.add_argument("--profile", choices=["tiny", "gpt2"], default=None,
                        help="the world (default: $DPO_PROFILE when set, else tiny -- gpt2 for download)")
    parser.add_argument("--force", action="store_true", help="rebuild every stage from nothing")
    parser.add_argument("--no-pairs", action="store_true", help="stop after the SFT model")
    args = parser.parse_args(argv)
    from_env = os.environ.get("DPO_PROFILE", "").strip().lower()
    if args.profile is None and from_env and from_env not in PROFILES:
        parser.error(f"DPO_PROFILE={from_env}: not one of {PROFILES}; unset it or pass --profile")
    chosen = from_env if from_env in ("tiny", "gpt2") else None  # auto: this command's own default
    profile = args.profile or chosen or ("gpt2" if args.command == "download" else "tiny")
    if profile == "tiny":
        set_hub_offline()
    world = get_world(profile)
    if args.command == "build":
        build_world(world, force=args.force, pairs=not args.no_pairs)
    elif args.command == "download":
        missing = download_world(world)
        if missing:
            raise SystemExit(f"{len(missing)} of what the {profile} profile loads could not be loaded: "
                             + "; ".join(missing) + ". Run this command once on a machine with internet "
                             "(without HF_HUB_OFFLINE), then copy $HF_HOME over.")
        print(f"everything the {profile} profile loads is in the caches: set HF_HUB_OFFLINE=1 DPO_PROFILE={profile}")
    else:
        print(json.dumps(world_report(world), indent=1))


if __name__ == "__main__":
    main()
