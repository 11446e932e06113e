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

Profile choice and sizes: ``helpers.profiles``. Every ``load_*`` builds what is missing, so each
notebook runs standalone; ``python -m helpers.build build [--force]`` builds the whole tiny world
(corpus, tokenizer, SFT model, preference pairs) up front and prints the time of each stage. Each
stage is an artifact of ``helpers.cache``: stamped with the world's settings, written to a
temporary folder and renamed, under a file lock -- an interrupted build never loads, a world of
other settings is rebuilt.

Prompt/response split (read this before tokenizing pairs): GPT-2-style byte-level BPE attaches the
space *before* a word to that word (" great" is one token). A prompt is therefore the text of the
first n tokens with no trailing space ("the acting was") and a response starts with a space
(" great. i loved it."). Prompts are cut only at pre-token boundaries (never inside a word), so
tokenizing prompt and response separately and concatenating the ids -- what ``helpers.data`` does
-- gives exactly the ids of the whole text.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from helpers.cache import artifact_problems, build_artifact, fingerprint, is_built
from helpers.config import cache_dir, torch_threads
from helpers.profiles import SFT_EVAL_SIZES, choose_profile, sizes, world_sizes
from helpers.rewards import DEFAULT_CLASSIFIER, RewardFn, make_reward_fn

# Bump to invalidate every cached world (e.g. when how a stage is built changes): every stage's
# spec changes, so each is rebuilt, and so is everything built from it (pairs, DPO runs).
WORLD_VERSION = 2
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


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
    # sizes: no defaults here, their one home is helpers.profiles.WORLD_SIZES
    prompt_tokens: tuple[int, int]
    max_new_tokens: int
    pairs_drop_truncated: bool
    sft_max_length: int
    sft_steps: int
    sft_batch_size: int
    sft_lr: float
    n_reviews: int
    split_sizes: dict
    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    seed: int

    @property
    def sft_dir(self) -> str:
        return str(Path(self.root) / "sft")

    @property
    def pairs_dir(self) -> str:
        return str(Path(self.root) / "pairs")

    def describe(self) -> str:
        """One line per field, for a notebook's config cell (paths as ``helpers.config.display_path``
        prints them: relative to the repository or the cache, never this machine's absolute path)."""
        return "\n".join(f"{k:>15}: {shown(v)}" for k, v in asdict(self).items())


def shown(value):
    """``value`` for printing: an absolute path through ``display_path`` (also inside a dict);
    anything else (a hub id such as "gpt2", a number) as it is."""
    from helpers.config import display_path

    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, str) and os.path.isabs(value):
        return display_path(value)
    return value


def default_root(profile: str) -> Path:
    """``cache_dir()/<profile>``; under ``DPO_SCALE=smoke``, ``cache_dir()/<profile>-smoke``, so a
    rehearsal's shrunken models never overwrite the real ones."""
    from helpers.profiles import scale

    return cache_dir() / (profile if scale() == "full" else f"{profile}-{scale()}")


def _own_root(profile: str, root, defaults: World, overrides: dict) -> Path:
    """Where a world lives: ``root`` when given; at the default cache, ``<profile>`` -- or, for a world
    whose settings differ from its profile's, ``<profile>-<fingerprint of the changes>``: a
    ``get_world(sft_steps=2)`` must never replace the default world's SFT model at ``<profile>/sft``."""
    if root is not None:
        return Path(root).expanduser().resolve()
    changed = {k: v for k, v in sorted(overrides.items()) if getattr(defaults, k) != v}
    fixed = default_root(profile).expanduser().resolve()
    return fixed.with_name(f"{fixed.name}-{fingerprint(changed)}") if changed else fixed


def tiny_world(root: str | os.PathLike | None = None, **overrides) -> World:
    """The offline world. ``root`` defaults to ``cache_dir()/"tiny"`` (a folder of its own when
    ``overrides`` change a setting); tests pass a temporary folder and smaller sizes
    (``n_reviews=2000, sft_steps=20``)."""

    def at(root_path: Path) -> World:
        corpus = root_path / "corpus"
        return World(
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
            **world_sizes("tiny"),
        )

    defaults = at(default_root("tiny").expanduser().resolve())
    return replace(at(_own_root("tiny", root, defaults, overrides)), **overrides)


def gpt2_world(root: str | os.PathLike | None = None, reward: str = DEFAULT_CLASSIFIER,
               **overrides) -> World:
    """GPT-2 (124 M) + IMDb + a sentiment classifier. SFT on IMDb ``train`` reviews (cut to 128
    tokens), pair prompts from ``unsupervised`` (50 k unlabelled reviews), evaluation prompts from
    ``test``."""

    def at(root_path: Path) -> World:
        return World(
            profile="gpt2",
            root=str(root_path),
            base_model="gpt2",
            tokenizer_name="gpt2",
            dataset_name="stanfordnlp/imdb",
            data_files=None,
            sft_split="train",
            pairs_split="unsupervised",
            eval_split="test",
            reward=DEFAULT_CLASSIFIER,
            **world_sizes("gpt2"),
        )

    overrides = {"reward": reward, **overrides}
    defaults = at(default_root("gpt2").expanduser().resolve())
    return replace(at(_own_root("gpt2", root, defaults, overrides)), **overrides)


def saved_results_world() -> World:
    """The world the saved results in ``data/`` (``frontier.json``, ``dpo_diagnosis.json``) were
    made on: the tiny world at its full sizes, whatever ``DPO_SCALE`` says."""
    import copy

    from helpers.profiles import WORLD_SIZES

    return tiny_world(cache_dir() / "tiny", **copy.deepcopy(WORLD_SIZES["tiny"]))


def get_world(profile: str | None = None, **overrides) -> World:
    """The world for ``profile`` (default: ``choose_profile()``, i.e. ``$DPO_PROFILE`` or auto)."""
    chosen = choose_profile(profile)
    return tiny_world(**overrides) if chosen == "tiny" else gpt2_world(**overrides)



def start_notebook(seed: int = 0):
    """What notebooks 04-07 do first: quiet the libraries, seed, choose the world and the device.

    * transformers' progress bars and warnings off, so outputs show the course, not the library;
    * ``seed_everything(seed)``;
    * ``get_world()`` (``$DPO_PROFILE``: tiny or gpt2; auto picks) and ``get_device()``;
    * one torch thread for the tiny profile on CPU: a 1 M-parameter model gains little from a
      second thread, and on a busy 2-core machine one thread ran the course's sampling 3-4x faster
      than two (measured; see ``helpers.config.torch_threads``).

    Returns:
        (world, device)
    """
    import torch
    import transformers

    from helpers.config import get_device, seed_everything

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    seed_everything(seed)
    world = get_world()
    device = get_device()
    if world.profile == "tiny" and device.type == "cpu":
        torch.set_num_threads(1)
    restore_saved_world(world)
    if world.profile != "tiny" and not stage_is_current(world, world.sft_dir, "sft model"):
        print(f"the {world.profile} SFT model is not built yet: building it takes {_t4_minutes('SFT build')} on a "
              f"Colab T4 ({_t4_minutes('pairs build')} more for the pairs). To build it once and reuse it in every "
              f"fresh runtime: run `helpers.world.save_world(world, folder)` after this notebook (a Google Drive "
              f"folder in Colab) and set {SAVED_WORLD_ENV}=folder before the next one.")
    return world, device


# ----------------------------------------------------------------------------------------------
# a built world, saved and restored (Colab: every notebook opens a fresh runtime)

SAVED_WORLD_ENV = "DPO_SAVED_WORLD"
DRIVE_FOLDER = "/content/drive/MyDrive/dpo-from-scratch"  # looked in when Google Drive is mounted in Colab


def _t4_minutes(part: str) -> str:
    """``part``'s computed T4 minutes (``data/t4_budget.json``, by ``benchmarks/t4_budget.py``)."""
    from helpers.config import DATA_DIR

    try:
        minutes = json.loads((DATA_DIR / "t4_budget.json").read_text())["minutes"]["T4"]
        value = next(v for k, v in minutes.items() if k.startswith(part))
    except (OSError, KeyError, StopIteration, ValueError):
        return "(no estimate: run benchmarks/t4_budget.py)"
    return f"about {value:.0f} min (computed, benchmarks/t4_budget.py)"


def _world_artifacts(root: Path, world: World) -> tuple[list[tuple[Path, dict]], list[Path]]:
    """Every complete artifact under ``root`` (folders holding ``spec.json``, up to 3 levels deep)
    made from ``world`` -- its stages (their spec names the world) and its DPO runs (their spec names
    the SFT weights under ``root``) -- as (path relative to ``root``, its spec); and the ``spec.json``
    files that cannot be read (cut, not UTF-8, not JSON), which a caller names instead of skipping."""
    from helpers.cache import SPEC_FILE, file_fingerprint

    mine = _spec(world)
    sft_dir = root / Path(world.sft_dir).relative_to(world.root)  # the cache's or the save's SFT model
    weights = next(sft_dir.glob("*.safetensors"), None) if sft_dir.is_dir() else None
    sft = file_fingerprint(weights) if weights is not None else None
    found, damaged = [], []
    for depth in ("*", "*/*", "*/*/*"):
        for spec_file in sorted(root.glob(f"{depth}/{SPEC_FILE}")):
            if ".tmp-" in str(spec_file):
                continue
            try:
                spec = json.loads(spec_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
                damaged.append(spec_file)
                continue
            if not isinstance(spec, dict):
                damaged.append(spec_file)
            elif spec.get("world") == mine or (sft is not None and spec.get("artifact") == "dpo run"
                                               and spec.get("sft") == sft):
                found.append((spec_file.parent.relative_to(root), spec))
    return found, damaged


def _copy_artifacts(src_root: Path, dst_root: Path, world: World) -> list[str]:
    """Copy ``world``'s complete artifacts from ``src_root`` to ``dst_root`` (each through
    ``build_artifact``: a temporary sibling, renamed; one already there and current is kept). A
    damaged one (a cut spec.json, a half-copied or altered file) is named and not copied."""
    from helpers.cache import SPEC_FILE

    copied = []
    found, damaged = _world_artifacts(src_root, world)
    for path in damaged:
        print(f"skipped {path}: its spec.json cannot be read (cut or damaged): that artifact is not copied")
    for rel, spec in found:
        src, dst = src_root / rel, dst_root / rel
        if is_built(dst, spec):
            continue
        broken = artifact_problems(src, digests=True)
        if broken:  # a half-copied save, a flipped byte: never taken for the artifact
            print(f"skipped {src}: " + "; ".join(broken) + " -- that artifact is not copied")
            continue

        def copy(tmp: Path, src=src) -> None:
            for item in src.iterdir():
                if item.name == SPEC_FILE:
                    continue
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)

        build_artifact(dst, spec, copy)
        copied.append(rel.as_posix())
    return copied


def saved_world_dir(world: World, folder: str | os.PathLike) -> Path:
    """Where ``save_world`` keeps ``world`` in ``folder``: ``folder/<profile>/<world fingerprint>``, so
    worlds of other settings (a smoke rehearsal, another ``sft_steps``) share a folder side by side."""
    return Path(folder).expanduser() / world.profile / world_fingerprint(world)


def save_world(world: World, folder: str | os.PathLike) -> list[str]:
    """Copy every built stage of ``world`` (SFT model, pairs, reward model) and its DPO runs, each
    checked by its ``spec.json``, to ``saved_world_dir(world, folder)``, e.g. in a Google Drive
    folder. Saves of other worlds in ``folder`` are left as they are. Returns what was copied."""
    dst = saved_world_dir(world, folder)
    copied = _copy_artifacts(Path(world.root), dst, world)
    print(f"saved {len(copied)} artifacts of the {world.profile} world {world_fingerprint(world)} to {dst}: "
          + (", ".join(copied) or "nothing new")
          + f". To restore it in a fresh runtime: {SAVED_WORLD_ENV}={Path(folder).expanduser()}")
    return copied


def _save_in(folder: Path, world: World) -> Path | None:
    """The save of ``world`` that ``folder`` points at, or None: ``folder`` may be what ``save_world``
    was given, its ``<profile>`` folder (the path ``save_world`` printed), the save itself, or a save
    of the earlier layout (``folder/<profile>`` holding the stages directly)."""
    fp = world_fingerprint(world)
    for d in (folder / world.profile / fp, folder / fp, folder / world.profile, folder):
        if d.is_dir() and any(d.glob("*/spec.json")):
            return d
    return None


def _saves_listed(folder: Path, profile: str) -> list[str]:
    """The world fingerprints saved in ``folder`` (or in its ``<profile>`` folder)."""
    return sorted({d.name for base in (folder / profile, folder) if base.is_dir() for d in base.iterdir()
                   if d.is_dir() and re.fullmatch(r"[0-9a-f]{12}", d.name)})


def restore_saved_world(world: World, folder: str | os.PathLike | None = None) -> list[str]:
    """Copy into the cache what ``save_world`` saved of *this* world (same settings: every spec is
    compared) from ``folder`` (default ``$DPO_SAVED_WORLD``, else the Drive folder when mounted).
    Saves of other settings are left where they are. Returns what was copied.

    A folder that was asked for (``folder`` or ``$DPO_SAVED_WORLD``) and yields nothing says why: it
    does not exist, or it holds no save of this world (and which worlds it does hold)."""
    asked = folder if folder is not None else os.environ.get(SAVED_WORLD_ENV)
    candidates = [(asked, True)] if folder is not None else [(asked, True), (DRIVE_FOLDER, False)]
    copied = []
    for candidate, explicit in candidates:
        if not candidate:
            continue
        root = Path(candidate).expanduser()
        if not root.is_dir():
            if explicit:
                print(f"nothing restored: {SAVED_WORLD_ENV if folder is None else 'the folder'} {root} does not "
                      "exist (give the folder save_world was given)")
            continue
        save = _save_in(root, world)
        if save is not None and _world_artifacts(save, world)[0]:
            copied += _copy_artifacts(save, Path(world.root), world)
        elif explicit:
            others = _saves_listed(root, world.profile)
            print(f"nothing restored from {root}: it holds no save of this {world.profile} world "
                  f"{world_fingerprint(world)}" + (f" (worlds saved there: {', '.join(others)})" if others else ""))
    if copied:
        print(f"restored from a saved {world.profile} world: {', '.join(copied)}")
    return copied

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


def _spec(world: World) -> dict:
    """What the built artifacts depend on: every setting except where they live (paths inside
    ``root`` are written relative to it, so a moved cache still matches)."""
    from helpers.corpus import CORPUS_VERSION

    spec = asdict(world)
    spec.pop("root")
    spec["corpus_version"] = CORPUS_VERSION
    spec["world_version"] = WORLD_VERSION
    return _relative_to_root(json.loads(json.dumps(spec)), world.root)  # tuples -> lists


def world_spec(world: World) -> dict:
    """Everything a world's artifacts depend on (paths inside ``root`` relative to it): the input
    fingerprint of every artifact built from this world."""
    return _spec(world)


def world_fingerprint(world: World) -> str:
    """A short hash of ``world_spec``: results computed on a world (a saved sweep) carry it, and are
    refused by a world with another one."""
    return fingerprint(world_spec(world))


def load_world_results(path: str | os.PathLike, world: World, rebuild: str) -> dict:
    """Results saved as JSON by a long script (a sweep), refused unless made on ``world``.

    Args:
        path: the JSON file; it records ``world_fingerprint``.
        rebuild: the command that remakes it, named in the error.
    Raises:
        ValueError: the file was made on another world (both fingerprints and ``rebuild`` in the message).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror}); make it with `{rebuild}`") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text, not the JSON `{rebuild}` writes") from None
    try:
        results = json.loads(text)
    except ValueError as exc:
        conflict = any(line.startswith(("<<<<<<<", ">>>>>>>")) for line in text.splitlines())
        raise ValueError(f"{path}: not JSON ({exc})" + (
            ": it holds git conflict markers (<<<<<<< ... >>>>>>>) -- take one side, e.g. "
            f"`git checkout --theirs {path}` or `git checkout --ours {path}`, or remake it with `{rebuild}`"
            if conflict else f"; remake it with `{rebuild}`")) from None
    if not isinstance(results, dict):
        raise ValueError(f"{path}: expected a JSON object of results; remake it with `{rebuild}`")
    mine = world_fingerprint(world)
    if results.get("world_fingerprint") != mine:
        raise ValueError(f"{Path(path).name} was made on another world (fingerprint "
                         f"{results.get('world_fingerprint')!r}; this world's is {mine!r}): rebuild it with `{rebuild}`")
    return results


def stage_spec(world: World, stage: str) -> dict:
    """The ``helpers.cache`` spec of one build stage."""
    return {"stage": stage, "world": _spec(world)}


def stage_is_current(world: World, folder, stage: str) -> bool:
    """Was ``folder`` (one build stage) built with this world's settings?"""
    return is_built(folder, stage_spec(world, stage))


def _relative_to_root(spec: dict, root: str) -> dict:
    """``spec`` with the prefix ``root`` of every path replaced by ``<root>``."""
    text = json.dumps(spec)
    return json.loads(text.replace(json.dumps(str(root))[1:-1], "<root>"))


# ----------------------------------------------------------------------------------------------
# reviews


def build_corpus(world: World, force: bool = False) -> None:
    """tiny: generate ``n_reviews`` distinct reviews and write the split files (JSON lines).

    The splits are disjoint: ``prefs`` and ``test`` take ``split_sizes`` reviews, ``train`` the rest.
    gpt2: nothing to build (IMDb comes from the hub).
    """
    if world.profile != "tiny":
        return
    folder = Path(next(iter(world.data_files.values()))).parent
    if not force and stage_is_current(world, folder, "corpus"):
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

    def write(tmp: Path) -> None:
        for name, texts in splits.items():
            with open(tmp / Path(world.data_files[name]).name, "w") as f:
                for text in texts:
                    f.write(json.dumps({"text": text}) + "\n")

    build_artifact(folder, stage_spec(world, "corpus"), write, force=force)


def _clean_review(text: str) -> str:
    """IMDb reviews carry HTML line breaks; make them plain text."""
    return " ".join(text.replace("<br />", " ").replace("<br/>", " ").split())


def load_reviews(world: World, split: str) -> list[str]:
    """All review texts of ``split`` via ``datasets.load_dataset`` (the same call for both profiles)."""
    import datasets

    build_corpus(world)
    kwargs = {"data_files": world.data_files} if world.data_files else {}
    # The first load into a fresh ~/.cache draws a "Generating split" bar, later ones draw none: a
    # notebook's output would depend on the state of a cache. So no bar (restored afterwards).
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(world.dataset_name, split=split, **kwargs)
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
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
    if world.profile != "tiny":
        return
    if not force and stage_is_current(world, world.tokenizer_name, "tokenizer"):
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
    build_artifact(world.tokenizer_name, stage_spec(world, "tokenizer"), tok.save_pretrained, force=force)


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
    if world.profile != "tiny":
        return
    if not force and stage_is_current(world, world.base_model, "base model"):
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

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    build_artifact(world.base_model, stage_spec(world, "base model"), write, force=force)


def load_base_model(world: World, device=None):
    """``AutoModelForCausalLM.from_pretrained(world.base_model)`` (built first if tiny and missing)."""
    from transformers import AutoModelForCausalLM

    build_base_model(world)
    model = AutoModelForCausalLM.from_pretrained(world.base_model)
    return model.to(device) if device is not None else model


def build_sft_model(world: World, force: bool = False, device=None, progress: bool = True) -> dict | None:
    """Fine-tune the base model on the ``sft_split`` reviews (``helpers.sft.train_sft``) and save it
    to ``world.sft_dir`` together with the tokenizer and ``sft_history.json``.

    Returns:
        the ``train_sft`` result (losses), or None if the model was already built.
    """
    if not force and stage_is_current(world, world.sft_dir, "sft model"):
        return None
    from helpers.config import get_device
    from helpers.sft import train_sft

    device = device or get_device()
    tok = load_tokenizer(world)
    model = load_base_model(world, device=device)
    texts = load_reviews(world, world.sft_split)
    held_out = sizes(SFT_EVAL_SIZES, world.profile)
    eval_texts = load_reviews(world, world.eval_split)[:held_out["n_eval_texts"]]
    with build_threads(device):
        result = train_sft(model, tok, texts, steps=world.sft_steps, batch_size=world.sft_batch_size,
                           lr=world.sft_lr, max_length=world.sft_max_length, seed=world.seed,
                           eval_texts=eval_texts, device=device, progress=progress,
                           eval_batch_size=held_out["eval_batch_size"])

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "sft_history.json").write_text(json.dumps(result, indent=1))

    build_artifact(world.sft_dir, stage_spec(world, "sft model"), write, force=force)
    return result


def load_sft_model(world: World, device=None):
    """pi_ref: ``AutoModelForCausalLM.from_pretrained(world.sft_dir)``, built first if missing.

    Returned in eval mode (no dropout), on ``device`` if given.
    """
    from transformers import AutoModelForCausalLM

    build_sft_model(world)
    damaged = artifact_problems(world.sft_dir, digests=True)  # a flipped byte must not load in silence
    if damaged:
        print(f"the SFT model in the cache is damaged ({'; '.join(damaged)}): rebuilding it")
        build_sft_model(world, force=True)
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
