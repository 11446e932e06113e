"""The task world of the controlled-sentiment experiment, in two profiles over one code path.

The DPO paper's Section 6.1: prompts are the first 2-8 tokens of movie reviews, an SFT model writes
the rest, a sentiment scorer is the ground-truth reward. This module describes that world as a
``World`` and loads or builds its parts:

==================  ======================================  =======================================
part                ``tiny`` (offline, CPU, minutes)        ``gpt2`` (GPU + internet, Colab)
==================  ======================================  =======================================
reviews             ``helpers.corpus`` -> local JSON lines  ``load_dataset("stanfordnlp/imdb")``
tokenizer           byte-level BPE trained here             ``"gpt2"``
base model          4 x 128 GPT-2, random init, saved here  ``"gpt2"`` (124 M)
SFT model (pi_ref)  ``train_sft`` on the reviews            ``train_sft`` on the reviews
reward              VADER compound, [-1, 1]                 classifier log-odds of "positive"
==================  ======================================  =======================================

Both load through the same calls -- ``load_dataset(name, data_files=...)``,
``AutoTokenizer.from_pretrained(name_or_path)``, ``AutoModelForCausalLM.from_pretrained(name_or_path)``
-- only the names differ (the tiny ones are absolute paths under ``cache_dir()/"tiny"``: a missing
*relative* path would be taken for a hub id and retried for ~23 s).

Profile switch: ``DPO_PROFILE`` in {auto, tiny, gpt2} (default auto), see ``choose_profile``.

Every ``load_*`` builds what is missing, so each notebook runs standalone; ``python -m helpers.world
build [--force]`` builds the whole tiny world (corpus, tokenizer, SFT model, preference pairs) up
front and prints the time of each stage. Builds write into a temporary folder and rename it at the
end, so an interrupted build never leaves a half-written model that later loads.

Prompt/response split (read this before tokenizing pairs): GPT-2-style byte-level BPE attaches the
space *before* a word to that word (" great" is one token). A prompt is therefore the text of the
first n tokens with no trailing space ("the acting was") and a response starts with a space
(" great. i loved it."). Prompts are cut only at pre-token boundaries (never inside a word), so
tokenizing prompt and response separately and concatenating the ids -- what ``helpers.data`` does
-- gives exactly the ids of the whole text.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import ssl
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from helpers.config import cache_dir, torch_threads
from helpers.rewards import DEFAULT_CLASSIFIER, RewardFn, make_reward_fn

PROFILES = ("auto", "tiny", "gpt2")
# Bump to invalidate every cached world (e.g. when how a stage is built changes): the next load
# deletes the stale artifacts under the world's root -- everything built from the old SFT model
# included -- and rebuilds.
WORLD_VERSION = 2
STAGE_STAMP = "world_spec.json"
HUB_PROBE = "huggingface.co:443"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


# ----------------------------------------------------------------------------------------------
# profile choice


def _parse_probe(spec: str) -> tuple[str, str, int]:
    """``"host:port"`` (TLS, like the hub) or ``"http://host:port"`` (plain HTTP, for tests)."""
    scheme = "https"
    if "://" in spec:
        scheme, spec = spec.split("://", 1)
    host, _, port = spec.rpartition(":")
    return scheme, host, int(port)


def probe_hub(spec: str | None = None, timeout: float = 2.5) -> bool:
    """Does the hub *answer* within ``timeout`` seconds (in total)?

    A TCP connect alone is not enough: an endpoint that accepts connections and never answers
    (a captive proxy, a black-holed firewall) makes ``from_pretrained`` hang forever. So the probe
    completes a TLS handshake and an HTTP request and waits for the status line, all under one
    deadline.

    Args:
        spec: ``"host:port"``, or ``"http://host:port"`` for plain HTTP; default ``$DPO_HUB_PROBE``
            or ``huggingface.co:443``.
        timeout: total seconds allowed.
    Returns:
        True if an HTTP status line came back in time.
    """
    scheme, host, port = _parse_probe(spec or os.environ.get("DPO_HUB_PROBE", HUB_PROBE))
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    try:
        with socket.create_connection((host, port), timeout=remaining()) as raw:
            sock = raw
            if scheme == "https":
                raw.settimeout(remaining())
                sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
            sock.settimeout(remaining())
            sock.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            sock.settimeout(remaining())
            return sock.recv(16).startswith(b"HTTP/")
    except (OSError, TimeoutError, ValueError):  # socket.timeout and ssl.SSLError are OSErrors
        return False


def set_hub_offline() -> None:
    """Make every later hub call fail at once instead of retrying for ~23 s (or hanging).

    ``HF_HUB_OFFLINE=1`` in the environment only works if set before huggingface_hub is imported,
    so also flip the module constants that the libraries read at call time.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def choose_profile(profile: str | None = None, cuda_available: bool | None = None,
                   probe_timeout: float = 2.5, verbose: bool = True) -> str:
    """Resolve ``profile`` (default ``$DPO_PROFILE``, else ``"auto"``) to ``"tiny"`` or ``"gpt2"``.

    ``auto`` picks ``gpt2`` only if CUDA is available *and* the hub answers ``probe_hub`` within
    ``probe_timeout`` seconds; otherwise ``tiny``, printing one line that says why. It never waits
    longer than the probe timeout. Choosing ``tiny`` also switches the hub libraries offline.

    Args:
        profile: "auto", "tiny" or "gpt2" (case-insensitive).
        cuda_available: override ``torch.cuda.is_available()`` (tests use it to reach the probe).
        probe_timeout: seconds for the hub probe.
        verbose: print the one-line reason for ``auto``'s choice.
    """
    requested = (profile or os.environ.get("DPO_PROFILE") or "auto").strip().lower()
    if requested not in PROFILES:
        raise ValueError(f"DPO_PROFILE must be one of {PROFILES}, got {requested!r}")
    chosen = requested
    if requested == "auto":
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        spec = os.environ.get("DPO_HUB_PROBE", HUB_PROBE)
        if not cuda_available:
            chosen, why = "tiny", "no CUDA GPU"
        elif not probe_hub(spec, timeout=probe_timeout):
            chosen, why = "tiny", f"the hub ({spec}) did not answer within {probe_timeout:g} s"
        else:
            chosen, why = "gpt2", f"CUDA GPU and the hub ({spec}) answers"
        if verbose:
            print(f"DPO_PROFILE=auto -> {chosen}: {why}")
    if chosen == "tiny":
        set_hub_offline()
    return chosen


# ----------------------------------------------------------------------------------------------
# the world description


@dataclass(frozen=True)
class World:
    """Everything that differs between profiles: names, paths, sizes. Code never branches on more
    than ``profile`` and the fields below.

    Attributes:
        profile: "tiny" or "gpt2".
        root: absolute folder for this profile's built artifacts.
        base_model: what SFT starts from (hub id or absolute path).
        tokenizer_name: hub id or absolute path for ``AutoTokenizer.from_pretrained``.
        dataset_name, data_files: arguments of ``datasets.load_dataset``.
        sft_split, pairs_split, eval_split: disjoint splits: SFT texts, preference-pair prompts,
            held-out evaluation prompts.
        reward: "vader" or a classifier id/path (see ``helpers.rewards``).
        prompt_tokens: (min, max) prompt length in tokens (the paper: 2-8).
        max_new_tokens: response length limit when sampling.
        pairs_drop_truncated: drop samples without EOS before pairing. True for tiny (its
            reviews end well within ``max_new_tokens``); False for gpt2 (IMDb reviews are longer
            than any response we sample, so almost no sample ends -- as in the paper, responses
            are then fixed-length continuations).
        sft_max_length: SFT sequence length (longer reviews are cut and then carry no EOS).
        sft_steps, sft_batch_size, sft_lr: SFT optimisation.
        n_reviews, vocab_size, n_layer, n_embd, n_head, n_positions: tiny-only build sizes.
        seed: every random choice of the build derives from it.
    """

    profile: str
    root: str
    base_model: str
    tokenizer_name: str
    dataset_name: str
    data_files: dict | None
    sft_split: str
    pairs_split: str
    eval_split: str
    reward: str
    prompt_tokens: tuple[int, int] = (2, 8)
    max_new_tokens: int = 40
    pairs_drop_truncated: bool = True
    sft_max_length: int = 64
    sft_steps: int = 300
    sft_batch_size: int = 64
    sft_lr: float = 2e-3
    n_reviews: int = 40_000
    split_sizes: dict = field(default_factory=lambda: {"prefs": 4_000, "test": 2_000})
    vocab_size: int = 2_000
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 64
    seed: int = 0

    @property
    def sft_dir(self) -> str:
        return str(Path(self.root) / "sft")

    @property
    def pairs_dir(self) -> str:
        return str(Path(self.root) / "pairs")

    def describe(self) -> str:
        """One line per field, for a notebook's config cell."""
        return "\n".join(f"{k:>15}: {v}" for k, v in asdict(self).items())


def tiny_world(root: str | os.PathLike | None = None, **overrides) -> World:
    """The offline world. ``root`` defaults to ``cache_dir()/"tiny"``; tests pass a temporary folder
    and smaller sizes (``n_reviews=2000, sft_steps=20``)."""
    root_path = Path(root) if root is not None else cache_dir() / "tiny"
    root_path = root_path.expanduser().resolve()
    corpus = root_path / "corpus"
    world = World(
        profile="tiny",
        root=str(root_path),
        base_model=str(root_path / "base"),
        tokenizer_name=str(root_path / "tokenizer"),
        dataset_name="json",
        data_files={s: str(corpus / f"{s}.jsonl") for s in ("train", "prefs", "test")},
        sft_split="train",
        pairs_split="prefs",
        eval_split="test",
        reward="vader",
    )
    return replace(world, **overrides)


def gpt2_world(root: str | os.PathLike | None = None, reward: str = DEFAULT_CLASSIFIER,
               **overrides) -> World:
    """GPT-2 (124 M) + IMDb + a sentiment classifier. SFT on IMDb ``train`` reviews (cut to 128
    tokens), pair prompts from ``unsupervised`` (50 k unlabelled reviews), evaluation prompts from
    ``test``."""
    root_path = Path(root) if root is not None else cache_dir() / "gpt2"
    world = World(
        profile="gpt2",
        root=str(root_path.expanduser().resolve()),
        base_model="gpt2",
        tokenizer_name="gpt2",
        dataset_name="stanfordnlp/imdb",
        data_files=None,
        sft_split="train",
        pairs_split="unsupervised",
        eval_split="test",
        reward=reward,
        max_new_tokens=48,
        pairs_drop_truncated=False,
        sft_max_length=128,
        sft_steps=1_000,
        sft_batch_size=32,
        sft_lr=5e-5,
        n_positions=1024,
    )
    return replace(world, **overrides)


def get_world(profile: str | None = None, **overrides) -> World:
    """The world for ``profile`` (default: ``choose_profile()``, i.e. ``$DPO_PROFILE`` or auto)."""
    chosen = choose_profile(profile)
    return tiny_world(**overrides) if chosen == "tiny" else gpt2_world(**overrides)


BUILD_THREADS = 1


def build_threads(device):
    """Run a build step on ``BUILD_THREADS`` torch CPU threads (restored afterwards) when on CPU.

    Why one thread: (1) reproducibility -- the float sums of a matmul split over 2 threads round
    differently (weights differed by 2.5e-6 after 15 SFT steps), which after 300 steps changes
    samples, pairs and every number a notebook prints; with a fixed thread count the tiny world
    is the same whether CI's build command or a notebook built it. (2) speed on a shared machine:
    with the 2 cores oversubscribed (load ~10), one SFT step took 0.6 s on 1 thread and 4-6 s on
    2 (OpenMP threads spin-wait for each other). On an idle 2-core machine 1 thread costs little
    for a 1 M-parameter model.
    """
    import torch

    return torch_threads(BUILD_THREADS if torch.device(device).type == "cpu" else None)


@contextmanager
def atomic_build_dir(path: str | os.PathLike, keep_existing=None):
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename.

    Two processes building the same world at once (two notebooks started together) each write
    their own temporary folder. ``keep_existing()`` is asked at the end: if ``path`` exists and it
    says True (another process finished an up-to-date copy first), ours is discarded instead.
    """
    path = Path(path)
    tmp = path.with_name(path.name + f".building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        if keep_existing is not None and keep_existing():
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(path, ignore_errors=True)
    try:
        tmp.rename(path)
    except OSError:
        if not path.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # someone else renamed theirs in between: keep it


def _spec(world: World) -> dict:
    """What the built artifacts depend on: every setting except where they live (paths inside
    ``root`` are written relative to it, so a moved cache still matches)."""
    from helpers.corpus import CORPUS_VERSION

    spec = asdict(world)
    spec.pop("root")
    spec["corpus_version"] = CORPUS_VERSION
    spec["world_version"] = WORLD_VERSION
    return _relative_to_root(json.loads(json.dumps(spec)), world.root)  # tuples -> lists


def _relative_to_root(spec: dict, root: str) -> dict:
    """``spec`` with the prefix ``root`` of every path replaced by ``<root>``."""
    text = json.dumps(spec)
    return json.loads(text.replace(json.dumps(str(root))[1:-1], "<root>"))


def stage_is_current(world: World, folder: str | os.PathLike) -> bool:
    """Was ``folder`` (one build stage) built with this world's settings?

    Each stage stamps its folder with the settings it was built from (``STAGE_STAMP``, written
    inside the temporary folder before the atomic rename). The root's ``world.json`` alone is not
    enough: a process still running older code could finish a stage after a newer one claimed
    the root.
    """
    stamp = Path(folder) / STAGE_STAMP
    if not stamp.exists():
        return False
    try:
        return _relative_to_root(json.loads(stamp.read_text()), world.root) == _spec(world)
    except json.JSONDecodeError:
        return False


def stamp_stage(world: World, folder: Path) -> None:
    """Write the settings stamp that ``stage_is_current`` reads into a stage's folder."""
    (folder / STAGE_STAMP).write_text(json.dumps(_spec(world), indent=1))


def check_world_spec(world: World) -> None:
    """Make ``world.root`` hold artifacts of *these* settings: if it was built with other ones
    (another seed, size, or corpus version), delete them so the ``build_*`` functions start over.
    The settings are stored in ``world.root/world.json``."""
    root = Path(world.root)
    spec_file = root / "world.json"
    spec = _spec(world)
    if spec_file.exists():
        try:
            if _relative_to_root(json.loads(spec_file.read_text()), world.root) == spec:
                return
        except json.JSONDecodeError:
            pass
    stale = [p for p in root.iterdir() if p.name != "world.json" and ".building-" not in p.name] if root.exists() else []
    if stale:
        print(f"{root} holds a world built with other settings: rebuilding it")
        for path in stale:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    tmp = spec_file.with_name(f"world.json.{os.getpid()}")
    tmp.write_text(json.dumps(spec, indent=1))
    tmp.replace(spec_file)


# ----------------------------------------------------------------------------------------------
# reviews


def build_corpus(world: World, force: bool = False) -> None:
    """tiny: generate ``n_reviews`` distinct reviews and write the split files (JSON lines).

    The splits are disjoint: ``prefs`` and ``test`` take ``split_sizes`` reviews, ``train`` the rest.
    gpt2: nothing to build (IMDb comes from the hub).
    """
    check_world_spec(world)
    if world.profile != "tiny":
        return
    folder = Path(next(iter(world.data_files.values()))).parent
    if not force and stage_is_current(world, folder) and all(Path(f).exists() for f in world.data_files.values()):
        return
    from helpers.corpus import generate_reviews

    reviews = generate_reviews(world.n_reviews, seed=world.seed)
    sizes = dict(world.split_sizes)
    n_train = len(reviews) - sum(sizes.values())
    if n_train <= 0:
        raise ValueError(f"n_reviews={world.n_reviews} leaves no training reviews after {sizes}")
    splits, start = {"train": reviews[:n_train]}, n_train
    for name, size in sizes.items():
        splits[name] = reviews[start:start + size]
        start += size
    with atomic_build_dir(folder, lambda: not force and stage_is_current(world, folder)) as tmp:
        stamp_stage(world, tmp)
        for name, texts in splits.items():
            with open(tmp / Path(world.data_files[name]).name, "w") as f:
                for text in texts:
                    f.write(json.dumps({"text": text}) + "\n")


def _clean_review(text: str) -> str:
    """IMDb reviews carry HTML line breaks; make them plain text."""
    return " ".join(text.replace("<br />", " ").replace("<br/>", " ").split())


def load_reviews(world: World, split: str) -> list[str]:
    """All review texts of ``split`` via ``datasets.load_dataset`` (the same call for both profiles)."""
    import datasets

    build_corpus(world)
    kwargs = {"data_files": world.data_files} if world.data_files else {}
    ds = datasets.load_dataset(world.dataset_name, split=split, **kwargs)
    return [_clean_review(t) for t in ds["text"]]


# ----------------------------------------------------------------------------------------------
# tokenizer


def build_tokenizer(world: World, force: bool = False) -> None:
    """tiny: train a byte-level BPE (GPT-2's scheme) on the ``train`` reviews and save it so that
    ``AutoTokenizer.from_pretrained(world.tokenizer_name)`` loads it.

    Special tokens: ``<|endoftext|>`` (id 0; EOS and BOS, as in GPT-2) and ``<|pad|>`` (id 1). A pad
    distinct from EOS keeps the "pad = eos hides the EOS" trap out of the tiny world (the gpt2
    profile has it; ``helpers.data`` handles both).
    """
    check_world_spec(world)
    if world.profile != "tiny":
        return
    if not force and stage_is_current(world, world.tokenizer_name):
        return
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = load_reviews(world, world.sft_split)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=world.vocab_size, min_frequency=2, special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN, model_max_length=world.n_positions,
        clean_up_tokenization_spaces=False)  # keep " ." etc. exactly: decode(encode(t)) == t
    with atomic_build_dir(world.tokenizer_name, lambda: not force and stage_is_current(world, world.tokenizer_name)) as tmp:
        tok.save_pretrained(tmp)
        stamp_stage(world, tmp)


def load_tokenizer(world: World):
    """``AutoTokenizer.from_pretrained(world.tokenizer_name)``, with a pad token (GPT-2 has none:
    pad = eos there; ``helpers.data`` masks by lengths, so the EOS is still trained)."""
    from transformers import AutoTokenizer

    build_tokenizer(world)
    tok = AutoTokenizer.from_pretrained(world.tokenizer_name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# ----------------------------------------------------------------------------------------------
# models


def build_base_model(world: World, force: bool = False) -> None:
    """tiny: a randomly initialised GPT-2 (``GPT2Config``) saved so that it loads like ``"gpt2"``.

    bos/eos/pad ids in the config and generation config match the tokenizer (otherwise every load
    and every ``generate`` warns).
    """
    check_world_spec(world)
    if world.profile != "tiny":
        return
    if not force and stage_is_current(world, world.base_model):
        return
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = load_tokenizer(world)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=world.n_positions, n_embd=world.n_embd,
        n_layer=world.n_layer, n_head=world.n_head, bos_token_id=tok.bos_token_id,
        # no dropout: SFT sees each review about once, so there is nothing to regularise, and
        # dropout would slow a 500-step run down
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(world.seed)
        model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    with atomic_build_dir(world.base_model, lambda: not force and stage_is_current(world, world.base_model)) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        stamp_stage(world, tmp)


def load_base_model(world: World, device=None):
    """``AutoModelForCausalLM.from_pretrained(world.base_model)`` (built first if tiny and missing)."""
    from transformers import AutoModelForCausalLM

    build_base_model(world)
    model = AutoModelForCausalLM.from_pretrained(world.base_model)
    return model.to(device) if device is not None else model


def build_sft_model(world: World, force: bool = False, device=None, progress: bool = True,
                    n_eval: int = 500) -> dict | None:
    """Fine-tune the base model on the ``sft_split`` reviews (``helpers.sft.train_sft``) and save it
    to ``world.sft_dir`` together with the tokenizer and ``sft_history.json``.

    Returns:
        the ``train_sft`` result (losses), or None if the model was already built.
    """
    check_world_spec(world)
    if not force and stage_is_current(world, world.sft_dir):
        return None
    from helpers.config import get_device
    from helpers.sft import train_sft

    device = device or get_device()
    tok = load_tokenizer(world)
    model = load_base_model(world, device=device)
    texts = load_reviews(world, world.sft_split)
    eval_texts = load_reviews(world, world.eval_split)[:n_eval]
    with build_threads(device):
        result = train_sft(model, tok, texts, steps=world.sft_steps, batch_size=world.sft_batch_size,
                           lr=world.sft_lr, max_length=world.sft_max_length, seed=world.seed,
                           eval_texts=eval_texts, device=device, progress=progress)
    with atomic_build_dir(world.sft_dir, lambda: not force and stage_is_current(world, world.sft_dir)) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "sft_history.json").write_text(json.dumps(result, indent=1))
        stamp_stage(world, tmp)
    return result


def load_sft_model(world: World, device=None):
    """pi_ref: ``AutoModelForCausalLM.from_pretrained(world.sft_dir)``, built first if missing.

    Returned in eval mode (no dropout), on ``device`` if given.
    """
    from transformers import AutoModelForCausalLM

    build_sft_model(world)
    model = AutoModelForCausalLM.from_pretrained(world.sft_dir)
    model.eval()
    return model.to(device) if device is not None else model


def load_sft_history(world: World) -> dict:
    """The SFT loss history saved next to the SFT model (``train_sft``'s result)."""
    build_sft_model(world)
    return json.loads(Path(world.sft_dir, "sft_history.json").read_text())


# ----------------------------------------------------------------------------------------------
# prompts and reward


def make_prompt(text: str, tokenizer, n_tokens: int) -> str | None:
    """The first ~``n_tokens`` tokens of ``text`` as a string, cut at a pre-token boundary.

    The cut moves left (then right) from ``n_tokens`` to the nearest token that starts a new
    pre-token (a word with its leading space, or punctuation), so the continuation re-tokenizes to
    the same ids on its own (see the module docstring). Returns None if no cut leaves both a
    non-empty prompt and a non-empty continuation.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    pieces = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
    starts = {start for _, (start, _) in pieces}
    ok = [i for i in range(1, len(offsets)) if offsets[i][0] in starts]  # cut before token i
    if not ok:
        return None
    cut = min(ok, key=lambda i: (abs(i - n_tokens), i > n_tokens))
    return text[: offsets[cut][0]]


def get_prompts(world: World, split: str | None = None, n: int = 200, seed: int = 0,
                tokenizer=None) -> list[str]:
    """``n`` prompts: prefixes of ``prompt_tokens`` (2-8) tokens of reviews from ``split``.

    Deterministic for ``seed``: the same reviews and lengths each time. Default split: the
    held-out ``eval_split``.
    """
    split = split or world.eval_split
    tokenizer = tokenizer or load_tokenizer(world)
    reviews = load_reviews(world, split)
    rng = random.Random(seed)
    order = list(range(len(reviews)))
    rng.shuffle(order)
    lo, hi = world.prompt_tokens
    prompts = []
    for i in order:
        prompt = make_prompt(reviews[i], tokenizer, rng.randint(lo, hi))
        if prompt:
            prompts.append(prompt)
        if len(prompts) == n:
            break
    if len(prompts) < n:
        raise ValueError(f"split {split!r} yields only {len(prompts)} prompts, {n} asked")
    return prompts


def get_reward_fn(world: World, device=None) -> RewardFn:
    """The ground-truth reward of this world: ``reward_fn(texts) -> list[float]``."""
    return make_reward_fn(world.reward, device=device)


# ----------------------------------------------------------------------------------------------
# one command


def build_world(world: World | None = None, force: bool = False, pairs: bool = True,
                progress: bool = True) -> dict:
    """Build every stage that is missing (all of them with ``force``), printing each stage's time.

    Returns:
        {stage: seconds}.
    """
    world = world or tiny_world()
    stages = [("corpus", build_corpus), ("tokenizer", build_tokenizer),
              ("base model", build_base_model),
              ("sft model", lambda w, force: build_sft_model(w, force=force, progress=progress))]
    if pairs:
        from helpers.pairs import build_pairs_for_world  # layer 3, imported only by this command

        stages.append(("pairs", lambda w, force: build_pairs_for_world(w, force=force, progress=progress)))
    timings = {}
    print(f"building {world.root}", flush=True)
    for name, build in stages:
        start, cpu_start = time.perf_counter(), time.process_time()
        build(world, force=force)
        timings[name] = time.perf_counter() - start
        # CPU seconds tell what the stage costs on its own when the machine is shared
        cpu = time.process_time() - cpu_start
        print(f"{name:>10}: {timings[name]:6.1f} s  (CPU {cpu:6.1f} s)", flush=True)
    print(f"{'total':>10}: {sum(timings.values()):6.1f} s  ({world.root})")
    return timings


def world_report(world: World, n_prompts: int = 200, n_samples_per_prompt: int = 4, seed: int = 0,
                 n_examples: int = 5) -> dict:
    """The numbers that describe a built world (for docs/tiny_world.md): corpus, vocabulary, SFT
    losses, a few SFT samples, reward/KL of the SFT model against itself, pair statistics."""
    import numpy as np

    from helpers.corpus import content_words
    from helpers.evaluate import evaluate_policy, sample_policy, word_rate
    from helpers.pairs import load_pairs_stats

    tok = load_tokenizer(world)
    splits = {s: load_reviews(world, s) for s in (world.sft_split, world.pairs_split, world.eval_split)}
    everything = [t for texts in splits.values() for t in texts]
    history = load_sft_history(world)
    model = load_sft_model(world)
    prompts = get_prompts(world, world.eval_split, n_prompts, seed=seed, tokenizer=tok)
    examples = sample_policy(model, tok, prompts[:n_examples], 1, world.max_new_tokens, seed=seed,
                             progress=False)
    reward_fn = get_reward_fn(world)
    result = evaluate_policy(model, model, tok, prompts, reward_fn, n_samples_per_prompt,
                             world.max_new_tokens, seed=seed, progress=False)
    from helpers.corpus import GOODHART_WORD

    return {
        "reviews": {s: len(t) for s, t in splits.items()},
        "distinct_reviews": len(set(everything)),
        "content_words": len(content_words(everything)),
        "vocab_size": len(tok),
        "tokens_per_review": float(np.mean([len(ids) + 1 for ids in tok(splits[world.eval_split])["input_ids"]])),
        "corpus_reward_mean": float(np.mean(reward_fn(splits[world.eval_split]))),
        "corpus_reward_std": float(np.std(reward_fn(splits[world.eval_split]))),
        "n_params": history["n_params"], "sft_steps": world.sft_steps,
        "sft_batch_size": world.sft_batch_size, "sft_seconds": history["seconds"],
        "sft_train_loss": history.get("final_train_eval_loss"), "sft_eval_loss": history["final_eval_loss"],
        "examples": [p + r + ("" if e else " [no EOS]") for p, r, e in
                     zip(examples["prompt"], examples["response"], examples["ended"])],
        "sft_reward_mean": result["reward_mean"], "sft_reward_se": result["reward_se"],
        "sft_reward_std": float(np.std(result["rewards"])),
        "sft_kl_self": result["kl_mean"], "sft_length_mean": result["length_mean"],
        "sft_eos_rate": result["eos_rate"], "sft_exclaim_rate": result["exclaim_rate"],
        "sft_goodhart_rate": word_rate(result["responses"], GOODHART_WORD),
        "eval": {"n_prompts": n_prompts, "n_samples_per_prompt": n_samples_per_prompt},
        "pairs": load_pairs_stats(world),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.world",
                                     description="Build the tiny world into helpers.config.cache_dir().")
    parser.add_argument("command", choices=["build", "report"],
                        help="build: every missing stage (and print timings); report: print its numbers as JSON")
    parser.add_argument("--force", action="store_true", help="rebuild every stage from nothing")
    parser.add_argument("--no-pairs", action="store_true", help="stop after the SFT model")
    args = parser.parse_args(argv)
    set_hub_offline()
    if args.command == "build":
        build_world(tiny_world(), force=args.force, pairs=not args.no_pairs)
    else:
        print(json.dumps(world_report(tiny_world()), indent=1))


if __name__ == "__main__":
    main()
