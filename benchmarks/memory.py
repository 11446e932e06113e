"""Peak memory of DPO training: reference model held in memory vs reference log-probs precomputed.

    python benchmarks/memory.py                  # GPT-2 124M shape (random GPT2Config()), ours and TRL
    python benchmarks/memory.py --shape tiny     # the tiny-profile shape
    python benchmarks/memory.py --quick          # smoke run (CI)

Each configuration runs in a fresh Python process (peak RSS never goes down, so two configurations
in one process would measure the larger one twice). The child builds the model and pairs, trains
``--steps`` steps, and reports:

* CPU: peak resident set size (``ru_maxrss``) and the RSS before the first model was built (the
  Python + torch + data baseline); their difference is what training itself took.
* CUDA: ``torch.cuda.max_memory_allocated`` over the whole run (the baseline is ~0 there).

Ours runs ``helpers.train.train_dpo`` exactly as a notebook would: held = the reference model is a
second copy, frozen, run every step; precomputed = ``precompute_ref_logps=True`` with the reference
given as a loader, so it exists only while its log-probs are computed and is freed before training.
TRL: ``ref_model=copy.deepcopy(model)`` held, ``precompute_ref_log_probs=True`` with no reference
model (TRL scores the pairs with the policy before its first update).

The weights are random (``GPT2Config()``): the shapes, not the weights, set the memory.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch  # noqa: E402
from common import (
    apply_threads,
    base_parser,
    command_line,
    fits_without_truncation,
    load_pairs,
    machine_info,
    md_table,
    peak_rss_mib,
    quick_world,
    resolve_device,
    trl_missing_reason,
)

MIB = 2**20


def current_rss_mib() -> float:
    """Resident set size now (Linux /proc), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def model_config(shape: str, vocab_size: int, n_positions: int):
    from transformers import GPT2Config

    if shape == "gpt2":  # GPT-2 small: 12 layers x 768, 50,257 tokens, 1,024 positions (124 M parameters)
        return GPT2Config()
    sizes = {"tiny": dict(n_layer=4, n_embd=128, n_head=4), "quick": dict(n_layer=2, n_embd=32, n_head=2)}[shape]
    return GPT2Config(vocab_size=vocab_size, n_positions=n_positions, **sizes)


def child(args) -> dict:
    """One configuration, in this (fresh) process: train, then report the peaks as a dict."""
    from transformers import GPT2LMHeadModel

    from helpers.world import load_tokenizer, tiny_world

    device = resolve_device(args.device)
    tmp = tempfile.mkdtemp()
    world = quick_world(Path(tmp) / "world") if args.shape == "quick" else tiny_world()
    tokenizer = load_tokenizer(world)
    n = args.batch_size * args.steps
    records, _ = load_pairs(world, tokenizer, 4 * n, seed=args.seed)
    records = fits_without_truncation(records, tokenizer, args.max_length, args.max_prompt_length)[:n]
    config = model_config(args.shape, len(tokenizer), world.n_positions)

    def build_model():
        torch.manual_seed(args.seed)  # the reference = the policy's starting point, as pi_ref = pi_SFT
        return GPT2LMHeadModel(config).to(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline = current_rss_mib()
    policy = build_model()
    n_params = sum(p.numel() for p in policy.parameters())
    t0 = time.perf_counter()
    if args.loop == "ours":
        from helpers.train import DPOConfig, train_dpo

        cfg = DPOConfig(batch_size=args.batch_size, max_steps=args.steps, max_length=args.max_length,
                        max_prompt_length=args.max_prompt_length, lr=1e-4, beta=0.1,
                        precompute_ref_logps=args.mode == "precomputed", ref_batch_size=args.batch_size)
        train_dpo(policy, build_model, tokenizer, records, cfg, progress=False)
    else:
        import datasets
        from transformers import PrinterCallback
        from trl import DPOConfig as TRLConfig
        from trl import DPOTrainer

        precompute = args.mode == "precomputed"
        cfg = TRLConfig(output_dir=str(Path(tmp) / "trl"), report_to="none", bf16=False, fp16=False,
                        use_cpu=device.type == "cpu", per_device_train_batch_size=args.batch_size,
                        max_steps=args.steps, learning_rate=1e-4, beta=0.1, max_length=args.max_length,
                        optim="adamw_torch", lr_scheduler_type="constant", weight_decay=0.0,
                        activation_checkpointing=False, train_sampling_strategy="sequential",
                        precompute_ref_log_probs=precompute, precompute_ref_batch_size=args.batch_size,
                        save_strategy="no", disable_tqdm=True)
        ref = None if precompute else copy.deepcopy(policy)
        trainer = DPOTrainer(model=policy, ref_model=ref, args=cfg, processing_class=tokenizer,
                             train_dataset=datasets.Dataset.from_list(records))
        del ref
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    seconds = time.perf_counter() - t0
    out = {"loop": args.loop, "mode": args.mode, "shape": args.shape, "params": n_params,
           "baseline_mib": baseline, "peak_rss_mib": peak_rss_mib(), "seconds": seconds, "pairs": len(records),
           "device": str(device)}
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return out


def run_child(args, loop: str, mode: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--loop", loop, "--mode", mode,
           "--shape", args.shape, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--max-prompt-length", str(args.max_prompt_length),
           "--seed", str(args.seed)]
    if args.device:
        cmd += ["--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{loop}/{mode} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def report(results: list[dict], args, device: torch.device, notes: list[str]) -> str:
    n_params = results[0]["params"]
    param_mib = 4 * n_params / MIB  # float32
    cuda = "cuda_peak_mib" in results[0]
    out = ["## Peak memory: reference held vs precomputed", "", f"Command: `{command_line()}`", "",
           f"Machine: {machine_info(device)}", ""]
    out += [f"- {n}" for n in notes]
    out += [f"- shape `{args.shape}`: {n_params / 1e6:.1f} M parameters (float32: {param_mib:.0f} MiB per copy "
            f"of the weights); batch {args.batch_size} pairs, {args.steps} steps, max length {args.max_length}; "
            f"each row a fresh process", ""]
    rows, by = [], {}
    for r in results:
        key = "cuda_peak_mib" if cuda else "peak_rss_mib"
        used = r[key] if cuda else r["peak_rss_mib"] - r["baseline_mib"]
        by[(r["loop"], r["mode"])] = (r[key], used)
        row = [r["loop"], r["mode"]]
        row += ([f"{r['cuda_peak_mib']:.0f}"] if cuda else
                [f"{r['peak_rss_mib']:.0f}", f"{r['baseline_mib']:.0f}", f"{used:.0f}"])
        row += [f"{used / param_mib:.2f}", f"{r['seconds']:.2f}"]
        rows.append(row)
    headers = (["loop", "reference", "max_memory_allocated MiB"] if cuda else
               ["loop", "reference", "peak RSS MiB", "baseline MiB", "training MiB (peak - baseline)"])
    headers += ["training / one weight copy", "run s"]
    out.append(md_table(headers, rows))
    out.append("")
    ratio_rows = []
    for loop in ("ours", "trl"):
        if (loop, "held") in by and (loop, "precomputed") in by:
            (ph, uh), (pp, up) = by[(loop, "held")], by[(loop, "precomputed")]
            ratio_rows.append([loop, f"{pp / ph:.2f}", f"{up / uh:.2f}" if not cuda else "-"])
    if ratio_rows:
        out.append(md_table(["loop", "precomputed / held (peak)", "precomputed / held (training memory)"],
                            ratio_rows))
        out.append("")
    out += ["Floor for full fine-tuning with AdamW in float32: policy weights + gradients + two Adam moments = "
            "4 copies of the weights, and the held reference adds a 5th; so precomputed / held >= 4/5 = 0.80 "
            "before activations, whatever the loop.", ""]
    return "\n".join(out)


def main(argv=None) -> None:
    parser = base_parser(__doc__, default_steps=2)
    parser.add_argument("--shape", choices=["gpt2", "tiny", "quick"], default="gpt2")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--max-prompt-length", type=int, default=16)
    parser.add_argument("--loops", nargs="+", default=["ours", "trl"], choices=["ours", "trl"])
    parser.add_argument("--child", action="store_true", help=argparse_suppress())
    parser.add_argument("--loop", choices=["ours", "trl"], help=argparse_suppress())
    parser.add_argument("--mode", choices=["held", "precomputed"], help=argparse_suppress())
    args = parser.parse_args(argv)
    apply_threads(args)
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.shape, args.steps, args.batch_size = "quick", 2, 2
    notes = []
    reason = trl_missing_reason()
    if reason and "trl" in args.loops:
        notes.append(f"TRL rows skipped: {reason}")
        args.loops = [x for x in args.loops if x != "trl"]
    device = resolve_device(args.device)
    results = [run_child(args, loop, mode) for loop in args.loops for mode in ("held", "precomputed")]
    print(report(results, args, device, notes))


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
