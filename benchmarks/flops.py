"""FLOP efficiency of our DPO step: achieved FLOP/s over the matmul peak of the same device, same run.

    python benchmarks/flops.py                   # tiny shape and GPT-2 124M shape
    python benchmarks/flops.py --shapes gpt2 --steps 5
    python benchmarks/flops.py --quick           # smoke run (CI)

FLOPs of one DPO step (the usual 6N rule, N = parameters that do matmul work per token: all but the
position embeddings; GPT-2 ties the token embedding to the LM head, which is a matmul and is counted
once; attention-score FLOPs, ~T/(6 d) of the rest, are left out):

    policy forward + backward on chosen and rejected rows:  6 * N * tokens
    reference forward (held reference only):              + 2 * N * tokens
    tokens = 2 * batch pairs * sequence length (the batches here have no padding)

Peak: the best FLOP/s of ``torch.matmul`` on square matrices in the training dtype (float32 on CPU;
bf16 on CUDA, where ``helpers.config.autocast`` trains in bf16), measured before, between and after
the timed steps; the highest is used (on a shared CPU a single measurement can catch a busy moment).

The step is ``helpers.train.dpo_train_step`` (forward, DPO loss, backward, grad clip, AdamW) on
batches made by ``helpers.train.collate_batch`` from random token ids.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch  # noqa: E402
from common import apply_threads, base_parser, command_line, machine_info, md_table, resolve_device, spread

from helpers.config import autocast_dtype  # noqa: E402
from helpers.train import (  # noqa: E402
    DPOConfig,
    build_optimizer,
    collate_batch,
    compute_ref_logps,
    disable_dropout,
    dpo_train_step,
    freeze_reference,
)

SHAPES = {
    # name: (GPT2Config overrides, batch pairs, sequence length, prompt length)
    "tiny": (dict(vocab_size=2000, n_positions=64, n_layer=4, n_embd=128, n_head=4), 16, 64, 8),
    "gpt2": ({}, 4, 64, 8),  # GPT2Config() defaults: 12 x 768, 50,257 tokens (124 M)
    "quick": (dict(vocab_size=300, n_positions=32, n_layer=2, n_embd=32, n_head=2), 2, 16, 4),
}


def matmul_peak(device: torch.device, n: int, reps: int = 5) -> float:
    """Best FLOP/s of an n x n @ n x n matmul (2 n^3 FLOPs) in the training dtype."""
    dtype = autocast_dtype(device) or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    best = 0.0
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_params(model) -> int:
    """Parameters doing matmul work per token: all but the position embeddings (tied LM head counted once)."""
    n = sum(p.numel() for p in model.parameters())
    wpe = model.transformer.wpe.weight.numel()
    return n - wpe


def random_examples(n_pairs: int, seq_len: int, prompt_len: int, vocab: int, seed: int) -> list[dict]:
    """Tokenized pairs (``helpers.data`` layout) of random ids, all ``seq_len`` long: no padding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_pairs):
        prompt = torch.randint(2, vocab, (prompt_len,), generator=g).tolist()
        ex = {"prompt_input_ids": prompt}
        for name in ("chosen", "rejected"):
            response = torch.randint(2, vocab, (seq_len - prompt_len,), generator=g).tolist()
            ex[f"{name}_input_ids"] = prompt + response
            ex[f"{name}_labels"] = [-100] * prompt_len + response
        out.append(ex)
    return out


def measure_shape(shape: str, args, device: torch.device, peaks: list[float], peak_size: int) -> list[dict]:
    from transformers import GPT2Config, GPT2LMHeadModel

    overrides, batch, seq_len, prompt_len = SHAPES[shape]
    if args.batch_size:
        batch = args.batch_size
    torch.manual_seed(args.seed)
    config = GPT2Config(**overrides)
    if shape == "tiny":  # the tiny profile's own model config when it is built (its vocabulary may be < 2000)
        from helpers.world import tiny_world

        built = Path(tiny_world().base_model) / "config.json"
        if built.exists():
            config = GPT2Config.from_pretrained(built.parent)
    start = GPT2LMHeadModel(config)
    n = matmul_params(start)
    tokens = 2 * batch * seq_len
    examples = random_examples(batch * args.steps, seq_len, prompt_len, config.vocab_size, args.seed)
    cfg = DPOConfig(batch_size=batch, lr=1e-4, beta=0.1, max_length=seq_len, max_prompt_length=prompt_len)
    rows = []
    for mode in ("held", "precomputed"):
        peaks.append(matmul_peak(device, peak_size))  # again between measurements: the CPU may be shared
        policy = disable_dropout(GPT2LMHeadModel(config).to(device))
        policy.load_state_dict(start.state_dict())
        ref = freeze_reference(GPT2LMHeadModel(config).to(device))
        ref.load_state_dict(start.state_dict())
        if mode == "precomputed":
            chosen, rejected = compute_ref_logps(ref, examples, pad_token_id=0, batch_size=batch)
            for ex, c, r in zip(examples, chosen.tolist(), rejected.tolist()):
                ex["ref_chosen_logps"], ex["ref_rejected_logps"] = c, r
            ref = None
        else:
            for ex in examples:
                ex.pop("ref_chosen_logps", None)
                ex.pop("ref_rejected_logps", None)
        optimizer, scheduler = build_optimizer(policy, cfg)
        batches = [collate_batch(examples[k * batch:(k + 1) * batch], pad_token_id=0) for k in range(args.steps)]
        dpo_train_step(policy, [batches[0]], optimizer, scheduler, cfg, ref)  # warm-up (allocations, Adam state)
        times = []
        for b in batches:
            sync(device)
            t0 = time.perf_counter()
            dpo_train_step(policy, [b], optimizer, scheduler, cfg, ref)
            sync(device)
            times.append(time.perf_counter() - t0)
            print(f"[{shape} {mode}] step {len(times)}: {times[-1]:.3f} s", file=sys.stderr, flush=True)
        flops = (6 + (2 if mode == "held" else 0)) * n * tokens
        rows.append({"shape": shape, "mode": mode, "n": n, "batch": batch, "seq_len": seq_len, "tokens": tokens,
                     "flops": flops, "times": times})
        del policy, ref, optimizer
    return rows


def main(argv=None) -> None:
    parser = base_parser(__doc__, default_steps=5)
    parser.add_argument("--shapes", nargs="+", default=["tiny", "gpt2"], choices=["tiny", "gpt2"])
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: per shape)")
    parser.add_argument("--matmul-size", type=int, default=None, help="n of the n x n peak matmul")
    args = parser.parse_args(argv)
    apply_threads(args)
    if args.quick:
        args.shapes, args.steps = ["quick"], 2
    device = resolve_device(args.device)
    size = args.matmul_size or (256 if args.quick else 8192 if device.type == "cuda" else 2048)
    peaks = [matmul_peak(device, size)]
    rows = []
    for shape in args.shapes:
        rows += measure_shape(shape, args, device, peaks, size)
    peaks.append(matmul_peak(device, size))
    peak = max(peaks)
    dtype = autocast_dtype(device) or torch.float32
    table = []
    for r in rows:
        achieved = [r["flops"] / t for t in r["times"]]
        table.append([r["shape"], f"{r['n'] / 1e6:.2f} M", r["mode"], f"{r['batch']} x 2 x {r['seq_len']}",
                      f"{r['flops'] / 1e9:.3g}", spread([1000 * t for t in r["times"]], "{:.0f}"),
                      spread([a / 1e9 for a in achieved], "{:.3g}"),
                      spread([100 * a / peak for a in achieved], "{:.3g}%")])
    print("\n".join([
        "## FLOP efficiency of our DPO step", "", f"Command: `{command_line()}`", "",
        f"Machine: {machine_info(device)}", "",
        f"Matmul peak ({size} x {size}, {str(dtype).replace('torch.', '')}), measured {len(peaks)} times "
        f"(before, between and after the timed steps): {' / '.join(f'{p / 1e9:.1f}' for p in peaks)} GFLOP/s; "
        f"the highest, {peak / 1e9:.1f}, is the peak.", "",
        md_table(["shape", "N (matmul params)", "reference", "batch (pairs x 2 x T)", "GFLOP/step",
                  "ms/step", "achieved GFLOP/s", "of matmul peak"], table), "",
        "FLOP/step = 6 N tokens (policy forward + backward) + 2 N tokens (reference forward, held only); "
        f"median (min-max) over {args.steps} steps after one warm-up step.",
    ]))


if __name__ == "__main__":
    main()
