"""DPO with the notebooks' own functions, distributed by Hugging Face Accelerate.

The step is ``helpers.train.dpo_train_step`` -- the one notebook 06 runs -- given an
``Accelerator``: ``accumulate`` for gradient accumulation, DDP (or FSDP / DeepSpeed, whatever
``accelerate config`` chose) for the gradient all-reduce, ``gather_for_metrics`` for the metrics,
``save_state``/``load_state`` for checkpoints. See docs/scaling.md for the launch lines.

    # one process (CPU, or one GPU)
    python scripts/train_dpo.py --model /abs/sft --data pairs.jsonl --output-dir runs/dpo
    # all GPUs of this machine
    accelerate launch --multi_gpu --num_processes 8 scripts/train_dpo.py --mixed-precision bf16 ...

``--batch-size`` is per process and micro-batch: a step updates on
``batch_size * gradient_accumulation_steps * num_processes`` pairs. With the same global batch,
1 process and N processes see the same pairs at every step (``helpers.train.EpochSampler``).
"""

from __future__ import annotations

import argparse
import csv
import functools
import gc
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import GradientAccumulationPlugin  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from helpers.cache import file_fingerprint  # noqa: E402
from helpers.data import load_preference_file, pad_token_id_of, tokenize_preferences  # noqa: E402
from helpers.train import (  # noqa: E402
    CSV_COLUMNS,
    DPOConfig,
    EpochSampler,
    build_optimizer,
    check_fits_model,
    collate_batch,
    compute_ref_batch_logps,
    disable_dropout,
    dpo_train_step,
    examples_fingerprint,
    freeze_reference,
    read_metrics_csv,
    steps_per_epoch,
    total_steps,
    write_metrics_csv,
)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.json"
REF_LOGPS_FILE = "ref_logps.pt"
METRICS_FILE = "metrics.csv"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_argument_group("model and data")
    src.add_argument("--profile", choices=["tiny", "gpt2"], default=None,
                     help="take --model/--tokenizer/--data defaults from helpers.world (the SFT model "
                          "and pairs that `python -m helpers.build build` or the notebooks made)")
    src.add_argument("--model", help="policy initialisation: the SFT model (hub id or absolute path)")
    src.add_argument("--ref-model", help="pi_ref (default: --model)")
    src.add_argument("--tokenizer", help="default: --model")
    src.add_argument("--data", help="preference records {prompt, chosen, rejected}: a .json/.jsonl file, a "
                                    "folder saved by datasets' save_to_disk, or a hub dataset name")
    src.add_argument("--split", default="train", help="dataset split when --data is a hub dataset")
    src.add_argument("--output-dir", required=True)

    dpo = p.add_argument_group("DPO (helpers.train.DPOConfig)")
    d = DPOConfig()
    dpo.add_argument("--beta", type=float, default=d.beta)
    dpo.add_argument("--loss-type", choices=["sigmoid", "ipo"], default=d.loss_type)
    dpo.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    dpo.add_argument("--lr", type=float, default=d.lr)
    dpo.add_argument("--weight-decay", type=float, default=d.weight_decay)
    dpo.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    dpo.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm)
    dpo.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per micro-batch per process")
    dpo.add_argument("--gradient-accumulation-steps", type=int, default=d.gradient_accumulation_steps)
    dpo.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: --epochs)")
    dpo.add_argument("--epochs", type=int, default=d.epochs)
    dpo.add_argument("--max-length", type=int, default=d.max_length)
    dpo.add_argument("--max-prompt-length", type=int, default=d.max_prompt_length)
    dpo.add_argument("--precompute-ref-logps", action="store_true",
                     help="score every pair under pi_ref once (sharded over processes), then free pi_ref")
    dpo.add_argument("--ref-batch-size", type=int, default=d.ref_batch_size)
    dpo.add_argument("--keep-dropout", action="store_true", help="leave the policy's dropout on")
    src.add_argument("--on-invalid", choices=["raise", "drop"], default="raise",
                     help="a bad record (missing/empty field, chosen == rejected, no room for the response, "
                          "identical after truncation): stop with its number (raise) or drop it and count it")
    dpo.add_argument("--seed", type=int, default=d.seed)

    run = p.add_argument_group("run")
    run.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None,
                     help="default: what `accelerate launch`/`accelerate config` set, else no. bf16 on "
                          "recent GPUs; log-probs are float32 either way")
    run.add_argument("--checkpoint-every", type=int, default=0, help="steps between saves (0: at the end only)")
    run.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint if it exists")
    run.add_argument("--overwrite", action="store_true",
                     help="start over in a non-empty OUTPUT_DIR, replacing the files a run writes there "
                          "(without it, or --resume, a non-empty OUTPUT_DIR is refused)")
    run.add_argument("--cpu", action="store_true", help="force the CPU even when a GPU is present")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    run.add_argument("--no-save-model", action="store_true", help="skip saving the final model")
    run.add_argument("--interrupt-after", type=int, default=None, metavar="STEP",
                     help="exit after this step with no further checkpoint or model, as a pre-empted job "
                          "would (to test --resume)")
    args = p.parse_args(_negative_values_attached(sys.argv[1:] if argv is None else list(argv)))
    try:
        config_from_args(args)  # every DPOConfig field checked before anything loads
    except ValueError as err:
        p.error(str(err))  # exit code 2, the message, no traceback
    _check_model_paths(p, args)  # the paths given; --profile's own are checked by its build
    _apply_profile(args)
    for name in ("model", "data"):
        if getattr(args, name) is None:
            p.error(f"--{name} is required (or give --profile)")
    _check_output_dir(p, args)
    return args


def _check_model_paths(p: argparse.ArgumentParser, args) -> None:
    """A model given that cannot be found is named here, before anything loads: a missing folder (which
    ``from_pretrained`` would take for a hub id, and wait for the hub), or, offline, a hub id that
    is not in the cache."""
    from huggingface_hub import try_to_load_from_cache

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    for flag, value, probe in (("--model", args.model, "config.json"), ("--ref-model", args.ref_model, "config.json"),
                               ("--tokenizer", args.tokenizer, "tokenizer_config.json")):
        if not value:
            continue
        local = Path(value).expanduser()
        if local.is_dir():
            continue
        if local.exists():
            p.error(f"{flag} {value}: a file; give the folder that holds the model (config.json and weights)")
        if value.startswith((".", "/", "~")) or local.is_absolute():
            p.error(f"{flag} {value}: no such folder")
        if offline and not isinstance(try_to_load_from_cache(value, probe), str):
            p.error(f"{flag} {value}: not a local folder, and not in the hub cache while HF_HUB_OFFLINE=1 "
                    f"(download it once online, or give the folder of a saved model)")


def _check_output_dir(p: argparse.ArgumentParser, args) -> None:
    """A finished run's metrics and model are never replaced by a run that was not asked to."""
    out = Path(args.output_dir).expanduser()
    if args.resume and args.overwrite:
        p.error("--resume continues the run in --output-dir, --overwrite replaces it: give one of them")
    if out.exists() and not out.is_dir():
        p.error(f"--output-dir {out} is a file, not a folder")
    held = sorted(x.name for x in out.iterdir()) if out.is_dir() else []
    if held and not (args.resume or args.overwrite):
        p.error(f"--output-dir {out} is not empty ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''}): "
                "pass --resume to continue its run, --overwrite to start over there, or choose a new folder")


def _negative_values_attached(argv: list[str]) -> list[str]:
    """``--lr -1e-3`` -> ``--lr=-1e-3``.

    argparse reads a token that starts with ``-`` as an option unless it looks like a plain negative
    number (``-1``, ``-0.5``), so ``--lr -1e-3`` fails with "expected one argument" instead of
    reaching the config's check. Attaching a numeric-looking value to its option fixes that.
    """
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--") and "=" not in token and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            try:
                float(argv[i + 1])
            except ValueError:
                pass
            else:
                out.append(f"{token}={argv[i + 1]}")
                i += 2
                continue
        out.append(token)
        i += 1
    return out


def _apply_profile(args) -> None:
    if args.profile is None:
        return
    from helpers.world import get_world

    world = get_world(args.profile)
    args.model = args.model or world.sft_dir
    args.tokenizer = args.tokenizer or world.tokenizer_name
    if args.data is None:
        # exactly the pairs the notebooks use (helpers.pairs' defaults), never a leftover of a killed
        # build or a set of other settings lying in the same folder
        from helpers.pairs import pairs_are_built, pairs_path

        path = pairs_path(world)
        if not pairs_are_built(world):
            raise SystemExit(f"--profile {args.profile}: the pairs are not built ({path}); build them with "
                             f"`python -m helpers.build build`, or give --data")
        args.data = str(path / "dataset")


def config_from_args(args) -> DPOConfig:
    return DPOConfig(
        beta=args.beta, loss_type=args.loss_type, label_smoothing=args.label_smoothing, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm,
        batch_size=args.batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_steps=args.max_steps, epochs=args.epochs, seed=args.seed,
        precompute_ref_logps=args.precompute_ref_logps, ref_batch_size=args.ref_batch_size,
        max_length=args.max_length, max_prompt_length=args.max_prompt_length,
        disable_dropout=not args.keep_dropout)


def load_records(spec: str, split: str = "train", on_invalid: str = "raise"):
    """Preference records from a JSON/JSONL file, a ``save_to_disk`` folder, a folder of JSON files,
    or a hub dataset name (``on_invalid`` as ``--on-invalid``, for the files)."""
    import datasets

    path = Path(spec).expanduser()
    if path.is_file():
        return load_preference_file(path, on_invalid)  # errors name the file, line and field
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(path.resolve()))
            if isinstance(loaded, datasets.DatasetDict) and split not in loaded:
                raise ValueError(f"--data {spec}: no split {split!r} (its splits: {', '.join(loaded)}); "
                                 "choose one with --split")
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        files = sorted(path.glob("*.json*"))
        if files:
            return [record for f in files for record in load_preference_file(f, on_invalid)]
        raise ValueError(f"--data {spec}: no dataset in this folder (no save_to_disk files, no .json/.jsonl)")
    if spec.startswith((".", "/", "~")) or spec.endswith((".json", ".jsonl", ".csv")):
        raise ValueError(f"--data {spec}: no such file or folder")
    return datasets.load_dataset(spec, split=split)


def precompute_ref_logps(accelerator: Accelerator, ref_model, examples: list[dict], pad_token_id: int,
                         batch_size: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Each process scores its shard under pi_ref; ``gather_for_metrics`` joins the shards (and drops
    the pairs repeated to even out the last batch). Returns (N,) float32 CPU tensors, on every process."""
    loader = torch.utils.data.DataLoader(examples, batch_size=batch_size, shuffle=False,
                                         collate_fn=functools.partial(collate_batch, pad_token_id=pad_token_id))
    loader = accelerator.prepare_data_loader(loader)
    n = len(examples)
    chosen = torch.full((n,), math.nan)
    rejected = torch.full((n,), math.nan)
    for batch in tqdm(loader, desc="reference log-probs", disable=not progress, leave=False):
        c, r = compute_ref_batch_logps(ref_model, batch, autocast_ctx=accelerator.autocast)
        index, c, r = accelerator.gather_for_metrics((batch["index"], c, r))
        chosen[index.cpu()] = c.float().cpu()
        rejected[index.cpu()] = r.float().cpu()
    if torch.isnan(chosen).any() or torch.isnan(rejected).any():
        raise RuntimeError("some pairs got no reference log-probs")
    return chosen, rejected


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    config = config_from_args(args)
    # sync_with_dataloader=False: gradients sync every gradient_accumulation_steps micro-batches,
    # counted. (By default Accelerate also syncs when the dataloader signals its end -- which it
    # does one batch early here, because a step takes its micro-batches before running them.)
    # step_scheduler_with_optimizer=False: a prepared scheduler would otherwise step once per
    # *process* per update, and the warm-up would end N times sooner on N processes.
    accelerator = Accelerator(
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=config.gradient_accumulation_steps, sync_with_dataloader=False),
        mixed_precision=args.mixed_precision, cpu=args.cpu, step_scheduler_with_optimizer=False)
    show = accelerator.is_main_process and not args.no_progress
    out = Path(args.output_dir).expanduser().resolve()
    ckpt = out / CHECKPOINT_DIR
    resuming = args.resume and _usable_checkpoint(ckpt, accelerator)
    torch.manual_seed(config.seed)  # the same on every process; prepare() also broadcasts the weights

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    pad_token_id = pad_token_id_of(tokenizer)
    records = load_records(args.data, args.split, args.on_invalid)
    stats = {}
    examples = tokenize_preferences(records, tokenizer, config.max_length, config.max_prompt_length,
                                    on_invalid=args.on_invalid, stats=stats)
    for i, ex in enumerate(examples):
        ex["index"] = i
    n = len(examples)
    accelerator.print(f"data: {stats['kept']} of {stats['records']} pairs kept ({stats['dropped']} dropped); "
                      f"responses cut at --max-length {config.max_length} (end not scored): "
                      f"{stats['truncated_chosen']} chosen, {stats['truncated_rejected']} rejected", flush=True)
    P = accelerator.num_processes
    spe = steps_per_epoch(n, config.batch_size, config.gradient_accumulation_steps, P)
    n_steps = total_steps(config, n, P)

    policy = AutoModelForCausalLM.from_pretrained(args.model)
    check_fits_model(config, policy)
    if config.disable_dropout:
        disable_dropout(policy)

    # The reference: precomputed once per shard and gathered (then freed), or held frozen.
    ref_model = None
    if config.precompute_ref_logps:
        if resuming and (out / REF_LOGPS_FILE).exists():
            # weights_only: two tensors, nothing else can be unpickled (a crafted file cannot run code)
            ref_chosen, ref_rejected = torch.load(out / REF_LOGPS_FILE, map_location="cpu", weights_only=True)
        else:
            ref_model = freeze_reference(AutoModelForCausalLM.from_pretrained(args.ref_model or args.model))
            ref_model.to(accelerator.device)
            ref_chosen, ref_rejected = precompute_ref_logps(accelerator, ref_model, examples, pad_token_id,
                                                            config.ref_batch_size, show)
            del ref_model
            ref_model = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        for i, ex in enumerate(examples):
            ex["ref_chosen_logps"], ex["ref_rejected_logps"] = ref_chosen[i].item(), ref_rejected[i].item()
    else:
        ref_model = freeze_reference(AutoModelForCausalLM.from_pretrained(args.ref_model or args.model))
        ref_model.to(accelerator.device)

    per_step = config.batch_size * config.gradient_accumulation_steps * P
    sampler = EpochSampler(n, config.seed, per_step)
    # Its own generator: every new iterator draws a base seed, and from the global RNG that draw would
    # shift dropout's random numbers after a resume (load_state restores the global RNG; the resumed
    # run then makes one iterator more than the uninterrupted run at that point).
    loader = torch.utils.data.DataLoader(examples, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                                         collate_fn=functools.partial(collate_batch, pad_token_id=pad_token_id),
                                         generator=torch.Generator().manual_seed(config.seed))
    optimizer, scheduler = build_optimizer(policy, config)
    policy, optimizer, loader, scheduler = accelerator.prepare(policy, optimizer, loader, scheduler)

    step, metrics = 0, []
    identity = run_identity(config, args, examples, per_step)
    if resuming:
        state = json.loads((ckpt / STATE_FILE).read_text())
        _check_same_run(ckpt, state, identity)
        _check_manifest(ckpt, state)
        accelerator.load_state(str(ckpt))  # weights, optimizer, scheduler, every process's RNG states
        step = state["step"]
        metrics_path = out / METRICS_FILE
        metrics = [r for r in read_metrics_csv(metrics_path) if r["step"] <= step] if metrics_path.exists() else []
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_metrics_csv(metrics, out / METRICS_FILE) if metrics else _write_header(out / METRICS_FILE)
        if config.precompute_ref_logps:
            torch.save((ref_chosen, ref_rejected), out / REF_LOGPS_FILE)

    bar = tqdm(total=n_steps, initial=step, desc=f"DPO x{P}", disable=not show)
    while step < n_steps:
        epoch, k = divmod(step, spe)
        # Mid-epoch (after a resume): skip this process's micro-batches already trained on.
        epoch_loader = accelerator.skip_first_batches(loader, k * config.gradient_accumulation_steps) if k else loader
        # Through the prepared loader, not the sampler: its __iter__ re-applies its own epoch count.
        epoch_loader.set_epoch(epoch)
        batches = iter(epoch_loader)
        for _ in range(k, spe):
            micro_batches = [next(batches) for _ in range(config.gradient_accumulation_steps)]
            record = {"step": step + 1, "epoch": epoch}
            record.update(dpo_train_step(policy, micro_batches, optimizer, scheduler, config, ref_model,
                                         accelerator=accelerator))
            step += 1
            metrics.append(record)
            if accelerator.is_main_process:
                _append_row(out / METRICS_FILE, record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['rewards/accuracies']:.2f}")
            if step == n_steps or (args.checkpoint_every and step % args.checkpoint_every == 0):
                _save_checkpoint(accelerator, ckpt, step, identity)
            if step == args.interrupt_after:
                accelerator.print(f"interrupted after step {step}", flush=True)
                accelerator.end_training()
                sys.exit(3)
            if step == n_steps:
                break
        else:
            for _ in batches:  # run the loader to its end, so Accelerate closes the epoch
                raise RuntimeError("the loader has more batches than whole steps")
        del batches
    bar.close()

    if not args.no_save_model:
        accelerator.wait_for_everyone()
        final = out / "final"
        accelerator.unwrap_model(policy).save_pretrained(
            str(final), is_main_process=accelerator.is_main_process, save_function=accelerator.save,
            state_dict=accelerator.get_state_dict(policy))
        if accelerator.is_main_process:
            tokenizer.save_pretrained(str(final))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and metrics:
        last = metrics[-1]
        print(f"done: {step} steps x {per_step} pairs on {P} process(es) in {time.perf_counter() - started:.1f} s; "
              f"loss {last['loss']:.4f}, accuracy {last['rewards/accuracies']:.2f}; metrics in {out / METRICS_FILE}",
              flush=True)
    accelerator.end_training()
    return metrics


def _write_header(path: Path) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerow(CSV_COLUMNS)


def _append_row(path: Path, record: dict) -> None:
    """One CSV row per step, appended and flushed: a crash loses nothing already logged."""
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore").writerow(record)


def _save_checkpoint(accelerator: Accelerator, ckpt: Path, step: int, identity: dict) -> None:
    """``save_state`` into a fresh folder that then replaces the previous checkpoint in one rename:
    a run killed mid-save (a Colab disconnect, a pre-empted node) still has a whole checkpoint.

    ``trainer_state.json`` holds the step, the run's identity (``run_identity``) and a manifest
    (size and SHA-256 of every file ``save_state`` wrote); it is written last, so a folder without
    it is an incomplete save.
    """
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process: each writes its own RNG state
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "identity": identity, "manifest": _manifest(tmp)}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(old, ignore_errors=True)
        if ckpt.exists():
            os.replace(ckpt, old)
        os.replace(tmp, ckpt)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


# Config fields that may change on resume: how long to train and how often to save.
RESUMABLE_CHANGES = ("max_steps", "epochs", "checkpoint_dir", "checkpoint_every", "eval_every", "metrics_csv",
                     "ref_batch_size")


def run_identity(config: DPOConfig, args, examples: list[dict], per_step: int) -> dict:
    """What a resumed run must share with the run that saved the checkpoint: every config field
    but ``RESUMABLE_CHANGES``, the global batch, the models, and a fingerprint of the tokenized data
    (same size but other pairs is another run; so are reference log-probs of other data)."""
    fields = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}
    return {"config": fields, "per_step": per_step, "model": str(args.model), "ref_model": str(args.ref_model or args.model),
            "num_examples": len(examples), "data_fingerprint": examples_fingerprint(examples)}


def _check_same_run(ckpt: Path, state: dict, identity: dict) -> None:
    saved = state.get("identity")
    if saved is None:
        raise ValueError(f"{ckpt / STATE_FILE} records no run identity (an older or foreign checkpoint); "
                         f"start a new --output-dir, or delete {ckpt} to start over")
    flat = lambda d: {**{k: v for k, v in d.items() if k != "config"}, **d.get("config", {})}  # noqa: E731
    old, new = flat(saved), flat(identity)
    differ = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if differ:
        raise ValueError(f"--resume: {ckpt} is of another run ({'; '.join(differ)}); run with the settings it "
                         f"was saved with, or use a new --output-dir")


def _manifest(folder: Path) -> dict:
    return {str(f.relative_to(folder)): {"bytes": f.stat().st_size, "sha256": file_fingerprint(f)}
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name != STATE_FILE}


def _check_manifest(ckpt: Path, state: dict) -> None:
    """Every file the save wrote is there, unchanged, and nothing was added (a flipped byte, a
    missing RNG state or a planted file is refused by name instead of resuming differently)."""
    expected, found = state.get("manifest", {}), _manifest(ckpt)
    problems = [f"{name} is missing" for name in expected if name not in found]
    problems += [f"{name} differs from when it was saved" for name in expected
                 if name in found and found[name] != expected[name]]
    problems += [f"{name} was not written by the save" for name in found if name not in expected]
    if problems:
        raise ValueError(f"--resume: the checkpoint {ckpt} is damaged: {'; '.join(problems)}. Delete it to "
                         f"start over, or restore it")


def _usable_checkpoint(ckpt: Path, accelerator: Accelerator) -> bool:
    """Is there a checkpoint to resume from? Finishes a save that was killed between its renames
    (``checkpoint`` gone, ``checkpoint.tmp`` complete or ``checkpoint.old`` left) and says so; says
    when there is nothing to resume, so a restart from step 0 is never silent."""
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    if not (ckpt / STATE_FILE).exists() and accelerator.is_main_process:
        for candidate, what in ((tmp, "a save killed before its last rename"), (old, "the previous checkpoint")):
            if (candidate / STATE_FILE).exists():
                if ckpt.exists():
                    shutil.rmtree(ckpt)
                os.replace(candidate, ckpt)
                accelerator.print(f"--resume: {ckpt} was missing; using {candidate.name} ({what})", flush=True)
                break
    accelerator.wait_for_everyone()
    if (ckpt / STATE_FILE).exists():
        return True
    accelerator.print(f"--resume: no checkpoint in {ckpt.parent}; starting from step 0", flush=True)
    return False


def cli(argv=None) -> None:
    """``main`` with a setting or data error shown as one message (exit code 2), not a traceback;
    ``--debug`` shows the traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        main(argv)
    except ValueError as err:
        if "--debug" in argv:
            raise
        print(f"train_dpo.py: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    cli()
