"""The reward-vs-KL frontier of notebook 08: PPO (learned reward model), PPO-GT (ground truth), RLOO,
DPO and best-of-N from SFT, each for a few beta, evaluated by ``helpers.evaluate.evaluate_policy`` on
the same held-out prompts. Writes ``data/frontier.json``, which notebook 08 loads.

    OMP_NUM_THREADS=1 python scripts/run_frontier.py   # the full sweep (tiny profile; ~40 min on a busy CPU)
    python scripts/run_frontier.py --quick         # a smoke run (minutes), written to /tmp

Every training run happens in its own subprocess so that its peak memory (ru_maxrss) is its own.
The learned reward model is trained once (``helpers.reward_model``) and shared by PPO, RLOO and
best-of-N through a file in the cache.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers import reward_model as rm_mod  # noqa: E402
from helpers import rlhf  # noqa: E402
from helpers.cache import artifact_path, build_artifact, fingerprint, is_built  # noqa: E402
from helpers.config import cache_dir, get_device, output_file, seed_everything  # noqa: E402
from helpers.world import world_fingerprint  # noqa: E402

DEFAULT_OUT = ROOT / "data" / "frontier.json"


def default_out(profile: str) -> Path:
    """``data/frontier.json`` (tiny, notebook 08's saved sweep) or ``data/frontier_<profile>.json``."""
    return DEFAULT_OUT if profile == "tiny" else DEFAULT_OUT.with_name(f"frontier_{profile}.json")
WORD = re.compile(r"[a-z']+")


# ----------------------------------------------------------------------------------------------
# settings


def settings(quick: bool, profile: str = "tiny") -> dict:
    """The sweep's sizes (``helpers.profiles.FRONTIER_SIZES[profile]``), shrunk for ``--quick``."""
    from helpers.profiles import FRONTIER_SIZES, sizes

    s = sizes(FRONTIER_SIZES, profile)
    s["profile"] = profile
    if quick:
        s.update(n_eval_prompts=16, eval_samples=2, n_train_prompts=64, rl_steps=2,
                 ppo_betas=[0.1], rloo_betas=[0.1], ppo_gt_betas=[0.1], dpo_betas=[0.5], bon_ns=[1, 2, 4])
        s["rl"] = dict(s["rl"], batch_size=8, mini_batch_size=4)
        s["rloo"] = dict(s["rloo"], batch_size=2, mini_batch_size=1)
        s["dpo_lr1e-4_betas"] = []
        s["dpo"] = dict(s["dpo"], max_steps=2)
        s["rm"] = dict(steps=5)
        s.update(optimum_samples=8, optimum_betas=[0.3, 1.0])
    return s


def sweep_world(s: dict):
    """The world of the notebooks for ``s["profile"]`` -- or, with ``--sft-steps``, a world of its
    own in another folder, so the sweep never replaces the SFT model notebooks 04-08 use."""
    from helpers.world import default_root, get_world

    world = get_world(s["profile"])
    steps = s.get("sft_steps")
    if steps and steps != world.sft_steps:
        return get_world(s["profile"], root=default_root(s["profile"]).with_name(f"{world.profile}-sft{steps}"),
                         sft_steps=steps)
    return world


# ----------------------------------------------------------------------------------------------
# the world: tokenizer, SFT model, prompts, pairs, rewards


def world_parts(s: dict):
    from helpers.world import get_prompts, get_reward_fn, load_sft_model, load_tokenizer

    world = sweep_world(s)
    tok = load_tokenizer(world)
    sft = load_sft_model(world, device=get_device())  # DPO_DEVICE, else CUDA when present
    train_prompts = get_prompts(world, world.pairs_split, s["n_train_prompts"], seed=0, tokenizer=tok)
    eval_prompts = get_prompts(world, world.eval_split, s["n_eval_prompts"], seed=0, tokenizer=tok)
    return world, tok, sft, train_prompts, eval_prompts, get_reward_fn(world)


def text_score_fn(tok, text_reward):
    """Adapt ``reward(texts) -> list[float]`` (prompt + response text) to rlhf's id-based score_fn."""

    def score_fn(prompts_ids, responses_ids):
        texts = [tok.decode(p + r, skip_special_tokens=True) for p, r in zip(prompts_ids, responses_ids)]
        return text_reward(texts)

    return score_fn


def rm_path(s: dict) -> Path | None:
    """The notebook's reward model (the default place) unless this is a quick smoke run."""
    return cache_dir() / "rlhf_rm_quick" if s.get("quick") else None


def get_reward_model(world, s: dict):
    """Train (or load) the Bradley-Terry reward model on the world's pairs; normalised on SFT samples."""
    return rm_mod.load_or_train_pair_reward_model(world, path=rm_path(s), device=get_device(), **s["rm"])


# ----------------------------------------------------------------------------------------------
# one run (in a subprocess)


def word_rates(responses: list[str]) -> dict[str, float]:
    counts = Counter()
    for r in responses:
        counts.update(set(WORD.findall(r.lower())))
    return {w: c / max(len(responses), 1) for w, c in counts.items()}


def summarise_eval(ev: dict, n_examples: int = 4) -> dict:
    keep = ("reward_mean", "reward_se", "kl_mean", "kl_se", "length_mean", "eos_rate", "exclaim_rate",
            "n_prompts", "n_samples")
    out = {k: float(ev[k]) for k in keep}
    out["word_rates"] = {w: round(v, 4) for w, v in word_rates(ev["responses"]).items()}
    # the first sample of the first prompts: the same prompts in every run, for side-by-side examples
    idx = [i for i in range(len(ev["responses"])) if i % max(1, ev["n_samples"] // ev["n_prompts"]) == 0]
    out["examples"] = [{"prompt": ev["prompts"][i], "response": ev["responses"][i],
                        "reward": round(float(ev["rewards"][i]), 3)} for i in idx[:n_examples]]
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 20 ms by a thread (Linux).

    ru_maxrss alone is useless here: every run's lifetime peak is set while loading the corpus.
    """

    def __enter__(self):
        import threading

        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()

        def watch():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, _rss_mb())

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        self.delta = self.peak - self.base


def state_mb(*modules, optimizer_states: int = 2) -> float:
    """Tensor memory of the models held: parameters, plus grads and Adam's two moments when trained."""
    total = 0.0
    for module, trained in modules:
        n = sum(p.numel() * p.element_size() for p in module.parameters())
        total += n * (2 + optimizer_states if trained else 1)
    return total / 2**20


def run_one(method: str, beta: float, s: dict) -> dict:
    from helpers.evaluate import evaluate_policy

    seed_everything(0)
    world, tok, sft, train_prompts, eval_prompts, gt_reward = world_parts(s)
    policy = type(sft).from_pretrained(world.sft_dir).eval().to(sft.device)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    result = {"method": method, "beta": beta}
    rm = None
    if method in ("PPO", "RLOO"):
        rm, _ = get_reward_model(world, s)
    meter = PeakRSS().__enter__()
    t0 = time.perf_counter()
    if method in ("PPO", "RLOO", "PPO-GT"):
        score_fn = text_score_fn(tok, gt_reward if method == "PPO-GT" else rm)
        cfg = rlhf.RLHFConfig(beta=beta, **dict(s["rl"], **(s["rloo"] if method == "RLOO" else {})))
        prompts_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in train_prompts]
        out = rlhf.train_rlhf("rloo" if method == "RLOO" else "ppo", policy, sft, prompts_ids, score_fn, cfg,
                              s["rl_steps"], eos, pad, progress=False)
        result["history"] = [{k: round(h[k], 4) for k in ("score", "kl", "response_len", "eos_rate")}
                             for h in out["history"]]
        result["samples"] = out["samples"]
    elif method in ("DPO", "DPO-lr1e-4"):
        # the reward model's training split: DPO and the reward model see the same pairs
        from helpers.pairs import get_preference_pairs
        from helpers.runs import split_pairs
        from helpers.train import DPOConfig, train_dpo

        pairs, _ = split_pairs(get_preference_pairs(world, progress=False), 0.1, seed=0)
        # "DPO-lr1e-4": notebook 06-07's later choice of learning rate, the same everything else
        cfg = DPOConfig(beta=beta, precompute_ref_logps=True,
                        **dict(s["dpo"], **({"lr": 1e-4} if method == "DPO-lr1e-4" else {})))
        metrics = train_dpo(policy, sft, tok, pairs, cfg, progress=False)
        result["history"] = [{"loss": round(m["loss"], 4), "acc": round(m["rewards/accuracies"], 4)}
                             for m in metrics]
        result["samples"] = 0  # trains on the pairs' samples, generated once before (see "pairs")
    else:
        raise ValueError(method)
    result["wall_s"] = time.perf_counter() - t0
    meter.__exit__(None, None, None)
    result["train_rss_mb"] = meter.delta  # memory the training itself added (activations, optimizer, ...)
    held = [(policy, True), (sft, False)]
    if rm is not None:
        held.append((rm.model, False))
    result["state_mb"] = state_mb(*held)
    ev = evaluate_policy(policy.eval(), sft, tok, eval_prompts, gt_reward, n_samples_per_prompt=s["eval_samples"],
                         max_new_tokens=world.max_new_tokens, seed=1, progress=False)
    result.update(summarise_eval(ev))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


# ----------------------------------------------------------------------------------------------
# best-of-N and SFT (in the parent)


def best_of_n_by(select: np.ndarray, value: np.ndarray, n: int) -> np.ndarray:
    """E[value of the sample that ``select`` ranks best among n drawn from m], unbiased, per prompt.

    Sorting each prompt's m samples by ``select`` (ascending), the best of a random n-subset is the
    i-th with probability C(i-1, n-1) / C(m, n) (as ``helpers.implicit.expected_best_of_n``, which is
    the special case select = value).

    Args: select, value: (P, m). Returns: (P,).
    """
    order = np.argsort(select, axis=1, kind="stable")
    ranked = np.take_along_axis(value, order, axis=1)
    m = ranked.shape[1]
    weights = np.array([math.comb(i, n - 1) for i in range(m)], dtype=np.float64) / math.comb(m, n)
    return ranked @ weights


def run_bon_and_sft(s: dict) -> tuple[list[dict], dict]:
    from helpers.evaluate import evaluate_policy
    from helpers.implicit import bon_kl_bound

    world, tok, sft, _, eval_prompts, gt_reward = world_parts(s)
    rm, _ = get_reward_model(world, s)
    m = max(s["bon_ns"])
    t0 = time.perf_counter()
    ev = evaluate_policy(sft, sft, tok, eval_prompts, gt_reward, n_samples_per_prompt=m,
                         max_new_tokens=world.max_new_tokens, seed=2, progress=False)
    texts = [p + r for p, r in zip(ev["prompts"], ev["responses"])]
    gt = np.asarray(ev["rewards"]).reshape(len(eval_prompts), m)
    rm_scores = np.asarray(rm(texts)).reshape(len(eval_prompts), m)
    wall = time.perf_counter() - t0
    rows = []
    for scorer, select in (("reward model", rm_scores), ("ground truth", gt)):
        for n in s["bon_ns"]:
            per_prompt = best_of_n_by(select, gt, n)
            rows.append({"method": f"BoN ({scorer})", "N": n, "reward_mean": float(per_prompt.mean()),
                         "reward_se": float(per_prompt.std(ddof=1) / math.sqrt(len(per_prompt))),
                         "kl_bound": bon_kl_bound(n), "samples_per_prompt": n})
    # hacking stats of best-of-N (RM): the sample picked from the first n of each prompt
    lengths = np.asarray(ev["lengths"]).reshape(-1, m)
    ended = np.asarray(ev["ended"]).reshape(-1, m)
    responses = np.asarray(ev["responses"], dtype=object).reshape(-1, m)
    for row in rows:
        if row["method"] != "BoN (reward model)":
            continue
        n = row["N"]
        pick = np.argmax(rm_scores[:, :n], axis=1)
        chosen = [responses[i, j] for i, j in enumerate(pick)]
        row.update(length_mean=float(lengths[np.arange(len(pick)), pick].mean()),
                   eos_rate=float(ended[np.arange(len(pick)), pick].mean()),
                   exclaim_rate=float(np.mean(["!" in c for c in chosen])),
                   word_rates={w: round(v, 4) for w, v in word_rates(chosen).items()})
    # SFT itself, evaluated exactly as the trained policies (4 samples per prompt, seed 1)
    ev_sft = evaluate_policy(sft, sft, tok, eval_prompts, gt_reward, n_samples_per_prompt=s["eval_samples"],
                             max_new_tokens=world.max_new_tokens, seed=1, progress=False)
    sft_row = {"method": "SFT", "beta": None, **summarise_eval(ev_sft), "bon_sampling_s": wall}
    return rows, sft_row


def run_optimum(s: dict) -> list[dict]:
    """The pi* frontier on the evaluation prompts: ``optimum_samples`` SFT samples per prompt, scored
    by the ground truth, reweighted by exp(r / beta) (``helpers.runs.optimum_curve``), with pi*'s length."""
    from helpers.runs import optimum_curve

    world, tok, sft, _, eval_prompts, gt_reward = world_parts(s)
    return optimum_curve(sft, tok, eval_prompts, gt_reward, m=s["optimum_samples"], max_new_tokens=world.max_new_tokens,
                         betas=s["optimum_betas"], seed=3, progress=False)


# ----------------------------------------------------------------------------------------------
# cost: lines of code per method


def code_lines(objs) -> int:
    """Lines of code of functions/classes: docstrings and comments dropped, as ``ast.unparse`` prints them."""
    total = 0
    for obj in objs:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                    isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        total += sum(1 for line in ast.unparse(tree).splitlines() if line.strip())
    return total


def lines_of_code() -> dict[str, int]:
    from helpers import logprobs, losses, train
    from helpers.evaluate import generate_responses

    rollout = [generate_responses, rlhf.pack_rollout, rlhf.response_logprobs, rlhf.masked_mean,
               rlhf.train_rlhf, rlhf._score, rlhf._rollout_stats, rlhf.ppo_policy_loss, logprobs.token_logprobs]
    rm_code = [rm_mod]  # the whole reward-model module (NormalisedReward and the cached pair model included)
    ppo = rollout + [rlhf.ValueHead, rlhf.kl_penalized_rewards, rlhf.compute_gae, rlhf.whiten, rlhf.masked_var,
                     rlhf.ppo_value_loss, rlhf.ppo_step, rlhf.FixedKLController, rlhf.AdaptiveKLController,
                     rlhf.make_kl_controller]
    rloo = rollout + [rlhf.rloo_advantages, rlhf.rloo_step, rlhf.FixedKLController, rlhf.make_kl_controller]
    dpo = [losses.dpo_loss, losses.preference_logratios, losses.implicit_rewards, logprobs.token_logprobs,
           logprobs.sequence_logprobs, logprobs.concatenated_forward, train.compute_dpo_losses, train.dpo_train_step,
           train.train_dpo, train.collate_batch, train.compute_ref_logps, train.compute_ref_batch_logps]
    return {"PPO": code_lines(ppo) + code_lines(rm_code), "PPO-GT": code_lines(ppo), "RLOO": code_lines(rloo)
            + code_lines(rm_code), "DPO": code_lines(dpo), "reward model": code_lines(rm_code)}


# ----------------------------------------------------------------------------------------------
# main


METHOD_NAMES = ("PPO", "RLOO", "PPO-GT", "DPO", "DPO-lr1e-4", "BoN")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (``--jobs 0`` would wait for ever)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run with tiny sizes")
    ap.add_argument("--out", default=None, help=f"output JSON (default {DEFAULT_OUT}; /tmp for --quick)")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "BETA"), help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="*", default=None, choices=METHOD_NAMES, metavar="METHOD",
                    help=f"methods to run, of {' '.join(METHOD_NAMES)}")
    ap.add_argument("--jobs", type=positive_int, default=1, help="runs in parallel (wall times then include contention)")
    ap.add_argument("--sft-steps", type=positive_int, default=None, help="override the world's SFT steps")
    ap.add_argument("--profile", choices=["tiny", "gpt2"], default="tiny",
                    help="the world to sweep (gpt2: the reduced sweep of FRONTIER_SIZES['gpt2'], on a GPU)")
    args = ap.parse_args()
    from helpers.profiles import set_hub_offline

    if args.profile == "tiny":
        set_hub_offline()
    s = settings(args.quick, args.profile)
    s["quick"] = args.quick
    s["sft_steps"] = args.sft_steps
    if args.one:
        result = run_one(args.one[0], float(args.one[1]), s)
        print("RESULT " + json.dumps(result))
        return
    out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "frontier_quick.json" if args.quick
                                           else default_out(args.profile))
    try:
        out = output_file(out)  # a folder or an unwritable place is refused now, not after the work
    except ValueError as err:
        ap.error(str(err))
    previous = json.loads(out.read_text()) if out.exists() else {}
    if previous.get("world_fingerprint") != world_fingerprint(sweep_world(s)):
        previous = {}  # results of another world are never merged into this one's
    t_start = time.perf_counter()
    world, tok, sft, *_ = world_parts(s)
    t0 = time.perf_counter()
    _, rm_info = get_reward_model(world, s)  # train once, before the subprocesses load it
    rm_info = dict(rm_info, total_s=time.perf_counter() - t0)
    only = set(args.only) if args.only else set(METHOD_NAMES)
    runs = [r for r in previous.get("runs", []) if r["method"] not in only]
    jobs = [("PPO", b) for b in s["ppo_betas"]] + [("PPO-GT", b) for b in s["ppo_gt_betas"]] + \
           [("RLOO", b) for b in s["rloo_betas"]] + [("DPO", b) for b in s["dpo_betas"]] + \
           [("DPO-lr1e-4", b) for b in s.get("dpo_lr1e-4_betas", [])]
    # each finished run is kept in a folder, so an interrupted sweep resumes where it stopped
    # keyed by the world and the settings: a sweep of another world or other sizes never reuses them
    world_fp = world_fingerprint(world)
    done_dir = cache_dir() / "frontier_runs" / f"world-{world_fp}-settings-{fingerprint(s)}"

    def run_spec(method: str, beta: float) -> dict:
        return {"artifact": "frontier run", "method": method, "beta": beta, "world": world_fp, "settings": s}

    def run_path(method: str, beta: float) -> Path:
        return artifact_path(done_dir, f"{method}_{beta:g}", run_spec(method, beta))
    todo = [(m, b) for m, b in jobs if m in only]
    pending, procs = list(todo), {}
    while pending or procs:
        while pending and len(procs) < args.jobs:
            method, beta = pending.pop(0)
            if is_built(run_path(method, beta), run_spec(method, beta)):
                continue
            cmd = [sys.executable, __file__, "--one", method, str(beta), "--profile", args.profile] + \
                (["--quick"] if args.quick else []) + \
                (["--sft-steps", str(args.sft_steps)] if args.sft_steps else [])
            procs[(method, beta)] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                                     time.perf_counter())
        for key, (proc, t) in list(procs.items()):
            if proc.poll() is None:
                continue
            stdout, stderr = proc.communicate()
            del procs[key]
            line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                print(stdout[-3000:], stderr[-3000:])
                raise SystemExit(f"{key} failed")
            text = line[0][len("RESULT "):]
            build_artifact(run_path(*key), run_spec(*key), lambda tmp, text=text: (tmp / "result.json").write_text(text))
            r = json.loads(line[0][len("RESULT "):])
            print(f"{key[0]:7s} beta={key[1]:<5} reward {r['reward_mean']:.3f}+-{r['reward_se']:.3f} "
                  f"KL {r['kl_mean']:.2f}+-{r['kl_se']:.2f}  train {r['wall_s']:.0f}s  ({time.perf_counter() - t:.0f}s)",
                  flush=True)
        time.sleep(1)
    runs += [json.loads((run_path(m, b) / "result.json").read_text()) for m, b in todo]
    if "BoN" in only or "bon" not in previous:
        bon, sft_row = run_bon_and_sft(s)
    else:
        bon, sft_row = previous["bon"], previous["sft"]
    optimum = run_optimum(s) if ("BoN" in only or "optimum" not in previous) else previous["optimum"]
    result = {
        "world_fingerprint": world_fp,
        "meta": {"settings": s, "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "cpu_count": os.cpu_count(), "jobs": args.jobs, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "total_s": time.perf_counter() - t_start},
        "reward_model": rm_info, "sft": sft_row, "runs": runs, "bon": bon, "optimum": optimum,
        "lines_of_code": lines_of_code(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
