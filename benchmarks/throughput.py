"""DPO training throughput: our step (the helpers the notebooks use) vs TRL's DPOTrainer, side by side.

    python benchmarks/throughput.py                      # tiny profile, CPU or whatever get_device() picks
    python benchmarks/throughput.py --rounds 8 --steps 30
    python benchmarks/throughput.py --profile            # + where each side's time goes (torch.profiler)
    python benchmarks/throughput.py --quick              # smoke run (CI)

Both sides get the same model (two deep copies of the tiny-profile SFT model), the same preference
pairs in the same order (TRL: ``train_sampling_strategy="sequential"``), the same batch size,
max length, beta, optimiser (``torch.optim.AdamW``, same lr, weight decay 0, grad-norm clip 1.0,
constant lr, no warm-up) and number of steps. Before timing, the script checks that both sides build
identical batches (input ids, attention mask, scored tokens incl. the EOS). Pairs are kept only if
neither side truncates them, so truncation rules cannot differ.

Timing: a warm-up round, then rounds interleaved A B, B A, A B, ... (the order alternates so that
neither side always runs on a cache the other warmed). A round is ``--steps`` optimizer steps from
the first batch; its time is from the end of the first step to the end of the last (steady state:
TRL's per-``train()`` setup and our first-step allocations are left out of both). The ratio
ours/TRL is taken within each round, then summarised as median (min-max) over rounds.

Done twice: the reference model held in memory and run every step, and reference log-probs
precomputed before training (ours: ``helpers.train.compute_ref_logps``; TRL:
``precompute_ref_log_probs=True``); the precompute itself is timed separately.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import torch  # noqa: E402  (common sets the environment first)
from common import (
    apply_threads,
    base_parser,
    command_line,
    fits_without_truncation,
    load_pairs,
    load_policy_start,
    machine_info,
    md_table,
    quick_world,
    resolve_device,
    spread,
    trl_missing_reason,
)

from helpers.data import pad_token_id_of, tokenize_preferences  # noqa: E402
from helpers.train import (  # noqa: E402
    DPOConfig,
    build_optimizer,
    collate_batch,
    compute_ref_logps,
    disable_dropout,
    dpo_train_step,
    freeze_reference,
)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a step's end time is when its kernels are done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# ours


class Ours:
    """Our DPO loop, one round at a time: the step of ``helpers.train`` on batches in record order."""

    def __init__(self, model, tokenizer, records, args, precompute: bool, device):
        self.config = DPOConfig(beta=args.beta, lr=args.lr, weight_decay=0.0, warmup_steps=0, max_grad_norm=1.0,
                                batch_size=args.batch_size, max_length=args.max_length,
                                max_prompt_length=args.max_prompt_length, precompute_ref_logps=precompute,
                                ref_batch_size=args.batch_size)
        self.pad_token_id = pad_token_id_of(tokenizer)
        self.examples = tokenize_preferences(records, tokenizer, args.max_length, args.max_prompt_length)
        self.policy = disable_dropout(copy.deepcopy(model).to(device))
        ref = freeze_reference(copy.deepcopy(model).to(device))
        t0 = time.perf_counter()
        if precompute:
            chosen, rejected = compute_ref_logps(ref, self.examples, self.pad_token_id, batch_size=args.batch_size)
            for ex, c, r in zip(self.examples, chosen.tolist(), rejected.tolist()):
                ex["ref_chosen_logps"], ex["ref_rejected_logps"] = c, r
            self.ref_model = None
            del ref
        else:
            self.ref_model = ref
        self.setup_s = time.perf_counter() - t0
        self.optimizer, self.scheduler = build_optimizer(self.policy, self.config)
        self.batch_size = args.batch_size
        self.step_hook = None  # called with the step number after each step (profiling)
        self.device = device

    def batches(self, steps: int) -> list[dict]:
        b = self.batch_size
        return [collate_batch(self.examples[k * b:(k + 1) * b], self.pad_token_id) for k in range(steps)]

    def run(self, steps: int) -> list[float]:
        """``steps`` optimizer steps from the first batch; the time at the end of each step."""
        ends = []
        b = self.batch_size
        for k in range(steps):
            # Collation is inside the timed loop, as TRL's DataLoader collates inside its loop.
            micro_batch = collate_batch(self.examples[k * b:(k + 1) * b], self.pad_token_id)
            dpo_train_step(self.policy, [micro_batch], self.optimizer, self.scheduler, self.config, self.ref_model)
            sync(self.device)
            ends.append(time.perf_counter())
            if self.step_hook is not None:
                self.step_hook(k + 1)
        return ends


# ----------------------------------------------------------------------------------------------
# TRL


class TRLSide:
    """``trl.DPOTrainer`` configured to do what ``Ours`` does; ``run`` calls ``train()`` once per round."""

    def __init__(self, model, tokenizer, records, args, precompute: bool, device, output_dir: str):
        import datasets
        from transformers import PrinterCallback, TrainerCallback
        from trl import DPOConfig as TRLConfig
        from trl import DPOTrainer

        ends = self.ends = []
        side = self

        class StepEnds(TrainerCallback):
            def on_step_end(self, args_, state, control, **kwargs):
                sync(device)
                ends.append(time.perf_counter())
                if side.step_hook is not None:
                    side.step_hook(len(ends))

        # The same optimiser and schedule as ours: plain torch AdamW (TRL's default on torch >= 2.8
        # is the fused variant), constant lr, no warm-up, weight decay 0, clip at 1.0. TRL's DPOConfig
        # turns gradient (activation) checkpointing on by default: it re-runs the forward in the
        # backward. Ours does not checkpoint, so neither does TRL here -- unless --trl-defaults asks
        # for TRL as it comes (checkpointing on, fused AdamW).
        same_as_ours = {} if args.trl_defaults else dict(optim="adamw_torch", activation_checkpointing=False)
        config = TRLConfig(
            output_dir=output_dir, report_to="none", bf16=False, fp16=False,
            use_cpu=device.type == "cpu",
            per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
            max_steps=args.steps, learning_rate=args.lr, beta=args.beta, loss_type=["sigmoid"],
            max_length=args.max_length,
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
            **same_as_ours,
            train_sampling_strategy="sequential",  # the same batches as ours, in the same order
            precompute_ref_log_probs=precompute, precompute_ref_batch_size=args.batch_size,
            save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=args.seed,
        )
        self.policy = copy.deepcopy(model).to(device)
        # With precomputed log-probs TRL scores the pairs with the policy itself before training
        # (ref_model=None) and keeps no reference; held: a separate in-memory copy (ref_model=None
        # would reload the weights from the model's saved path instead).
        ref = None if precompute else copy.deepcopy(model).to(device)
        t0 = time.perf_counter()
        self.trainer = DPOTrainer(model=self.policy, ref_model=ref, args=config, processing_class=tokenizer,
                                  train_dataset=datasets.Dataset.from_list(records), callbacks=[StepEnds()])
        self.setup_s = time.perf_counter() - t0
        self.trainer.remove_callback(PrinterCallback)  # it prints a dict per train(); the tables say it all
        self.batch_size = args.batch_size
        self.step_hook = None

    def batches(self, steps: int) -> list[dict]:
        ds = self.trainer.train_dataset
        b = self.batch_size
        return [self.trainer.data_collator([ds[i] for i in range(k * b, (k + 1) * b)]) for k in range(steps)]

    def run(self, steps: int) -> list[float]:
        self.ends.clear()
        self.trainer.args.max_steps = steps
        self.trainer.train()
        if len(self.ends) != steps:
            raise RuntimeError(f"TRL ran {len(self.ends)} steps, {steps} asked")
        return list(self.ends)


def check_same_batches(ours: Ours, trl_side: TRLSide, steps: int) -> tuple[int, int]:
    """Assert both sides build identical batches for the timed steps.

    Returns:
        (real tokens, padded tokens) over steps 2..steps (the timed ones), chosen + rejected rows.
    """
    real = padded = 0
    for k, (a, b) in enumerate(zip(ours.batches(steps), trl_side.batches(steps))):
        for name in ("input_ids", "attention_mask"):
            if not torch.equal(a[name], b[name]):
                raise AssertionError(f"batch {k}: our {name} differs from TRL's")
        if not torch.equal(a["labels"] != -100, b["completion_mask"][:, :] == 1):
            raise AssertionError(f"batch {k}: the scored tokens differ (ours: labels != -100, TRL: completion_mask)")
        if k > 0:
            real += int(a["attention_mask"].sum())
            padded += a["input_ids"].numel()
    return real, padded


def token_counts(ours: Ours, steps: int) -> tuple[int, int]:
    real = padded = 0
    for k, batch in enumerate(ours.batches(steps)):
        if k > 0:
            real += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
    return real, padded


# ----------------------------------------------------------------------------------------------
# measuring


def steady_seconds(ends: list[float]) -> float:
    """From the end of the first step to the end of the last."""
    return ends[-1] - ends[0]


def measure(mode: str, model, tokenizer, records, args, device, tmp: str) -> dict:
    precompute = mode == "precomputed"
    ours = Ours(model, tokenizer, records, args, precompute, device)
    trl_side = None if args.no_trl else TRLSide(model, tokenizer, records, args, precompute, device,
                                                output_dir=str(Path(tmp) / f"trl-{mode}"))
    if trl_side is not None:
        real, padded = check_same_batches(ours, trl_side, args.steps)
    else:
        real, padded = token_counts(ours, args.steps)
    pairs = args.batch_size * (args.steps - 1)
    times = {"ours": [], "trl": []}
    sides = {"ours": ours, "trl": trl_side}
    names = ["ours", "trl"] if trl_side is not None else ["ours"]
    for r in range(args.warmup + args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            seconds = steady_seconds(sides[name].run(args.steps))
            if r >= args.warmup:
                times[name].append(seconds)
            print(f"[{mode}] round {r}{' (warm-up)' if r < args.warmup else ''}: {name} "
                  f"{1000 * seconds / (args.steps - 1):.1f} ms/step", file=sys.stderr, flush=True)
    result = {"mode": mode, "pairs": pairs, "real_tokens": real, "padded_tokens": padded, "times": times,
              "setup": {"ours": ours.setup_s, "trl": trl_side.setup_s if trl_side else None}}
    if args.profile:
        result["profile"] = {name: profile_side(sides[name], args.steps) for name in names}
    del ours, trl_side
    return result


def profile_side(side, steps: int, top: int = 10) -> dict:
    """Where one round's time goes: a phase table (cProfile) and the top ops (torch.profiler).

    Phases, as ms per step (cumulative time of the function that does each, over the round):
    GPT-2 blocks forward (``GPT2Model.forward``: policy and, when held, reference), LM head + log-probs
    forward (ours: the ``lm_head`` linear and ``log_softmax`` over every position; TRL: its chunked
    log-prob kernel over the scored positions), backward (``Tensor.backward``), optimizer (AdamW step
    + grad clipping), data (our ``collate_batch`` / the Trainer's ``get_batch_samples``), and the rest
    of the wall time (loss, metrics, framework, Python).
    """
    import cProfile
    import inspect
    import pstats

    from torch.profiler import ProfilerActivity, profile
    from transformers.models.gpt2.modeling_gpt2 import GPT2Model

    def code_key(fn):
        code = inspect.unwrap(fn).__code__
        return code.co_filename, code.co_firstlineno

    phases = {"GPT-2 blocks forward": [code_key(GPT2Model.forward)],
              "LM head + log-probs forward": [("~", "<built-in method torch._C._nn.linear>"),
                                              ("~", "<method 'log_softmax' of 'torch._C.TensorBase' objects>")],
              "backward": [code_key(torch.Tensor.backward)],
              "optimizer (AdamW + clip)": [code_key(torch.optim.AdamW.step),
                                           code_key(torch.nn.utils.clip_grad_norm_)],
              "data (collate)": [code_key(collate_batch)]}
    try:
        from transformers import Trainer
        from trl.kernels.chunked_logprob import ChunkedLogProbFunction

        phases["LM head + log-probs forward"].append(code_key(ChunkedLogProbFunction.forward))
        phases["data (collate)"].append(code_key(Trainer.get_batch_samples))
    except ImportError:
        pass

    # Profile steps 2..steps, as they are timed: from the end of step 1 to the end of the last
    # (TRL's train() start-up and the first step's allocations are left out, for both sides).
    profiler = cProfile.Profile()

    def hook(step: int) -> None:
        if step == 1:
            profiler.enable()
        elif step == steps:
            profiler.disable()

    side.step_hook = hook
    try:
        ends = side.run(steps)
    finally:
        side.step_hook = None
        profiler.disable()
    wall = ends[-1] - ends[0]
    steps -= 1
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    rows, accounted = [], 0.0
    for phase, keys in phases.items():
        seconds = 0.0
        for (filename, line, name), (_, _, _, cumtime, _) in stats.items():
            if (filename, line) in keys or (filename, name) in keys:
                seconds += cumtime
        accounted += seconds
        rows.append([phase, f"{1000 * seconds / steps:.0f}", f"{100 * seconds / wall:.0f}%"])
    rows.append(["rest (loss, metrics, framework, Python)", f"{1000 * (wall - accounted) / steps:.0f}",
                 f"{100 * (wall - accounted) / wall:.0f}%"])
    rows.append(["**wall**", f"**{1000 * wall / steps:.0f}**", "100%"])

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        side.run(steps)
    ops = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=44)
    return {"phases": rows, "ops": ops}


def report(results: list[dict], args, device, notes: list[str]) -> str:
    out = ["## DPO step throughput: ours vs TRL DPOTrainer", "",
           f"Command: `{command_line()}`", "", f"Machine: {machine_info(device)}", ""]
    out += [f"- {n}" for n in notes]
    out += [f"- batch {args.batch_size} pairs, max length {args.max_length}, beta {args.beta}, AdamW lr {args.lr}; "
            f"{args.rounds} timed rounds of {args.steps} steps after {args.warmup} warm-up round(s), order "
            f"alternating; time per round = end of step 1 to end of step {args.steps}", ""]
    rows = []
    for res in results:
        t = res["times"]
        for name in ("ours", "trl"):
            if not t[name]:
                continue
            pairs_s = [res["pairs"] / s for s in t[name]]
            tokens_s = [res["real_tokens"] / s for s in t[name]]
            ms = [1000 * s / (args.steps - 1) for s in t[name]]
            rows.append([res["mode"], "ours (helpers.train)" if name == "ours" else "TRL DPOTrainer",
                         spread(ms, "{:.1f}"), spread(pairs_s, "{:.0f}"), spread(tokens_s, "{:.0f}"),
                         f"{res['setup'][name]:.2f}"])
    out.append(md_table(["reference", "loop", "ms/step", "pairs/s", "tokens/s", "setup s"], rows))
    out += ["", "tokens = non-padding tokens of the chosen and rejected rows the policy processes; "
            "median (min-max) over rounds; setup = precomputing reference log-probs (ours) / building the "
            "DPOTrainer incl. tokenization and, when precomputed, the reference pass (TRL).", ""]
    if all(res["times"]["trl"] for res in results):
        ratio_rows = []
        for res in results:
            ratios = [trl_s / our_s for our_s, trl_s in zip(res["times"]["ours"], res["times"]["trl"])]
            ratio_rows.append([res["mode"], spread(ratios, "{:.2f}x"),
                               f"{res['real_tokens'] / res['padded_tokens']:.2f}"])
        out.append(md_table(["reference", "throughput ours / TRL (same round)", "non-pad share of batch"],
                            ratio_rows))
        out.append("")
    for res in results:
        profiles = res.get("profile")
        if not profiles:
            continue
        names = list(profiles)
        phase_names = [row[0] for row in profiles[names[0]]["phases"]]
        rows = []
        for i, phase in enumerate(phase_names):
            row = [phase]
            for name in names:
                row += profiles[name]["phases"][i][1:]
            rows.append(row)
        headers = ["phase"] + [h for name in names for h in (f"{name} ms/step", f"{name} share")]
        out += [f"### Where the time goes: reference {res['mode']} (cProfile over steps 2-{args.steps} of one "
                f"round per side)", "", md_table(headers, rows), ""]
        for name in names:
            out += [f"torch.profiler, {name}, reference {res['mode']}: top ops by self CPU time", "", "```",
                    profiles[name]["ops"], "```", ""]
    return "\n".join(out)


def main(argv=None) -> None:
    parser = base_parser(__doc__, default_steps=30)
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per side and mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    # defaults: the tiny profile's DPO settings in the notebooks (helpers.profiles.DPO_SIZES["tiny"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64, help="prompt + response tokens")
    parser.add_argument("--max-prompt-length", type=int, default=16)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--modes", nargs="+", default=["held", "precomputed"], choices=["held", "precomputed"])
    parser.add_argument("--profile", action="store_true", help="also profile one round of each side")
    parser.add_argument("--no-trl", action="store_true", help="time our side only")
    parser.add_argument("--trl-defaults", action="store_true",
                        help="TRL as it comes: its default activation checkpointing and fused AdamW "
                             "(not the same optimiser implementation and backward as ours)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.warmup, args.batch_size = 3, 1, 1, 4
    if args.steps < 2:
        parser.error("--steps must be at least 2 (time is measured from the end of the first step)")
    notes = []
    reason = trl_missing_reason()
    if reason and not args.no_trl:
        notes.append(f"TRL side skipped: {reason}")
        args.no_trl = True
    apply_threads(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    from helpers.world import load_tokenizer, tiny_world

    with tempfile.TemporaryDirectory() as tmp:
        world = quick_world(Path(tmp) / "world") if args.quick else tiny_world()
        tokenizer = load_tokenizer(world)
        model, model_note = load_policy_start(world)
        n_params = sum(p.numel() for p in model.parameters())
        notes.append(f"model: {model_note}; GPT-2 {world.n_layer} x {world.n_embd}, {n_params / 1e6:.2f} M parameters")
        need = args.batch_size * args.steps
        records, pairs_note = load_pairs(world, tokenizer, 4 * need, seed=args.seed)
        records = fits_without_truncation(records, tokenizer, args.max_length, args.max_prompt_length)[:need]
        if len(records) < need:
            raise SystemExit(f"only {len(records)} pairs fit in max_length {args.max_length}, {need} needed")
        notes.append(f"pairs: {pairs_note}; the first {need} that neither side truncates "
                     f"(both append EOS: ours as an id, TRL as the EOS string, which tokenizes to the same id)")
        if args.trl_defaults:
            notes.append("TRL with its defaults: activation checkpointing on, fused AdamW (ours: no "
                         "checkpointing, plain AdamW)")
        if not args.no_trl:
            notes.append("identical batches checked: input ids, attention mask and scored tokens of every timed "
                         "step are equal on both sides")
        results = [measure(mode, model, tokenizer, records, args, device, tmp) for mode in args.modes]
    print(report(results, args, device, notes))


if __name__ == "__main__":
    main()
