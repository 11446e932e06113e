"""Why offline DPO falls short of the optimum, measured on the tiny world.

Notebook 06's DPO run (beta 0.1, lr 1e-4, 120 steps of 32 pairs) reaches a fraction of the reward the
optimum pi* reaches at the same KL. This script changes **one thing at a time** from that run and
reports, for each variant, on the same 100 held-out prompts x 4 samples: reward, KL, the fraction of
the optimum's reward gain at that KL (``helpers.optimum``), a length-controlled reward (the part of
the reward a reward-on-length regression over SFT samples explains, removed), length, EOS rate, and
the implicit reward's ranking accuracy on held-out pairs. Then **on-policy DPO**: rounds of
*sample from the current policy -> rank by the ground-truth reward -> one DPO epoch*, the reference
held fixed at the SFT model.

Every run is a ``helpers.cache`` artifact keyed by the world, its config and its pairs, so an
interrupted run of this script resumes where it stopped. The result, with the world's fingerprint,
goes to ``data/dpo_diagnosis.json``; notebook 08 shows it (and refuses one of another world).

    python scripts/diagnose_dpo.py            # ~30 min on 2 CPU cores (27 measured)
    python scripts/diagnose_dpo.py --quick    # a smoke run (minutes), written to /tmp
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from helpers.cache import artifact_path, build_artifact, fingerprint, records_fingerprint
from helpers.config import output_file, seed_everything
from helpers.evaluate import evaluate_policy, length_controlled_reward, length_slope, sample_policy
from helpers.implicit import pair_implicit_rewards, ranking_accuracy
from helpers.optimum import fraction_of_optimum, optimum_frontier
from helpers.pairs import best_vs_worst, build_preference_pairs, get_preference_pairs, split_pairs, with_min_gap
from helpers.runs import OPTIMUM_BETAS, load_or_train_dpo, make_dpo_config
from helpers.train import train_dpo
from helpers.world import get_prompts, get_reward_fn, load_sft_model, load_tokenizer, tiny_world, world_fingerprint

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "data" / "dpo_diagnosis.json"

SIZES = dict(n_eval_prompts=100, eval_samples=4, optimum_samples=128, n_heldout_pairs=500,
             onpolicy_rounds=3, onpolicy_prompts=1000, onpolicy_k=4)
QUICK = dict(n_eval_prompts=8, eval_samples=2, optimum_samples=8, n_heldout_pairs=32,
             onpolicy_rounds=1, onpolicy_prompts=64, onpolicy_k=2)


def variants(world, base, train, quick: bool) -> list[tuple[str, str, object, list]]:
    """(group, label, DPOConfig, training pairs): today's run, then one change at a time."""
    steps = 2 if quick else None
    if quick:
        base = replace(base, max_steps=2)
    out = [("today", "notebook 06's run", base, train)]
    big, _ = split_pairs(get_preference_pairs(world, n_prompts=64 if quick else 4000, progress=False), 0.1, seed=0)
    out.append(("data", f"{len({p['prompt'] for p in big})} prompts (all pairs)", base, list(big)))
    out.append(("data", "best vs worst of k only (1 pair per prompt)", base, best_vs_worst(train)))
    for gap in (0.1, 0.3):
        out.append(("data", f"near-ties dropped (gap >= {gap:g})", base, with_min_gap(train, gap)))
    for epochs in ((1,) if quick else (1, 3)):
        out.append(("optimisation", f"{epochs} epoch{'s' if epochs > 1 else ''}",
                    replace(base, max_steps=steps, epochs=epochs), train))
    for lr in (3e-5, 3e-4):
        out.append(("optimisation", f"lr {lr:g}", replace(base, lr=lr), train))
    for beta in ((0.3,) if quick else (0.03, 0.3, 1.0)):
        out.append(("beta", f"beta {beta:g}", replace(base, beta=beta), train))
    out.append(("loss", "IPO (beta 0.1)", replace(base, loss_type="ipo"), train))
    out.append(("loss", "cDPO (label smoothing 0.1)", replace(base, label_smoothing=0.1), train))
    return out


def measure(policy, sft, tok, eval_prompts, reward_fn, heldout, config, s, world, lc) -> dict:
    ev = evaluate_policy(policy, sft, tok, eval_prompts, reward_fn, n_samples_per_prompt=s["eval_samples"],
                         max_new_tokens=world.max_new_tokens, seed=1, progress=False)
    imp = pair_implicit_rewards(policy, sft, tok, heldout, config.beta, config.max_length, config.max_prompt_length)
    return {"reward_mean": ev["reward_mean"], "reward_se": ev["reward_se"], "kl_mean": ev["kl_mean"],
            "kl_se": ev["kl_se"], "length_mean": ev["length_mean"], "eos_rate": ev["eos_rate"],
            "lc_reward": length_controlled_reward(ev["rewards"], ev["lengths"], lc["slope"], lc["ref_length"]),
            "implicit_accuracy": ranking_accuracy(imp["chosen"], imp["rejected"])}


def onpolicy_rounds(world, tok, sft, reward_fn, base, s, device, progress: bool) -> list[tuple[dict, object]]:
    """Rounds of on-policy DPO: fresh prompts, k samples from the current policy, all pairs ranked by
    the ground truth by ``helpers.pairs.build_preference_pairs`` (ties, empty and -- as the world says --
    truncated samples dropped and counted), one epoch of DPO starting from the
    current policy; pi_ref = SFT throughout. Each round is a cache artifact whose spec chains the
    previous round's, so a rerun resumes after the last finished round."""
    from transformers import AutoModelForCausalLM

    k = s["onpolicy_k"]
    rounds, previous_spec, previous_dir = [], None, None
    for r in range(1, s["onpolicy_rounds"] + 1):
        prompts = get_prompts(world, world.pairs_split, s["onpolicy_prompts"], seed=100 + r, tokenizer=tok)
        config = replace(base, max_steps=2 if s is QUICK else None, epochs=1, seed=r)
        spec = {"artifact": "on-policy dpo round", "pairs": "helpers.pairs.build_preference_pairs",
                "world": world_fingerprint(world), "round": r,
                "previous": previous_spec, "config": asdict(config), "prompts": len(prompts), "k": k}
        folder = artifact_path(Path(world.root) / "diagnosis", f"onpolicy-round{r}", spec)
        start = previous_dir or world.sft_dir

        def build(tmp: Path, prompts=prompts, config=config, start=start, r=r) -> None:
            policy = AutoModelForCausalLM.from_pretrained(start).to(device).eval()
            # the world's own pair builder: truncated samples handled as the world says (never a fake EOS)
            pairs, stats = build_preference_pairs(policy, tok, prompts, reward_fn, k=k, max_new_tokens=world.max_new_tokens,
                                                  seed=200 + r, drop_truncated=world.pairs_drop_truncated,
                                                  progress=progress)
            policy.train()
            metrics = train_dpo(policy, sft, tok, pairs, config, progress=progress)
            policy.save_pretrained(tmp)
            (tmp / "round.json").write_text(json.dumps({"pairs": stats["n_pairs"], "ties": stats["n_ties"],
                                                         "empty": stats["n_empty"], "truncated": stats["n_truncated"],
                                                         "samples": stats["n_samples"], "steps": len(metrics),
                                                         "final_loss": metrics[-1]["loss"]}))

        build_artifact(folder, spec, build)
        info = json.loads((folder / "round.json").read_text())
        rounds.append(({"round": r, **info, "config": config}, folder))
        previous_spec, previous_dir = fingerprint(spec), folder
    return [(info, AutoModelForCausalLM.from_pretrained(folder).to(device).eval()) for info, folder in rounds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run with tiny sizes")
    ap.add_argument("--out", default=None, help=f"output JSON (default {DEFAULT_OUT}; /tmp for --quick)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    s = QUICK if args.quick else SIZES
    out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "dpo_diagnosis_quick.json" if args.quick
                                           else DEFAULT_OUT)
    try:
        out = output_file(out)  # a folder or an unwritable place is refused now, not after the work
    except ValueError as err:
        ap.error(str(err))
    torch.set_num_threads(1)  # the course's thread policy for tiny models (helpers.config.torch_threads)
    seed_everything(0)
    t_start = time.perf_counter()
    world = tiny_world()
    device = torch.device("cpu")
    tok, sft = load_tokenizer(world), load_sft_model(world, device=device)
    reward_fn = get_reward_fn(world)
    eval_prompts = get_prompts(world, world.eval_split, s["n_eval_prompts"], seed=0, tokenizer=tok)

    # the optimum, and the reward-on-length slope of SFT samples, on the evaluation prompts
    m = s["optimum_samples"]
    ref = sample_policy(sft, tok, eval_prompts, m, world.max_new_tokens, seed=3, progress=args.progress)
    ref_rewards = np.asarray(reward_fn([p + y for p, y in zip(ref["prompt"], ref["response"])]))
    optimum = optimum_frontier(ref_rewards.reshape(len(eval_prompts), m), OPTIMUM_BETAS,
                               lengths=np.asarray(ref["length"]).reshape(len(eval_prompts), m))
    lc = {"slope": length_slope(ref_rewards, ref["length"]), "ref_length": float(np.mean(ref["length"]))}
    print(f"optimum from {m} SFT samples x {len(eval_prompts)} prompts; reward per token of length "
          f"{lc['slope']:+.4f} (SFT mean length {lc['ref_length']:.1f})", flush=True)

    pairs = get_preference_pairs(world, progress=False)
    train, held = split_pairs(pairs, 0.1, seed=0)
    heldout = held.select(range(min(len(held), s["n_heldout_pairs"])))
    base = make_dpo_config(world)
    rows = []
    sft_row = measure(sft, sft, tok, eval_prompts, reward_fn, heldout, base, s, world, lc)
    rows.append({"group": "reference", "label": "SFT (pi_ref)", **sft_row})
    for group, label, config, variant_pairs in variants(world, base, train, args.quick):
        t0 = time.perf_counter()
        policy, metrics = load_or_train_dpo(world, config, variant_pairs, tokenizer=tok, ref_model=sft, device=device,
                                            progress=args.progress)
        row = {"group": group, "label": label, "beta": config.beta, "lr": config.lr, "steps": len(metrics),
               "pairs": len(variant_pairs), "epochs": len(metrics) * config.batch_size / len(variant_pairs),
               "final_batch_accuracy": metrics[-1]["rewards/accuracies"],
               **measure(policy, sft, tok, eval_prompts, reward_fn, heldout, config, s, world, lc)}
        row["of_optimum"] = fraction_of_optimum(optimum, row["kl_mean"], row["reward_mean"])
        row["of_optimum_lc"] = fraction_of_optimum(optimum, row["kl_mean"], row["lc_reward"])
        pstar = next((q for q in optimum if math.isclose(q["beta"], config.beta)), None)
        row["optimum_at_beta"] = pstar and {k: pstar[k] for k in ("reward_mean", "kl_mean", "reliable")}
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{label:45s} reward {row['reward_mean']:+.3f} KL {row['kl_mean']:6.2f} of pi* {row['of_optimum']:5.2f} "
              f"len {row['length_mean']:5.1f} acc {row['implicit_accuracy']:.3f} ({row['seconds']:.0f} s)", flush=True)

    onpolicy = []
    for info, policy in onpolicy_rounds(world, tok, sft, reward_fn, base, s, device, args.progress):
        row = {"round": info["round"], "pairs": info["pairs"], "ties": info["ties"], "empty": info["empty"],
               "truncated": info["truncated"],
               "samples": info["samples"], "steps": info["steps"],
               **measure(policy, sft, tok, eval_prompts, reward_fn, heldout, info["config"], s, world, lc)}
        row["of_optimum"] = fraction_of_optimum(optimum, row["kl_mean"], row["reward_mean"])
        row["of_optimum_lc"] = fraction_of_optimum(optimum, row["kl_mean"], row["lc_reward"])
        onpolicy.append(row)
        print(f"on-policy round {row['round']}: reward {row['reward_mean']:+.3f} KL {row['kl_mean']:6.2f} "
              f"of pi* {row['of_optimum']:5.2f} len {row['length_mean']:5.1f}", flush=True)

    result = {"world_fingerprint": world_fingerprint(world),
              "meta": {"sizes": s, "quick": args.quick, "base_config": asdict(base), "torch": torch.__version__,
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "total_s": time.perf_counter() - t_start,
                       "train_pairs_fingerprint": records_fingerprint(train)},
              "length_control": lc, "optimum": optimum, "rows": rows, "onpolicy": onpolicy}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {out} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
