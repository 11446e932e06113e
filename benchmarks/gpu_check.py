"""The prepared GPU check of the `gpt2` road: one command, one markdown table, no hub.

    python benchmarks/gpu_check.py                      # on one CUDA GPU: ~5-8 minutes
    python benchmarks/gpu_check.py --device cpu --quick # the same code on the CPU, small shapes (CI)
    python benchmarks/gpu_check.py --out benchmarks/gpu_check.md

What it runs (random-weight ``GPT2Config()``, the tiny world's data; nothing from the hub):

1. **Precision**: what ``helpers.config`` chooses on this device and why (native bf16 only at
   compute capability >= 8.0; ``torch.cuda.is_bf16_supported()`` also says True where bf16 is
   emulated), and one SFT step at the 124M shape timed in float32, bf16 autocast and fp16 autocast,
   so the choice is checked against measured step times.
2. **SFT and DPO steps** at the 124M shape and the gpt2 batch (``helpers.profiles``) with the chosen
   precision: ms per step, tokens per second.
3. **Ours vs TRL** ``DPOTrainer`` at the 124M shape, reference held and precomputed, and the peak
   CUDA memory of each (``benchmarks/memory.py --shape gpt2``, each configuration in its own process).
4. **Notebook 06 on this device** in the tiny profile (``--quick``: notebook 04), its
   ``NBVAL_CHECK_OUTPUT`` cells compared with the committed outputs: exactly, then number by number
   within ``GPU_RTOL`` / ``GPU_ATOL`` (a GPU sums in another order than the CPU that made them:
   float32 facts such as "the same losses to 1e-5" can move in their last printed digit).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from common import machine_info, md_table, trl_missing_reason  # noqa: E402
from t4_budget import build_step  # noqa: E402

from helpers import config  # noqa: E402
from helpers import profiles as P  # noqa: E402

GPU_RTOL, GPU_ATOL = 1e-3, 1e-4  # numbers of a checked output that agree this closely count as the same
NUMBER = re.compile(r"[-+]?\d*\.\d+(?:e[-+]?\d+)?|[-+]?\d+(?:e[-+]?\d+)?", re.I)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(part: str, device: torch.device, dtype, quick: bool, reps: int) -> float:
    """Median seconds of one ``part`` step (after one untimed warm-up step) under ``dtype`` autocast."""
    step = build_step(part, quick, device)
    ctx = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    times = []
    for i in range(reps + 1):
        sync(device)
        t0 = time.perf_counter()
        with ctx():
            step()
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    del step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(times)


def precision_rows(device: torch.device, quick: bool, reps: int) -> list[list[str]]:
    chosen = config.autocast_dtype(device)
    if device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        native = config.has_native_bf16(cap)
        why = (f"{torch.cuda.get_device_name(device)}, compute capability {cap[0]}.{cap[1]}: "
               f"is_bf16_supported() = {torch.cuda.is_bf16_supported()}, native bf16 = {native}")
    else:
        why = "CPU: float32 (no autocast)"
    rows = [["precision chosen", str(chosen or "float32"), why]]
    candidates = [("float32", None)] + ([("bf16 autocast", torch.bfloat16), ("fp16 autocast", torch.float16)]
                                        if device.type == "cuda" else [])
    timings = {}
    for name, dtype in candidates:
        timings[name] = time_step("SFT step", device, dtype, quick, reps)
    base = timings["float32"]
    rows.append(["SFT step by precision", ", ".join(f"{n} {t * 1e3:.0f} ms" for n, t in timings.items()),
                 ", ".join(f"{n} {base / t:.2f}x float32's speed" for n, t in timings.items() if n != "float32")
                 or "only float32 on a CPU"])
    return rows


def step_rows(device: torch.device, quick: bool, reps: int) -> list[list[str]]:
    dtype = config.autocast_dtype(device)
    w, d = P.sizes(P.WORLD_SIZES, "gpt2"), P.sizes(P.DPO_SIZES, "gpt2")
    rows = []
    sft = f"SFT step ({w['sft_batch_size']} x {w['sft_max_length']})"
    pairs = f"{d['batch_size']} pairs x {d['max_length']}"
    for part, tokens in ((sft, w["sft_batch_size"] * w["sft_max_length"]),
                         (f"DPO step, reference precomputed ({pairs})", 2 * d["batch_size"] * d["max_length"]),
                         (f"DPO step, reference held ({pairs})", 2 * d["batch_size"] * d["max_length"])):
        t = time_step(part, device, dtype, quick, reps)
        rows.append([part, f"{t * 1e3:.0f} ms", f"{tokens / t:,.0f} tokens/s ({dtype or 'float32'})"])
    return rows


def trl_rows(device: torch.device, quick: bool) -> list[list[str]]:
    reason = trl_missing_reason()
    if reason:
        return [["ours vs TRL", "skipped", reason]]
    d = P.DPO_SIZES["gpt2"]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--device", str(device.type)]
    cmd += ["--quick"] if quick else ["--shape", "gpt2", "--batch-size", str(d["batch_size"]), "--max-length",
                                      str(d["max_length"]), "--steps", "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        return [["ours vs TRL", "**failed**", proc.stderr.strip().splitlines()[-1][:300]]]
    rows, cells = [], {}
    for line in proc.stdout.splitlines():
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(parts) >= 4 and parts[0] in ("ours", "trl") and parts[1] in ("held", "precomputed"):
            cells[(parts[0], parts[1])] = (float(parts[2]), float(parts[-1]))  # peak (MiB), run seconds
    unit = "max_memory_allocated" if device.type == "cuda" else "peak RSS"
    for mode in ("held", "precomputed"):
        if ("ours", mode) in cells and ("trl", mode) in cells:
            (mo, so), (mt, st) = cells[("ours", mode)], cells[("trl", mode)]
            speed = f"{st / so:.2f}x TRL's speed (run time {so:.2f} s vs {st:.2f} s)" if so > 0 else "too short to time"
            rows.append([f"ours vs TRL, reference {mode}", speed,
                         f"{unit} ours {mo:.0f} MiB, TRL {mt:.0f} MiB"])
    for loop in ("ours", "trl"):
        if (loop, "held") in cells and (loop, "precomputed") in cells:
            rows.append([f"{loop}: precomputed / held peak memory",
                         f"{cells[(loop, 'precomputed')][0] / cells[(loop, 'held')][0]:.2f}", unit])
    return rows or [["ours vs TRL", "**no table**", proc.stdout[-300:]]]


def _checked_outputs(nb) -> list[tuple[str, str]]:
    out = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in cell.source:
            text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))
            out.append((cell.source.splitlines()[1] if "\n" in cell.source else cell.source, text))
    return out


def same_within(a: str, b: str) -> bool:
    """Equal text apart from numbers, and every number within GPU_RTOL / GPU_ATOL."""
    if NUMBER.sub("#", a) != NUMBER.sub("#", b):
        return False
    for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
        fx, fy = float(x), float(y)
        if abs(fx - fy) > GPU_ATOL + GPU_RTOL * abs(fy):
            return False
    return True


def notebook_rows(device: torch.device, name: str) -> list[list[str]]:
    import tempfile

    import nbformat
    from series_runtime import execute  # the benchmarks' one notebook runner (fresh kernel, errors reported)

    path = ROOT / "notebooks" / name
    committed = nbformat.read(path, as_version=4)
    env = {"DPO_PROFILE": "tiny", "HF_HUB_OFFLINE": "1", "DPO_DEVICE": device.type, "DPO_SCALE": "full"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with tempfile.TemporaryDirectory() as keep:
            seconds, status = execute(path, timeout=900, keep=Path(keep))
            nb = nbformat.read(Path(keep) / name, as_version=4)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if status != "ok":
        return [[f"notebook {name} on {device.type}", "**failed**", status]]
    mine, theirs = _checked_outputs(nb), _checked_outputs(committed)
    exact = sum(a[1] == b[1] for a, b in zip(mine, theirs))
    close = [a[0] for a, b in zip(mine, theirs) if a[1] != b[1] and same_within(a[1], b[1])]
    differ = [a[0] for a, b in zip(mine, theirs) if not same_within(a[1], b[1])]
    rows = [[f"notebook {name} on {device.type} (tiny)", f"{exact}/{len(theirs)} checked cells identical",
             f"ran in {seconds:.0f} s; {len(close)} equal within rtol {GPU_RTOL:g} / atol {GPU_ATOL:g}, "
             f"{len(differ)} differ"]]
    rows += [["  differs", cell[:80], ""] for cell in differ]
    return rows


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    ap.add_argument("--quick", action="store_true", help="small shapes, notebook 04, few repetitions (CI)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per step (default 5; quick 1)")
    ap.add_argument("--notebook", default=None, help="notebook to run (default 06; quick: 04)")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here (torch.cuda.is_available() is False)")
    reps = args.reps or (1 if args.quick else 5)
    name = args.notebook or ("04_sequence_logprobs.ipynb" if args.quick else "06_dpo_training_loop.ipynb")
    os.environ["DPO_DEVICE"] = device.type
    if args.quick:  # the steps at DPO_SCALE=smoke batch sizes (the notebook still runs at full scale)
        os.environ["DPO_SCALE"] = "smoke"
    t0 = time.perf_counter()
    rows = precision_rows(device, args.quick, reps)
    rows += step_rows(device, args.quick, reps)
    rows += trl_rows(device, args.quick)
    rows += notebook_rows(device, name)
    shape = "small shape (--quick)" if args.quick else "GPT-2 124M shape (GPT2Config(), random weights)"
    text = "\n".join([f"## GPU check ({shape})", "", machine_info(device), "",
                      md_table(["check", "result", "detail"], rows), "",
                      f"Whole check: {time.perf_counter() - t0:.0f} s. Command: `python benchmarks/gpu_check.py "
                      + " ".join(argv if argv is not None else sys.argv[1:]) + "`"])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
