"""Profiles, device and dtype policy, seeding, cache paths: the one place notebooks and tests ask.

Profiles (environment variable ``DPO_PROFILE``):
  * ``tiny`` -- a tiny GPT-2 and a review corpus made by the project; offline, CPU, minutes.
  * ``gpt2`` -- GPT-2 124M and IMDb from the Hugging Face Hub; meant for a GPU (Colab).
  * ``auto`` -- ``gpt2`` only when CUDA is present *and* the hub answers a bounded probe.
The profile choice itself lives in ``helpers.world`` (it needs the network probe); this module
holds what every layer needs.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import numpy as np
import torch

# The repository this course is published from; the Colab badges and setup cell point here.
GITHUB_REPO = "dpo-course/dpo-from-scratch"
REPO_URL = f"https://github.com/{GITHUB_REPO}"
COLAB_URL = f"https://colab.research.google.com/github/{GITHUB_REPO}/blob/main"

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"


def cache_dir() -> Path:
    """Where built artifacts (tokenizer, SFT model, pairs) live: ``$DPO_CACHE`` or ``<repo>/artifacts``.

    Always absolute: a missing *relative* path given to ``from_pretrained`` is taken for a hub id
    and retried for ~23 s before failing. A relative ``$DPO_CACHE`` is taken relative to the
    repository, not to the working directory: the build (run from the repository) and Jupyter
    (running in ``notebooks/``) must find one cache, not two.
    """
    value = os.environ.get("DPO_CACHE")
    if value is not None and not value.strip():
        # Path("") is the current directory: the cache would land wherever the notebook runs
        raise ValueError("DPO_CACHE is set but empty; unset it (default <repo>/artifacts) or give a folder")
    path = Path(value).expanduser() if value is not None else REPO_ROOT / "artifacts"
    path = (path if path.is_absolute() else REPO_ROOT / path).resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"DPO_CACHE={value} is a file, not a folder: point it at a folder (or unset it: "
                         f"default {REPO_ROOT / 'artifacts'})")
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` checked as a file a long script will write at its end -- checked *before* the work:
    not an existing folder, and its folder exists (made here) and is a folder.

    Raises:
        ValueError: naming ``flag`` and the path.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{flag} {path}: a folder; give the path of the JSON file to write, e.g. {path / 'results.json'}")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
    parent.mkdir(parents=True, exist_ok=True)
    return path


def display_path(path: str | os.PathLike) -> str:
    """``path`` as a notebook should print it: relative to the repository when inside it
    (``artifacts/tiny/sft``), else relative to the cache (``<cache>/tiny/sft``), else with the home
    folder as ``~`` -- never the absolute path of the machine that executed the notebook."""
    path = Path(path).expanduser().resolve()
    for base, label in ((REPO_ROOT, None), (cache_dir(), "<cache>")):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return rel.as_posix() if label is None else f"{label}/{rel.as_posix()}"
    try:
        return f"~/{path.relative_to(Path.home()).as_posix()}"
    except ValueError:
        return path.as_posix()


def get_device(prefer: str | None = None) -> torch.device:
    """cuda -> mps -> cpu, unless ``prefer`` (or ``$DPO_DEVICE``) names one, which must then exist."""
    source = "get_device(prefer=...)" if prefer else "DPO_DEVICE"
    prefer = prefer or os.environ.get("DPO_DEVICE")
    if prefer:
        try:
            device = torch.device(prefer.strip())
        except RuntimeError as err:
            raise ValueError(f"{source} = {prefer!r}: not a device name (cpu, cuda, cuda:1, mps): {err}") from None
        available = {"cpu": True, "cuda": torch.cuda.is_available(),
                     "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
        if not available.get(device.type, True):
            raise ValueError(f"{source} = {prefer!r}, but this machine has no {device.type} device "
                             f"(unset {source} to choose automatically)")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{source} = {prefer!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def has_native_bf16(capability: tuple[int, int]) -> bool:
    """Does a CUDA GPU of this compute capability run bf16 in hardware? Ampere (8.0) and newer.

    ``torch.cuda.is_bf16_supported()`` also says True on a T4 (7.5) or V100 (7.0), where bf16 is
    *emulated*: every matmul then runs slower than in float32.
    """
    return tuple(capability) >= (8, 0)


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """bf16 autocast on CUDA GPUs with native bf16 (compute capability >= 8.0); float32 elsewhere,
    including a T4 or V100, whose bf16 is emulated (``has_native_bf16``).

    fp16 is not chosen: its logits overflow in log-softmax and it needs a grad scaler.
    """
    device = torch.device(device)
    if device.type == "cuda" and has_native_bf16(torch.cuda.get_device_capability(device)):
        return torch.bfloat16
    return None


def autocast(device: torch.device | str):
    """Context manager: bf16 autocast on CUDA, a no-op on CPU/MPS (same code path everywhere)."""
    device = torch.device(device)
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Use ``n`` torch CPU threads inside the block (None: leave as is), then restore the count.

    Why the course uses one thread for its tiny models on CPU: (1) their matrices are too small to
    gain from intra-op threads, and on a busy 2-core machine two threads spin against each other
    (a reward-model step: 1.08 s on 2 threads vs 0.085 s on 1; ``F.logsigmoid`` on 30 numbers:
    ~20 ms vs ~2 us); (2) reproducibility: a matmul split over 2 threads rounds differently
    (SFT weights differed by 2.5e-6 after 15 steps), which changes every later sample.
    """
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
