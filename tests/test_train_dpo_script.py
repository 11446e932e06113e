"""scripts/train_dpo.py under Accelerate: one process == the notebook loop; two processes == one
process with the same global batch; an interrupted two-process run resumes where it stopped.

Two CPU processes are started with ``accelerate launch --multi_gpu --num_processes 2``: that
launcher goes through torch.distributed.run (gloo on CPU). ``accelerate launch --cpu
--num_processes 2`` would take accelerate's MPI path and, without mpirun, start one process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_gpt2, build_tiny_pairs, build_tiny_tokenizer
from safetensors.torch import load_file

from helpers.train import DPOConfig, read_metrics_csv, train_dpo

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "train_dpo.py"
# Same pairs at every step; they differ only in padding widths (each process pads its own
# micro-batch) and in the order of the gradient sums, i.e. in float32 rounding: measured <= 4e-7.
TWO_VS_ONE_TOLERANCE = 1e-5
# 32 pairs, global batch 8 (4 x 2 accumulation on 1 process; 2 x 2 x 2 processes): 4 steps an epoch.
ARGS = ["--max-steps", "6", "--lr", "1e-3", "--beta", "0.5", "--warmup-steps", "2",
        "--gradient-accumulation-steps", "2", "--precompute-ref-logps", "--ref-batch-size", "8",
        "--max-length", "32", "--max-prompt-length", "8", "--seed", "1", "--cpu", "--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: dict, out: Path, processes: int, batch_size: int, *extra: str) -> tuple[int, float, str]:
    """Run the script on ``processes`` CPU processes; returns (exit code, wall seconds, output)."""
    script_args = [str(SCRIPT), "--model", world["model"], "--tokenizer", world["tokenizer"],
                   "--data", world["data"], "--output-dir", str(out), "--batch-size", str(batch_size),
                   *ARGS, *extra]
    if processes == 1:
        cmd = [sys.executable, *script_args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), *script_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, time.perf_counter() - start, proc.stdout + proc.stderr


def make_script_world(root: Path) -> dict:
    """A tiny tokenizer, a tiny GPT-2 and 32 pairs (pairs.jsonl) saved in ``root``, as the script reads them."""
    tokenizer = build_tiny_tokenizer(root / "tokenizer")
    build_tiny_gpt2(tokenizer, seed=0).save_pretrained(str(root / "model"))
    with open(root / "pairs.jsonl", "w") as f:
        for record in build_tiny_pairs(4):
            f.write(json.dumps(record) + "\n")
    return {"root": root, "tokenizer": str(root / "tokenizer"), "model": str(root / "model"),
            "data": str(root / "pairs.jsonl"), "tokenizer_obj": tokenizer}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_script_world(tmp_path_factory.mktemp("script_world"))


@pytest.fixture(scope="module")
def runs(world):
    """The uninterrupted runs: one process (batch 4) and two processes (batch 2 each)."""
    result = {}
    for processes, batch_size in [(1, 4), (2, 2)]:
        out = world["root"] / f"run{processes}"
        code, seconds, output = launch(world, out, processes, batch_size)
        assert code == 0, output[-3000:]
        result[processes] = {"out": out, "metrics": read_metrics_csv(out / "metrics.csv"), "seconds": seconds}
    print(f"\nwall time: 1 process {result[1]['seconds']:.1f} s, 2 processes {result[2]['seconds']:.1f} s")
    return result


def test_one_process_script_is_the_notebook_loop(world, runs):
    """The script and helpers.train.train_dpo run the same step function: same numbers."""
    config = DPOConfig(batch_size=4, gradient_accumulation_steps=2, max_steps=6, lr=1e-3, beta=0.5, warmup_steps=2,
                       precompute_ref_logps=True, ref_batch_size=8, max_length=32, max_prompt_length=8, seed=1)
    tokenizer = world["tokenizer_obj"]
    notebook = train_dpo(build_tiny_gpt2(tokenizer, seed=0), build_tiny_gpt2(tokenizer, seed=0), tokenizer,
                         build_tiny_pairs(4), config, progress=False)
    script = runs[1]["metrics"]
    assert [r["step"] for r in script] == [1, 2, 3, 4, 5, 6]
    # Not bitwise: the subprocess runs on 1 thread (OMP_NUM_THREADS=1), this one on more, and the
    # thread count changes float32 summation order in the matmuls (measured: ~1e-7 at step 3).
    for a, b in zip(notebook, script):
        for name, value in a.items():
            assert b[name] == pytest.approx(value, rel=1e-5, abs=1e-6), (a["step"], name)


def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    one, two = runs[1]["metrics"], runs[2]["metrics"]
    assert len(one) == len(two) == 6
    assert one[0]["loss"] == pytest.approx(0.6931472, abs=1e-6)  # policy == reference at step 1
    assert one[-1]["loss"] < 0.6  # it trained
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(one, two)]
    print(f"\nmax |loss(2 processes) - loss(1 process)| = {max(diffs):.2e}")
    assert max(diffs) < TWO_VS_ONE_TOLERANCE
    for a, b in zip(one, two):
        assert a["lr"] == b["lr"]  # the warm-up counts updates, not processes
        for name in ("rewards/accuracies", "rewards/margins", "logps/chosen", "grad_norm"):
            assert b[name] == pytest.approx(a[name], rel=1e-4, abs=TWO_VS_ONE_TOLERANCE), name
    w1 = load_file(str(runs[1]["out"] / "final" / "model.safetensors"))
    w2 = load_file(str(runs[2]["out"] / "final" / "model.safetensors"))
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-4, atol=1e-5, msg=name)


def test_interrupted_two_process_run_resumes_where_it_stopped(world, runs):
    out = world["root"] / "resumed2"
    # Checkpoint at step 3 (mid-epoch 0), killed after step 5: steps 4-5 are lost and redone.
    code, _, output = launch(world, out, 2, 2, "--checkpoint-every", "3", "--interrupt-after", "5")
    assert code != 0 and "interrupted after step 5" in output, output[-3000:]
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 3
    assert len(read_metrics_csv(out / "metrics.csv")) == 5
    code, _, output = launch(world, out, 2, 2, "--checkpoint-every", "3", "--resume")
    assert code == 0, output[-3000:]
    resumed, full = read_metrics_csv(out / "metrics.csv"), runs[2]["metrics"]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert resumed == full
    w_resumed = load_file(str(out / "final" / "model.safetensors"))
    w_full = load_file(str(runs[2]["out"] / "final" / "model.safetensors"))
    for name in w_full:
        assert torch.equal(w_resumed[name], w_full[name]), name


def load_script_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_dpo_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_formats_and_the_tiny_profile_paths(tmp_path, monkeypatch):
    """--data takes a JSONL file, a save_to_disk folder or a folder of JSON files; --profile tiny
    finds the SFT model, tokenizer and exactly the pair set helpers.pairs built for the notebooks
    (never another set or a killed build's leftover in the same folder)."""
    import datasets

    from helpers.cache import build_artifact
    from helpers.pairs import pairs_path, pairs_spec
    from helpers.world import tiny_world

    script = load_script_module()
    records = build_tiny_pairs(1)
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    other = tmp_path / "tiny" / "pairs" / "prompts8_k4_seed0" / "dataset"
    datasets.Dataset.from_list(records).save_to_disk(str(other))
    for spec in (jsonl, other, tmp_path):  # tmp_path: a folder holding pairs.jsonl
        loaded = script.load_records(str(spec))
        assert [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in loaded] == records, spec

    monkeypatch.setenv("DPO_CACHE", str(tmp_path))
    with pytest.raises(SystemExit, match="the pairs are not built"):
        script.parse_args(["--profile", "tiny", "--output-dir", str(tmp_path / "out")])
    world = tiny_world()
    built = build_artifact(pairs_path(world), pairs_spec(world, 1000, 4, 0),
                           lambda tmp: datasets.Dataset.from_list(records).save_to_disk(str(tmp / "dataset")))
    (built.parent / f"{built.name}.tmp-4242" / "dataset").mkdir(parents=True)  # a killed build's leftover
    args = script.parse_args(["--profile", "tiny", "--output-dir", str(tmp_path / "out")])
    assert args.model == str(tmp_path / "tiny" / "sft")
    assert args.tokenizer == str(tmp_path / "tiny" / "tokenizer")
    assert args.data == str(built / "dataset")
