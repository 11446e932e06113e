"""Memory and time of the `gpt2` profile on a Colab T4 (and an L4 / A100), computed, not guessed.

    python benchmarks/t4_budget.py            # memory at the real GPT-2 124M shape (random weights), then time
    python benchmarks/t4_budget.py --quick    # a small shape and no memory children (CI)

**Memory.** Each training step the `gpt2` profile runs -- SFT, DPO (reference held / precomputed),
the reward model, PPO -- and the evaluation's scoring pass, once, at the real shape (`GPT2Config()`,
124 M parameters, random weights) and the real batch (``helpers.profiles``), in a fresh process on
the CPU: the peak resident memory the step added over the process before the models were built.
float32 on the CPU is float32 on a T4 (the profile's precision there, ``helpers.config``), so the
tensors are the same bytes; a GPU adds its CUDA context (~0.3-0.5 GB) and allocator slack.

**Time.** FLOPs per notebook from the same shapes and the profile's sizes (every training step,
scoring pass and sampled token of the notebook's main cells, counted from ``helpers.profiles``), at
a stated fraction of each GPU's peak: ``TRAIN_EFF`` of peak for training and scoring (dense,
batched matmuls) and, for sampling, one decode step of a batch costs max(its FLOPs at
``TRAIN_EFF``, reading the weights once at the memory bandwidth) + ``STEP_OVERHEAD_S`` (the Python
and kernel-launch cost of one ``generate`` step on a 12-layer model). These are assumptions, stated
here and printed with the table; the GPU check (``benchmarks/gpu_check.py``) measures the real step
times when a GPU is at hand.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from common import machine_info, md_table, peak_rss_mib  # noqa: E402
from memory import current_rss_mib  # noqa: E402

from helpers import profiles as P  # noqa: E402

# peak dense TFLOPS in the precision the profile uses there (helpers.config: bf16 only where native),
# memory bandwidth (GB/s), usable memory (GiB). Vendor data sheets.
GPUS = {
    "T4": dict(tflops=8.1, precision="float32", bandwidth=320, memory_gib=15.0),
    "L4": dict(tflops=121.0, precision="bf16", bandwidth=300, memory_gib=22.0),
    "A100 40GB": dict(tflops=312.0, precision="bf16", bandwidth=1555, memory_gib=39.4),
}
# not used by the course (see notebook 06, "Mixed precision"): what fp16 autocast would give a T4
T4_FP16 = dict(tflops=65.0, precision="fp16 (not used)", bandwidth=320, memory_gib=15.0)
BUDGET_JSON = Path(__file__).resolve().parents[1] / "data" / "t4_budget.json"
TRAIN_EFF = 0.40  # achieved fraction of peak for training/scoring matmuls (our CPU loop: 73% of its matmul peak)
STEP_OVERHEAD_S = 0.015  # one generate() decode step of GPT-2 small, launch + Python overhead
GEN_BATCH = 256  # helpers.evaluate.sample_policy's rows per generate call


# ----------------------------------------------------------------------------------------------
# FLOPs of the shapes


def model_shape(quick: bool = False) -> dict:
    if quick:
        return dict(n_layer=2, d=64, vocab=50_257, params=3.4e6)
    return dict(n_layer=12, d=768, vocab=50_257, params=124.4e6)


def forward_flops_per_token(shape: dict, context: int) -> float:
    """2 x (matmul weights) + attention (QK^T and AV: 4 x n_layer x context x d), per token."""
    n_layer, d, vocab = shape["n_layer"], shape["d"], shape["vocab"]
    matmul = 12 * n_layer * d * d + vocab * d  # attention + MLP projections, and the LM head
    return 2 * matmul + 4 * n_layer * context * d


def budget(profile: str = "gpt2", quick: bool = False) -> dict[str, dict[str, float]]:
    """Per notebook: ``train`` (FLOPs of forward+backward), ``score`` (forward-only FLOPs),
    ``decode_steps`` and ``decode_flops`` (sampling), from the profile's full sizes."""
    w, d = P.WORLD_SIZES[profile], P.DPO_SIZES[profile]
    pairs, rl, fr = P.PAIRS_SIZES[profile], P.RLHF_SIZES[profile], P.FRONTIER_SIZES[profile]
    demo, ev = P.SFT_DEMO_SIZES[profile], P.SFT_EVAL_SIZES[profile]
    shape = model_shape(quick)
    gen_len, prompt_len = w["max_new_tokens"], sum(w["prompt_tokens"]) / 2
    seq = prompt_len + gen_len
    fwd = forward_flops_per_token(shape, seq)
    fwd_sft = forward_flops_per_token(shape, w["sft_max_length"])
    n_pairs = pairs["n_pair_prompts"] * math.comb(pairs["k"], 2)  # at most k(k-1)/2 per prompt (ties dropped)
    n_train_pairs = 0.9 * n_pairs

    def sampling(n_rows: int, models_scoring: int = 2) -> dict:
        """n_rows responses sampled (decode) and scored under ``models_scoring`` models (KL)."""
        batches = math.ceil(n_rows / GEN_BATCH)
        return {"decode_steps": batches * gen_len, "decode_flops": n_rows * gen_len * fwd,
                "score": models_scoring * n_rows * seq * fwd}

    def dpo_run(steps: int, n_evals: int, eval_rows: int) -> dict:
        per_step = d["batch_size"] * d["gradient_accumulation_steps"] * 2 * d["max_length"] * 0.6  # ~60% non-pad
        out = {"train": 3 * steps * per_step * fwd, "score": n_train_pairs * 2 * seq * fwd}  # + reference pass
        s = sampling(n_evals * eval_rows)
        return add(out, s)

    def add(*parts: dict) -> dict:
        total: dict[str, float] = {}
        for part in parts:
            for k, v in part.items():
                total[k] = total.get(k, 0.0) + v
        return total

    sft = {"train": 3 * w["sft_steps"] * w["sft_batch_size"] * w["sft_max_length"] * fwd_sft,
           "score": 2 * ev["n_eval_texts"] * w["sft_max_length"] * fwd_sft}
    pair_build = add(sampling(pairs["n_pair_prompts"] * pairs["k"], models_scoring=0))
    rebuild = add(sft, pair_build)  # what a fresh runtime repeats before 05-08's own work (04: SFT only)
    n06 = add(dpo_run(d["max_steps"], d["max_steps"] // d["eval_every"] + 1, d["n_eval_prompts"] * d["samples_per_prompt"]),
              sampling(d["n_final_prompts"] * d["samples_per_prompt"] * 2),  # SFT and DPO, final evaluation
              sampling(d["n_final_prompts"] * d["optimum_samples"], models_scoring=1))  # the optimum pi*
    sweep = add(*[dpo_run(d["sweep_steps"], 1, d["n_eval_prompts"] * d["samples_per_prompt"])
                  for _ in d["sweep_betas"]])
    n07 = add(dpo_run(d["max_steps"], 1, d["n_eval_prompts"] * d["samples_per_prompt"]), sweep,  # 06's run again
              sampling(d["n_eval_prompts"] * max(d["bon_ns"]), models_scoring=1))  # best-of-N
    rm = rl["reward_model"]
    rm_train = {"train": 3 * rm["steps"] * rm["batch_size"] * 2 * 64 * fwd}
    ppo = rl["ppo"]

    def rl_run(iters: int, batch: int, epochs: int) -> dict:
        s = sampling(iters * batch, models_scoring=3)  # policy (old log-probs), reference, reward model
        return add(s, {"train": 3 * iters * epochs * batch * seq * fwd})

    frontier = add(*[rl_run(fr["rl_steps"], fr["rl"]["batch_size"], fr["rl"]["ppo_epochs"])
                     for _ in fr["ppo_betas"] + fr["rloo_betas"] + fr["ppo_gt_betas"]],
                   *[dpo_run(fr["dpo"]["max_steps"], 0, 0) for _ in fr["dpo_betas"]],
                   sampling(fr["n_eval_prompts"] * fr["eval_samples"] * (1 + len(fr["ppo_betas"] + fr["rloo_betas"] + fr["ppo_gt_betas"] + fr["dpo_betas"]))),
                   sampling(fr["n_eval_prompts"] * (max(fr["bon_ns"]) + fr["optimum_samples"]), models_scoring=1))
    n08 = add(rm_train, rl_run(rl["steps"], ppo["batch_size"], ppo["ppo_epochs"]),
              rl_run(rl["steps"], rl["rloo"]["batch_size"] * rl["rloo"]["rloo_k"], rl["rloo"]["rloo_epochs"]),
              sampling(rl["n_check_prompts"] * rl["check_samples"] * 3), rm_train, frontier)  # the sweep's own RM
    n05 = add({"train": 3 * demo["demo_steps"] * demo["demo_batch_size"] * w["sft_max_length"] * fwd_sft},
              sampling(demo["n_prompts"] * demo["samples_per_prompt"] * 2, models_scoring=0))
    return {"SFT build (every fresh runtime of 04-08)": sft, "pairs build (fresh runtime of 05-08)": pair_build,
            "04": {"score": 64 * seq * fwd}, "05": n05, "06": n06, "07": n07, "08": n08, "_rebuild": rebuild}


def minutes(work: dict, gpu: dict) -> float:
    flops = gpu["tflops"] * 1e12 * TRAIN_EFF
    bytes_weights = 124.4e6 * (4 if gpu["precision"] == "float32" else 2)
    compute = (work.get("train", 0) + work.get("score", 0)) / flops
    steps = work.get("decode_steps", 0)
    decode = 0.0
    if steps:
        per_step_flops = work["decode_flops"] / steps
        decode = steps * (max(per_step_flops / flops, bytes_weights / (gpu["bandwidth"] * 1e9)) + STEP_OVERHEAD_S)
    return (compute + decode) / 60


def time_table(quick: bool, write_json: bool = False) -> str:
    b = budget("gpt2", quick)
    rebuild = b.pop("_rebuild")
    gpus = dict(GPUS, **{"T4 fp16": T4_FP16})
    rows, per_gpu = [], {g: {} for g in gpus}
    for name, work in b.items():
        tflop = (work.get("train", 0) + work.get("score", 0) + work.get("decode_flops", 0)) / 1e12
        for g, spec in gpus.items():
            per_gpu[g][name] = minutes(work, spec)
        rows.append([name, f"{tflop:,.0f}"] + [f"{per_gpu[g][name]:.1f}" for g in gpus])
    sft_name = "SFT build (every fresh runtime of 04-08)"
    for g, spec in gpus.items():
        own = sum(per_gpu[g][nb] for nb in ("04", "05", "06", "07", "08"))
        # fresh runtimes: 04 builds the SFT model, 05 SFT + pairs, 06-08 both again
        per_gpu[g]["series, fresh runtimes"] = own + per_gpu[g][sft_name] + 4 * minutes(rebuild, spec)
        # the SFT model and pairs built once, then loaded (helpers.world.restore_saved_world)
        per_gpu[g]["series, saved SFT + pairs"] = own + minutes(rebuild, spec)
    rows.append(["04-08, each in a fresh runtime (rebuilds counted)", "-"]
                + [f"**{per_gpu[g]['series, fresh runtimes']:.0f}**" for g in gpus])
    rows.append(["04-08, SFT model + pairs built once and loaded from Drive", "-"]
                + [f"**{per_gpu[g]['series, saved SFT + pairs']:.0f}**" for g in gpus])
    if write_json:
        BUDGET_JSON.write_text(json.dumps({"computed_by": "benchmarks/t4_budget.py", "train_eff": TRAIN_EFF,
                                           "minutes": per_gpu}, indent=1) + "\n")
    header = ["part", "TFLOP"] + [f"{g} min ({s['precision']}, {s['tflops']:g} TFLOPS)" for g, s in gpus.items()]
    return md_table(header, rows)


# ----------------------------------------------------------------------------------------------
# memory: one step each, in a fresh process


def _gpt2(quick: bool, device="cpu"):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=2) if quick else GPT2Config()
    return GPT2LMHeadModel(cfg).to(device)


def build_step(part: str, quick: bool, device="cpu"):
    """The models, optimiser and batch of one ``part`` (see ``PARTS``) at the gpt2 sizes, built on
    ``device``; returns ``step()``, which runs one step of it (``benchmarks/gpu_check.py`` times it)."""
    torch.manual_seed(0)
    w, d, rl = (P.sizes(table, "gpt2") for table in (P.WORLD_SIZES, P.DPO_SIZES, P.RLHF_SIZES))
    gen, prompt = w["max_new_tokens"], 8
    vocab = 50_257

    def ids(b, t):
        return torch.randint(0, vocab - 1, (b, t), device=device)

    if part.startswith("SFT step"):
        from helpers.sft import _token_loss_sum

        model = _gpt2(quick, device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        x = ids(w["sft_batch_size"], w["sft_max_length"])
        batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x}

        def step():
            loss, n = _token_loss_sum(model, batch)
            opt.zero_grad(set_to_none=True)
            (loss / n).backward()
            opt.step()
    elif part.startswith("DPO step"):
        from helpers.logprobs import concatenated_forward

        policy = _gpt2(quick, device).train()
        ref = _gpt2(quick, device).eval() if "held" in part else None
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
        b, t = d["batch_size"], d["max_length"]
        x = ids(2 * b, t)
        labels = x.clone()
        labels[:, :prompt] = -100
        batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": labels}
        zeros = torch.zeros(b, device=device)

        def step():
            if ref is not None:
                with torch.no_grad():
                    ref_c, ref_r = concatenated_forward(ref, batch)
            else:
                ref_c = ref_r = zeros  # precomputed once before training
            pc, pr = concatenated_forward(policy, batch)
            loss = -torch.nn.functional.logsigmoid(0.1 * ((pc - ref_c) - (pr - ref_r))).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    elif part.startswith("reward model step"):
        from helpers.reward_model import RewardModel

        model = RewardModel(_gpt2(quick, device).transformer).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        x = ids(2 * rl["reward_model"]["batch_size"], 64)

        def step():
            s = model(x, torch.ones_like(x))
            loss = -torch.nn.functional.logsigmoid(s[0::2] - s[1::2]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    elif part.startswith("PPO iteration"):
        from helpers import rlhf
        from helpers.reward_model import RewardModel

        policy, ref = _gpt2(quick, device), _gpt2(quick, device)
        rm = RewardModel(_gpt2(quick, device).transformer).eval()

        def score_fn(prompts_ids, responses_ids):
            from helpers.data import pad_rows

            x, mask = pad_rows([p + r for p, r in zip(prompts_ids, responses_ids)], vocab - 1)  # (B, T) each
            with torch.no_grad():
                return rm(x.to(device), mask.to(device)).tolist()

        ppo = rl["ppo"]
        cfg = rlhf.RLHFConfig(beta=ppo["beta"], lr=ppo["lr"], batch_size=ppo["batch_size"],
                              mini_batch_size=ppo["mini_batch_size"], ppo_epochs=1, max_new_tokens=gen)
        prompts = [ids(1, prompt)[0].tolist() for _ in range(ppo["batch_size"])]

        def step():
            rlhf.train_rlhf("ppo", policy, ref, prompts, score_fn, cfg, 1, vocab - 1, vocab - 1, progress=False)
    elif part.startswith("evaluation scoring"):
        from helpers.evaluate import score_responses

        model = _gpt2(quick, device).eval()
        prompts = [ids(1, prompt)[0].tolist() for _ in range(GEN_BATCH)]
        responses = [ids(1, gen)[0].tolist() for _ in range(GEN_BATCH)]

        def step():
            score_responses(model, prompts, responses, vocab - 1, batch_size=GEN_BATCH)
    else:
        raise ValueError(part)
    return step


def child(part: str, quick: bool) -> dict:
    baseline = current_rss_mib()
    build_step(part, quick)()
    return {"part": part, "peak_mib": peak_rss_mib(), "baseline_mib": baseline}


PARTS = ["SFT step (32 x 128)", "DPO step, reference precomputed (8 pairs x 96)", "DPO step, reference held (8 pairs x 96)",
         "reward model step (32 pairs x 64)", "PPO iteration (16 rollouts, minibatch 8)", "evaluation scoring (256 x 56)"]


def memory_table(quick: bool) -> str:
    rows = []
    for part in PARTS:
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--child", part] + (["--quick"] if quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not line:
            raise RuntimeError(f"{part} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(line[-1])
        grew = (r["peak_mib"] - r["baseline_mib"]) / 1024
        rows.append([part, f"{grew:.2f}", "yes" if grew + 0.5 < GPUS["T4"]["memory_gib"] else "**no**",
                     f"{time.perf_counter() - t0:.0f}"])
    return md_table(["one step at the gpt2 shape", "GiB added (CPU, float32)", "fits a T4 (15 GiB usable, +0.5 context)",
                     "CPU s"], rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shape, memory children skipped (CI)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-memory", action="store_true", help="the time table only")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.quick)))
        return
    print(f"# gpt2 profile on a T4 / L4 / A100, computed\n\n{machine_info(torch.device('cpu'))}\n")
    if not args.no_memory:
        print("## Peak memory of one step (measured on this CPU, real shape, random weights)\n")
        print(memory_table(args.quick), "\n")
    print(f"## Time per notebook (FLOPs from the sizes; {TRAIN_EFF:.0%} of peak for training and scoring; "
          f"a decode step = max(FLOPs, weights / bandwidth) + {STEP_OVERHEAD_S * 1e3:.0f} ms)\n")
    print(time_table(args.quick, write_json=not args.quick))


if __name__ == "__main__":
    main()
