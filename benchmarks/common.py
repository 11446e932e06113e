"""What every benchmark script shares: the command line, the tiny-profile world, pairs, tables.

The benchmarks import the same helpers the notebooks use (``helpers.world`` for the tiny
tokenizer and model, ``helpers.data`` / ``helpers.train`` for our DPO step); nothing here
re-implements them. TRL is optional (``benchmarks/requirements.txt``).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no hub, ever
os.environ.setdefault("TQDM_DISABLE", "1")  # TRL's and datasets' progress bars would swamp the tables
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# ----------------------------------------------------------------------------------------------
# command line


def base_parser(description: str, default_steps: int) -> argparse.ArgumentParser:
    """``--device``, ``--steps``, ``--quick`` (and ``--seed``), common to every script."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:1, ... (default: helpers.config.get_device())")
    parser.add_argument("--steps", type=int, default=default_steps, help="timed steps per measurement")
    parser.add_argument("--quick", action="store_true",
                        help="seconds-long smoke run with tiny sizes (CI proves the script works); "
                             "its numbers mean nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice, one per core)")
    return parser


def apply_threads(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def resolve_device(name: str | None) -> torch.device:
    from helpers.config import get_device

    return get_device(name)


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


# ----------------------------------------------------------------------------------------------
# reporting


def md_table(headers: list[str], rows: list[list]) -> str:
    """A markdown table (every cell str()-ed)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """``median (min-max)`` of repeated measurements; a single value is printed alone."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
    except OSError:
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> str:
    """One markdown paragraph: hardware, thread count, load, library versions."""
    import transformers

    parts = [f"device `{device}`"]
    if device.type == "cuda":
        parts.append(torch.cuda.get_device_name(device))
    parts += [f"CPU {cpu_name()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
              f"load average (1/5/15 min) {load_average()}",
              f"Python {platform.python_version()}, torch {torch.__version__}, "
              f"transformers {transformers.__version__}"]
    try:
        import trl

        parts[-1] += f", trl {trl.__version__}"
    except ImportError:
        pass
    return "; ".join(parts)


def trl_missing_reason() -> str | None:
    """None if TRL imports, else why not (the scripts then skip its side and say so)."""
    try:
        import trl  # noqa: F401
    except ImportError as err:
        return f"trl is not importable ({err}); pip install -r benchmarks/requirements.txt"
    return None


# ----------------------------------------------------------------------------------------------
# the tiny-profile world: tokenizer, model, preference pairs


def quick_world(root: str | os.PathLike):
    """A miniature tiny world (3,000 reviews, 2 x 32 GPT-2) built in seconds into ``root``."""
    from helpers.world import tiny_world

    return tiny_world(root=root, n_reviews=3_000, split_sizes={"prefs": 1_000, "test": 200},
                      n_layer=2, n_embd=32, n_head=2)


def load_policy_start(world):
    """The model DPO starts from: the SFT model when it is built, else the base model.

    The two have the same architecture, so every cost measured here is the same for both; only the
    weights differ. Building the SFT model is left to ``python -m helpers.build build``.

    Returns:
        (model in eval mode, a note saying which one it is)
    """
    from helpers.world import load_base_model, load_sft_model

    if Path(world.sft_dir, "config.json").exists():
        return load_sft_model(world), f"SFT model from {world.sft_dir}"
    model = load_base_model(world)
    model.eval()
    return model, (f"base model from {world.base_model} (the SFT model is not built; same "
                   f"architecture, so the same cost)")


def load_pairs(world, tokenizer, n: int, seed: int = 0) -> tuple[list[dict], str]:
    """``n`` preference records ``{"prompt", "chosen", "rejected"}`` of the tiny world.

    The pairs the notebooks use when ``helpers.pairs`` has built them; otherwise pairs cut from the
    ``prefs`` reviews: the prompt is a review's first 2-8 tokens (``helpers.world.make_prompt``),
    ``chosen`` its own continuation, ``rejected`` another review's continuation. Their lengths are
    those of the SFT model's samples (a review), which is what sets a DPO step's cost.

    Returns:
        (records, a note saying where they come from)
    """
    records = _built_pairs(world)
    if records is not None and len(records) >= n:
        rng = random.Random(seed)
        return rng.sample(records, n), f"preference pairs built by helpers.pairs ({world.pairs_dir})"
    from helpers.world import load_reviews, make_prompt

    reviews = load_reviews(world, world.pairs_split)
    rng = random.Random(seed)
    order = list(range(len(reviews)))
    rng.shuffle(order)
    lo, hi = world.prompt_tokens
    cut = []
    for i in order:
        prompt = make_prompt(reviews[i], tokenizer, rng.randint(lo, hi))
        if prompt:
            cut.append((prompt, reviews[i][len(prompt):]))
    records = []
    for k, (prompt, chosen) in enumerate(cut):
        rejected = cut[(k + 1) % len(cut)][1]
        if chosen.strip() and rejected.strip() and chosen != rejected:
            records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        if len(records) == n:
            break
    while len(records) < n:  # a small corpus: reuse records (cost, not content, is measured)
        records.append(dict(records[len(records) % max(1, len(records))]))
    return records, (f"pairs cut from the '{world.pairs_split}' reviews (prompt = first 2-8 tokens, "
                     f"chosen = its continuation, rejected = another review's continuation)")


def _built_pairs(world) -> list[dict] | None:
    """The pairs ``helpers.pairs`` built for the notebooks (default arguments), if on disk; else None.

    Never builds them (that samples from the SFT model for minutes): ``python -m helpers.build build``.
    """
    from helpers.pairs import get_preference_pairs, pairs_are_built

    if not pairs_are_built(world):
        return None
    dataset = get_preference_pairs(world, progress=False)
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in dataset]


def fits_without_truncation(records: list[dict], tokenizer, max_length: int, max_prompt_length: int) -> list[dict]:
    """The records that neither our tokenizer nor TRL's would truncate (so both see the same tokens)."""
    kept = []
    for r in records:
        p = len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"])
        c = len(tokenizer(r["chosen"], add_special_tokens=False)["input_ids"]) + 1  # + EOS
        j = len(tokenizer(r["rejected"], add_special_tokens=False)["input_ids"]) + 1
        if p <= max_prompt_length and p + max(c, j) <= max_length:
            kept.append(r)
    return kept


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20
