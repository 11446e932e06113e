"""Does DPO reach pi*? The gap to the optimum, taken apart one change at a time (notebook 09).

From the same k SFT samples of each training prompt, one policy per target of
``helpers.targets.TARGETS`` (hard labels, Bradley-Terry-sampled labels, their expectation, the
listwise softmax, pi* distilled) and per training seed, each evaluated along training on the
frontier's held-out prompts -- every method with the same prompts and the same sampling seed --
against pi*_beta estimated from 256 SFT samples per prompt. Then:

* every point's fraction of pi*'s reward gain at its own KL, with a standard error that holds both
  the spread over training seeds and the evaluation prompts' noise (a paired bootstrap over
  prompts: the method and pi* resampled together);
* the KL by the sequence log-ratio and by the exact per-token estimator, side by side;
* the implicit rewards' calibration (within-prompt slope on r over held-out pi_ref samples; the
  target implies 1 / tau) and the drift off pi* (length, EOS against pi*'s own);
* pi*'s estimate at M = 256, 1024, 4096 samples per prompt on a prompt subset;
* the model class: a fit on the evaluation prompts' own samples, evaluated on those same prompts.

Each run is a ``helpers.cache`` artifact (keyed by the world, the sizes and the run), so an
interrupted script resumes after the last finished run. Output: ``data/optimum_gap.json`` with the
world's fingerprint; notebook 09 refuses one of another world.

    python scripts/optimum_gap.py --jobs 2     # ~30 min on 2 CPU cores
    python scripts/optimum_gap.py --quick      # a smoke run (a minute or two), written to /tmp
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.cache import artifact_path, build_artifact, fingerprint, is_built  # noqa: E402
from helpers.config import output_file, seed_everything  # noqa: E402
from helpers.evaluate import evaluate_policy, sample_policy, score_responses  # noqa: E402
from helpers.implicit import calibration_slope  # noqa: E402
from helpers.optimum import fraction_of_optimum_bound, optimum_frontier  # noqa: E402
from helpers.profiles import OPTIMUM_GAP_SIZES, set_hub_offline, sizes  # noqa: E402
from helpers.targets import TARGETS, TargetConfig, groups_from_samples, train_on_target  # noqa: E402
from helpers.world import get_prompts, get_reward_fn, load_sft_model, load_tokenizer, tiny_world, world_fingerprint  # noqa: E402,E501

DEFAULT_OUT = ROOT / "data" / "optimum_gap.json"
QUICK = dict(n_train_prompts=16, k=4, n_eval_prompts=8, eval_samples=4, optimum_samples=16, max_steps=4,
             eval_steps=(2, 4), early_eval_steps=(1,), early_targets=("hard",), seeds=(0,), calibration_samples=2,
             prompts_per_step=4,
             m_sensitivity=dict(n_prompts=4, ms=(8, 16, 32), betas=(0.1, 0.5), seed=13),
             amortisation=dict(n_prompts=8, targets=("soft",), seed=0), bootstrap=20)


EARLY_KEYS = ("early_eval_steps", "early_targets")


def settings(quick: bool) -> dict:
    s = sizes(OPTIMUM_GAP_SIZES, "tiny")
    if quick:
        s.update(QUICK)
    return s


def run_settings(s: dict, kind: str) -> dict:
    """The settings a run of ``kind`` depends on: the early checkpoints only matter to "early" runs."""
    return s if kind == "early" else {k: v for k, v in s.items() if k not in EARLY_KEYS}


def parts(s: dict):
    """The world, tokenizer, SFT model (pi_ref), reward, and the evaluation prompts."""
    world = tiny_world()
    tok, sft = load_tokenizer(world), load_sft_model(world, device="cpu")
    reward_fn = get_reward_fn(world)
    eval_prompts = get_prompts(world, world.eval_split, s["n_eval_prompts"], seed=0, tokenizer=tok)
    return world, tok, sft, reward_fn, eval_prompts


def scored_samples(model, tok, prompts, n, seed, reward_fn, max_new_tokens) -> tuple[dict, np.ndarray]:
    samples = sample_policy(model, tok, prompts, n, max_new_tokens, seed=seed, progress=False)
    rewards = np.asarray(reward_fn([p + y for p, y in zip(samples["prompt"], samples["response"])]), np.float64)
    return samples, rewards


def per_prompt(values, prompt_index, n_prompts: int) -> list[float]:
    values, idx = np.asarray(values, np.float64), np.asarray(prompt_index)
    return [float(values[idx == p].mean()) for p in range(n_prompts)]


def make_eval_fn(sft, tok, prompts, reward_fn, s, world, calibration):
    """Reward, KL (both estimators), length, EOS rate -- overall and per prompt -- and the
    implicit rewards' calibration slope on held-out SFT samples."""

    def eval_fn(policy) -> dict:
        ev = evaluate_policy(policy, sft, tok, prompts, reward_fn, s["eval_samples"], world.max_new_tokens,
                             seed=s["eval_seed"], progress=False, exact_kl=True)
        pad = tok.pad_token_id
        pol = score_responses(policy, calibration["prompt_ids"], calibration["response_ids"], pad)
        implicit = s["beta"] * (pol - calibration["ref_logps"])
        n = len(prompts)
        return {"reward_mean": ev["reward_mean"], "reward_se": ev["reward_se"], "kl_mean": ev["kl_mean"],
                "kl_se": ev["kl_se"], "kl_token_mean": ev["kl_token_mean"], "kl_token_se": ev["kl_token_se"],
                "length_mean": ev["length_mean"], "eos_rate": ev["eos_rate"],
                "calibration_slope": calibration_slope(implicit, calibration["rewards"], calibration["groups"]),
                "prompt_rewards": per_prompt(ev["rewards"], ev["prompt_index"], n),
                "prompt_kls": per_prompt(ev["kls"], ev["prompt_index"], n)}

    return eval_fn


def calibration_set(sft, tok, prompts, reward_fn, s, world) -> dict:
    samples, rewards = scored_samples(sft, tok, prompts, s["calibration_samples"], s["calibration_seed"], reward_fn,
                                      world.max_new_tokens)
    ref = score_responses(sft, samples["prompt_ids"], samples["response_ids"], tok.pad_token_id)
    return {"prompt_ids": samples["prompt_ids"], "response_ids": samples["response_ids"], "ref_logps": ref,
            "rewards": rewards, "groups": np.asarray(samples["prompt_index"])}


def run_one(kind: str, target: str, seed: int, s: dict) -> dict:
    """One training run: ``kind`` "main" (train prompts -> held-out evaluation), "early" (the same run
    as "main", evaluated at ``early_eval_steps`` instead: its data order, seeds and schedule are the
    same, so these are extra checkpoints of one trajectory) or "amortisation" (the first n evaluation
    prompts' own samples -> those prompts)."""
    torch.set_num_threads(1)
    seed_everything(0)
    world, tok, sft, reward_fn, eval_prompts = parts(s)
    if kind in ("main", "early"):
        train_prompts = get_prompts(world, world.pairs_split, s["n_train_prompts"], seed=0, tokenizer=tok)
        prompts = eval_prompts
    else:
        train_prompts = prompts = eval_prompts[: s["amortisation"]["n_prompts"]]
    samples, rewards = scored_samples(sft, tok, train_prompts, s["k"], s["sample_seed"], reward_fn,
                                      world.max_new_tokens)
    groups, counts = groups_from_samples(samples, rewards, drop_truncated=world.pairs_drop_truncated)
    calibration = calibration_set(sft, tok, prompts, reward_fn, s, world)
    eval_steps = s["early_eval_steps"] if kind == "early" else s["eval_steps"]
    # warm-up then a constant rate: stopping an "early" run sooner leaves its first steps unchanged
    config = TargetConfig(target=target, beta=s["beta"], tau=s["tau"], lr=s["lr"], warmup_steps=s["warmup_steps"],
                          prompts_per_step=s["prompts_per_step"], max_steps=max(eval_steps) if kind == "early"
                          else s["max_steps"], seed=seed)
    policy = load_sft_model(world, device="cpu")
    t0 = time.perf_counter()
    out = train_on_target(policy, sft, tok, groups, config, eval_fn=make_eval_fn(sft, tok, prompts, reward_fn, s,
                                                                                   world, calibration),
                          eval_steps=eval_steps, progress=False)
    return {"kind": kind, "target": target, "seed": seed, "groups": counts, "n_terms": out["n_terms"],
            "path": out["path"], "final_loss": out["history"][-1]["loss"], "wall_s": time.perf_counter() - t0}


def run_reference(s: dict) -> dict:
    """The SFT model's own evaluation and pi*'s samples (their per-prompt rewards and lengths)."""
    torch.set_num_threads(1)
    world, tok, sft, reward_fn, eval_prompts = parts(s)
    n = len(eval_prompts)
    m = s["optimum_samples"]
    samples, rewards = scored_samples(sft, tok, eval_prompts, m, s["optimum_seed"], reward_fn, world.max_new_tokens)
    ev = evaluate_policy(sft, sft, tok, eval_prompts, reward_fn, s["eval_samples"], world.max_new_tokens,
                         seed=s["eval_seed"], progress=False)
    sub = s["m_sensitivity"]
    m_max = max(sub["ms"])
    big, big_rewards = scored_samples(sft, tok, eval_prompts[: sub["n_prompts"]], m_max, sub["seed"], reward_fn,
                                      world.max_new_tokens)
    big_rewards = big_rewards.reshape(sub["n_prompts"], m_max)
    sensitivity = []
    for mm in sub["ms"]:
        for p in optimum_frontier(big_rewards[:, :mm], sub["betas"]):
            if np.isfinite(p["beta"]):
                sensitivity.append({"m": mm, "beta": p["beta"], "reward": p["reward_mean"], "reward_se": p["reward_se"],
                                    "kl": p["kl_mean"], "kl_se": p["kl_se"], "ess_median": p["ess_median"],
                                    "reliable": p["reliable"]})
    return {"optimum_rewards": rewards.reshape(n, m).tolist(),
            "optimum_lengths": np.asarray(samples["length"], np.float64).reshape(n, m).tolist(),
            "sft": {"reward_mean": ev["reward_mean"], "reward_se": ev["reward_se"], "length_mean": ev["length_mean"],
                    "eos_rate": ev["eos_rate"], "prompt_rewards": per_prompt(ev["rewards"], ev["prompt_index"], n)},
            "m_sensitivity": sensitivity}


# --------------------------------------------------------------------------------------------
# summaries


def fraction_with_se(runs_at: list[dict], ref: dict, s: dict, prompts: np.ndarray | None = None,
                     rng: np.random.Generator | None = None) -> dict:
    """Mean over seeds of one checkpoint's KL, reward and fraction of pi*'s gain, each with an SE.

    SE of the fraction: the spread over seeds (std / sqrt(n)) and the evaluation prompts' noise (a
    bootstrap over prompts, resampling the method's and pi*'s per-prompt values together), added in
    quadrature. ``prompts``: a subset of the evaluation prompts (indices) to summarise on.
    """
    rewards = np.asarray(ref["optimum_rewards"])
    lengths = np.asarray(ref["optimum_lengths"])
    idx = np.arange(rewards.shape[0]) if prompts is None else np.asarray(prompts)

    def summary(sel):
        frontier = optimum_frontier(rewards[sel], s["optimum_betas"])
        fr, exact = [], True
        for p in runs_at:
            kl = float(np.mean(np.asarray(p["prompt_kls"])[sel]))
            reward = float(np.mean(np.asarray(p["prompt_rewards"])[sel]))
            f, e = fraction_of_optimum_bound(frontier, kl, reward)
            fr.append(f)
            exact &= e
        return np.asarray(fr), exact

    fractions, exact = summary(idx)
    rng = rng or np.random.default_rng(0)
    boot = [np.nanmean(summary(rng.choice(idx, len(idx)))[0]) for _ in range(s["bootstrap"])]
    n = len(runs_at)
    seed_se = float(np.std(fractions, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    kls = [float(np.mean(np.asarray(p["prompt_kls"])[idx])) for p in runs_at]
    rws = [float(np.mean(np.asarray(p["prompt_rewards"])[idx])) for p in runs_at]

    def mean_se(v):
        return float(np.mean(v)), (float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"))

    out = {"seeds": n, "fraction": float(np.mean(fractions)), "fraction_exact": bool(exact),
           "fraction_se": float(np.hypot(seed_se, np.nanstd(boot, ddof=1))),
           "fraction_se_seeds": seed_se, "fraction_se_prompts": float(np.nanstd(boot, ddof=1))}
    out["kl"], out["kl_se"] = mean_se(kls)
    out["reward"], out["reward_se"] = mean_se(rws)
    # the evaluation's own noise on the reward (over prompts), for comparison with the seed spread
    out["reward_se_prompts"] = float(np.mean([p["reward_se"] for p in runs_at]))
    for key in ("kl_token_mean", "length_mean", "eos_rate", "calibration_slope"):
        out[key.removesuffix("_mean")] = float(np.mean([p[key] for p in runs_at]))
    # pi*'s own length at this KL (its SNIS-weighted mean), to read the drift off
    frontier = optimum_frontier(rewards[idx], s["optimum_betas"], lengths=lengths[idx])
    pts = [q for q in frontier if q["reliable"]]
    out["optimum_length"] = float(np.interp(out["kl"], [q["kl_mean"] for q in pts], [q["length_mean"] for q in pts]))
    return out


def summarise(runs: list[dict], ref: dict, s: dict) -> tuple[list[dict], list[dict]]:
    """rows: one per (target, checkpoint) of the main runs, over seeds; headline = the best
    fraction at <= kl_budget nats. amortisation: the same-prompt fits against the main runs on those prompts."""
    rows = []
    for target in TARGETS:
        mine = sorted((r for r in runs if r["kind"] == "main" and r["target"] == target), key=lambda r: r["seed"])
        if not mine:
            continue
        early = {r["seed"]: r["path"] for r in runs if r["kind"] == "early" and r["target"] == target}
        paths = [sorted(early.get(r["seed"], []) + r["path"], key=lambda p: p["step"]) for r in mine]
        for i, point in enumerate(paths[0]):
            if point["step"] == 0:
                continue
            at = [path[i] for path in paths]
            rows.append({"method": "DPO" if target != "distilled" else "pi* distilled", "target": target,
                         "step": point["step"], **fraction_with_se(at, ref, s)})
        within = [r for r in rows if r["target"] == target and r["kl"] <= s["kl_budget"]]
        if within:
            max(within, key=lambda r: r["fraction"])["headline"] = True
    amort = []
    n_sub = s["amortisation"]["n_prompts"]
    for r in (r for r in runs if r["kind"] == "amortisation"):
        main = [m for m in runs if m["kind"] == "main" and m["target"] == r["target"]]
        for i, point in enumerate(r["path"]):
            if point["step"] == 0:
                continue
            same = fraction_with_se([point], ref, s, prompts=np.arange(n_sub))
            held = fraction_with_se([m["path"][i] for m in main], ref, s, prompts=np.arange(n_sub)) if main else None
            amort.append({"target": r["target"], "step": point["step"], "fit_on_eval_prompts": same,
                          "trained_on_other_prompts": held})
    return rows, amort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run with tiny sizes")
    ap.add_argument("--out", default=None, help=f"output JSON (default {DEFAULT_OUT}; /tmp for --quick)")
    ap.add_argument("--jobs", type=int, default=1, choices=range(1, 17), metavar="N", help="runs in parallel (1-16)")
    ap.add_argument("--one", nargs=4, metavar=("KIND", "TARGET", "SEED", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    set_hub_offline()
    s = settings(args.quick)
    if args.one:  # one run, in its own process; its result goes to a file (a pipe would fill up and block)
        kind, target, seed, result_path = args.one
        result = run_reference(s) if kind == "reference" else run_one(kind, target, int(seed), s)
        Path(result_path).write_text(json.dumps(result))
        return
    out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "optimum_gap_quick.json" if args.quick
                                           else DEFAULT_OUT)
    try:
        out = output_file(out)  # a folder or an unwritable place is refused now, not after the work
    except ValueError as err:
        ap.error(str(err))
    t_start = time.perf_counter()
    world = tiny_world()
    world_fp = world_fingerprint(world)
    done_dir = Path(world.root) / "optimum_gap" / f"world-{world_fp}-settings-{fingerprint(run_settings(s, 'main'))}"
    jobs = [("reference", "-", 0)] + [("main", t, seed) for seed in s["seeds"] for t in TARGETS] + \
           [("amortisation", t, s["amortisation"]["seed"]) for t in s["amortisation"]["targets"]] + \
           [("early", t, seed) for seed in s["seeds"] for t in s["early_targets"]]

    def spec(job) -> dict:
        return {"artifact": "optimum-gap run", "job": list(job), "world": world_fp, "settings": run_settings(s, job[0])}

    def path(job) -> Path:
        return artifact_path(done_dir, "_".join(map(str, job)), spec(job))

    pending, procs = [j for j in jobs if not is_built(path(j), spec(j))], {}
    print(f"{len(jobs) - len(pending)} of {len(jobs)} runs already done", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="optimum_gap-"))
    while pending or procs:
        while pending and len(procs) < args.jobs:
            job = pending.pop(0)
            result_file, log = scratch / ("_".join(map(str, job)) + ".json"), scratch / ("_".join(map(str, job)) + ".log")
            cmd = [sys.executable, __file__, "--one", *map(str, job), str(result_file)] + (["--quick"] if args.quick else [])
            with open(log, "w") as log_file:  # a file, not a pipe: a pipe nobody reads fills up and blocks the run
                procs[job] = (subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT), time.perf_counter(),
                              result_file, log)
        for job, (proc, t, result_file, log) in list(procs.items()):
            if proc.poll() is None:
                continue
            del procs[job]
            if proc.returncode or not result_file.exists():
                print(log.read_text()[-3000:])
                raise SystemExit(f"run {job} failed (exit {proc.returncode}); the finished runs are kept")
            text = result_file.read_text()
            build_artifact(path(job), spec(job), lambda tmp, text=text: (tmp / "result.json").write_text(text))
            r = json.loads(text)
            last = r["path"][-1] if "path" in r else None
            print(f"{' '.join(map(str, job)):24s}" + (f" step {last['step']}: reward {last['reward_mean']:+.3f} "
                                                     f"KL {last['kl_mean']:.2f}" if last else "") +
                  f"  ({time.perf_counter() - t:.0f} s)", flush=True)
        time.sleep(1)
    results = {job: json.loads((path(job) / "result.json").read_text()) for job in jobs}
    ref = results[jobs[0]]
    runs = [results[j] for j in jobs[1:]]
    rows, amort = summarise(runs, ref, s)
    frontier = optimum_frontier(np.asarray(ref["optimum_rewards"]), s["optimum_betas"],
                                lengths=np.asarray(ref["optimum_lengths"]))
    result = {
        "world_fingerprint": world_fp,
        "meta": {"settings": s, "quick": args.quick, "torch": torch.__version__, "threads_per_run": 1,
                 "jobs": args.jobs, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "total_s": time.perf_counter() - t_start},
        "sft": {k: v for k, v in ref["sft"].items() if k != "prompt_rewards"},
        "optimum": frontier, "rows": rows, "amortisation": amort,
        "optimum_m_sensitivity": ref["m_sensitivity"],
        "runs": [{k: v for k, v in r.items() if k != "path"} |
                 {"path": [{k: v for k, v in p.items() if not k.startswith("prompt_")} for p in r["path"]]}
                 for r in runs],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
