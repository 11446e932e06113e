"""RLHF's reward model: a GPT-2 backbone with a scalar head, trained on preference pairs with the
Bradley-Terry loss (``helpers.losses.bradley_terry_loss``).

    score(x, y) = w . h_last + b,   h_last = the backbone's hidden state at the last non-pad token

The last token is the only position of a causal model that has attended to the whole text, so its
hidden state is what the head reads (as in InstructGPT / TRL's reward models). Every text gets an
EOS appended before scoring, so the score is always read at the same kind of token.

API (notebook 01 trains one on review pairs; notebook 08 trains another on DPO's preference pairs):

    model = build_reward_model(vocab_size=len(tok), pad_token_id=tok.pad_token_id)   # or backbone=path
    pairs = make_review_pairs(texts, rewards, n_pairs=4000)        # [{"chosen", "rejected"}, ...]
    history = train_reward_model(model, tok, pairs, steps=300)
    scores = score_texts(model, tok, ["great film.", "dull film."])  # (N,)
    result = evaluate_pairs(model, tok, held_out_pairs)             # {"accuracy", "loss", ...}
    save_reward_model(model, path); model = load_reward_model(path)
    reward, info = load_or_train_pair_reward_model(world)           # notebook 08's, a helpers.cache artifact
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from helpers.cache import artifact_path, build_artifact, records_fingerprint
from helpers.config import autocast, get_device, seed_everything, torch_threads
from helpers.data import pad_rows, pad_token_id_of
from helpers.losses import bradley_terry_loss


class RewardModel(nn.Module):
    """A transformer backbone (``GPT2Model`` or any ``AutoModel``) and a linear head -> one score per text."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (backbone.config.hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scores, shape (B,) float32, read at each row's last non-pad token (left or right padding)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        last = last_token_index(attention_mask)  # (B,)
        h_last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
        return self.head(h_last.float()).squeeze(-1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position whose mask is 1, per row: (B, T) -> (B,). Works for right and left
    padding (``mask.sum() - 1`` would be wrong for left padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * (positions + 1)).argmax(-1)


def build_reward_model(vocab_size: int | None = None, pad_token_id: int | None = None, backbone=None,
                       n_layer: int = 2, n_embd: int = 64, n_head: int = 2, n_positions: int = 64,
                       seed: int = 0) -> RewardModel:
    """A reward model: a fresh small GPT-2 backbone, or a pretrained one.

    Args:
        vocab_size, pad_token_id: for a fresh backbone (from the tokenizer).
        backbone: None (fresh GPT-2 of the given sizes), an absolute path / hub id loaded with
            ``AutoModel.from_pretrained`` (e.g. the SFT model, as InstructGPT starts its reward model
            from the SFT model), or an ``nn.Module`` with a ``.config.hidden_size``.
        seed: initialisation seed (the head, and the backbone when fresh).
    """
    torch.manual_seed(seed)
    if backbone is None:
        from transformers import GPT2Config, GPT2Model

        if vocab_size is None:
            raise ValueError("a fresh backbone needs vocab_size (len(tokenizer))")
        config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_layer=n_layer, n_embd=n_embd,
                            n_head=n_head, pad_token_id=pad_token_id, bos_token_id=0, eos_token_id=0,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        backbone = GPT2Model(config)
    elif isinstance(backbone, (str, Path)):
        from transformers import AutoModel

        backbone = AutoModel.from_pretrained(str(backbone))
    return RewardModel(backbone)


# ----------------------------------------------------------------------------- data


def make_review_pairs(texts, rewards, n_pairs: int, seed: int = 0, min_gap: float = 0.05) -> list[dict]:
    """Preference pairs of whole texts, ranked by a ground-truth reward.

    Two different texts are drawn at random; the one with the higher reward is ``chosen``. Pairs
    whose rewards differ by less than ``min_gap`` are skipped (near-ties carry no signal).

    Returns:
        [{"prompt": "", "chosen": str, "rejected": str, "chosen_reward": float, "rejected_reward": float}]
    """
    if len(texts) != len(rewards):
        raise ValueError(f"{len(texts)} texts but {len(rewards)} rewards")
    rng = random.Random(seed)
    pairs, tries = [], 0
    while len(pairs) < n_pairs:
        tries += 1
        if tries > 50 * n_pairs:
            raise ValueError(f"only {len(pairs)} pairs with reward gap >= {min_gap} after {tries} draws")
        i, j = rng.sample(range(len(texts)), 2)
        if abs(rewards[i] - rewards[j]) < min_gap:
            continue
        win, lose = (i, j) if rewards[i] > rewards[j] else (j, i)
        pairs.append({"prompt": "", "chosen": texts[win], "rejected": texts[lose],
                      "chosen_reward": float(rewards[win]), "rejected_reward": float(rewards[lose])})
    return pairs


def encode_texts(tokenizer, texts, max_length: int = 64, device=None) -> dict:
    """Tokenize texts with an EOS appended, right-padded: {"input_ids", "attention_mask"} (B, T).

    Texts longer than ``max_length`` tokens keep their *last* tokens (the EOS and the end of the
    text), since the score is read at the end.
    """
    eos = tokenizer.eos_token_id
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"][-(max_length - 1):] + [eos] for t in texts]
    input_ids, attention_mask = pad_rows(rows, pad_token_id_of(tokenizer))  # (B, T)
    device = device or torch.device("cpu")
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


# ----------------------------------------------------------------------------- train / score


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def score_pairs_batch(model: RewardModel, tokenizer, pairs: list[dict], max_length: int = 64):
    """Scores of chosen and rejected texts in one forward pass over the stacked (2B, T) batch.

    Returns:
        chosen_scores, rejected_scores: (B,) each.
    """
    texts = [p["prompt"] + p["chosen"] for p in pairs] + [p["prompt"] + p["rejected"] for p in pairs]
    device = _model_device(model)
    batch = encode_texts(tokenizer, texts, max_length, device)
    with autocast(device):
        scores = model(**batch)
    return scores[: len(pairs)].float(), scores[len(pairs):].float()


def train_reward_model(model: RewardModel, tokenizer, pairs: list[dict], steps: int = 300, batch_size: int = 32,
                       lr: float = 2e-3, weight_decay: float = 0.0, seed: int = 0, max_length: int = 64,
                       log_every: int = 10, progress: bool = False, cpu_threads: int | None = 1) -> dict:
    """Minimise the mean Bradley-Terry loss -log sigmoid(s(y_w) - s(y_l)) over random mini-batches.

    ``cpu_threads``: torch threads while training on a CPU (see ``torch_threads``; None = torch's default).

    Returns:
        history: {"step": [...], "loss": [...], "accuracy": [...]} -- the training batch's mean loss
        and pair accuracy (s_w > s_l), averaged over each ``log_every`` steps; plus "seconds".
    """
    seed_everything(seed)
    rng = random.Random(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # 20 warm-up steps, then a linear decay to 0 at ``steps``
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.0, 1 - s / steps))
    history = {"step": [], "loss": [], "accuracy": []}
    t0 = time.time()
    on_cpu = _model_device(model).type == "cpu"
    with torch_threads(cpu_threads if on_cpu else None):
        _train_loop(model, tokenizer, pairs, opt, sched, rng, history, steps, batch_size, max_length, log_every,
                    progress)
    model.eval()
    history["seconds"] = time.time() - t0
    return history


def _train_loop(model, tokenizer, pairs, opt, sched, rng, history, steps, batch_size, max_length, log_every,
                progress):
    acc_loss, acc_correct, acc_n = 0.0, 0.0, 0
    order: list[int] = []
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        batch = [pairs[i] for i in order[:batch_size]]
        del order[:batch_size]
        chosen, rejected = score_pairs_batch(model, tokenizer, batch, max_length)
        loss = bradley_terry_loss(chosen, rejected).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        acc_loss += loss.item()
        acc_correct += (chosen > rejected).float().mean().item()
        acc_n += 1
        if step % log_every == 0 or step == steps:
            history["step"].append(step)
            history["loss"].append(acc_loss / acc_n)
            history["accuracy"].append(acc_correct / acc_n)
            if progress:
                print(f"step {step:>4}: loss {acc_loss / acc_n:.3f}, batch accuracy {acc_correct / acc_n:.2f}")
            acc_loss, acc_correct, acc_n = 0.0, 0.0, 0


@torch.no_grad()
def score_texts(model: RewardModel, tokenizer, texts, batch_size: int = 128, max_length: int = 64,
                cpu_threads: int | None = 1) -> torch.Tensor:
    """The reward model's score of each text: (N,) float32 on the CPU. (Add ``prompt`` yourself:
    the model scores the whole text, prompt and response.)"""
    was_training = model.training
    model.eval()
    device = _model_device(model)
    out = []
    with torch_threads(cpu_threads if device.type == "cpu" else None):
        for start in range(0, len(texts), batch_size):
            batch = encode_texts(tokenizer, list(texts[start:start + batch_size]), max_length, device)
            with autocast(device):
                out.append(model(**batch).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def evaluate_pairs(model: RewardModel, tokenizer, pairs: list[dict], max_length: int = 64) -> dict:
    """Held-out evaluation: pair accuracy (fraction with s(chosen) > s(rejected)) and mean BT loss.

    Returns:
        {"accuracy": float, "loss": float, "chosen_scores": (N,), "rejected_scores": (N,)}
    """
    chosen = score_texts(model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs], max_length=max_length)
    rejected = score_texts(model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs], max_length=max_length)
    return {"accuracy": (chosen > rejected).float().mean().item(),
            "loss": bradley_terry_loss(chosen, rejected).mean().item(),
            "chosen_scores": chosen, "rejected_scores": rejected}


# ----------------------------------------------------------------------------- save / load


def save_reward_model(model: RewardModel, path, tokenizer=None, info: dict | None = None) -> None:
    """``path/backbone`` (``save_pretrained``), ``path/head.safetensors``, optional tokenizer and ``info.json``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(path / "backbone")
    save_file(model.head.state_dict(), path / "head.safetensors")
    if tokenizer is not None:
        tokenizer.save_pretrained(path / "tokenizer")
    if info is not None:
        (path / "info.json").write_text(json.dumps(info, indent=1))


def load_reward_model(path, device=None) -> RewardModel:
    """Inverse of ``save_reward_model`` (absolute path: a relative one would be tried as a hub id)."""
    path = Path(path).expanduser().resolve()
    model = build_reward_model(backbone=path / "backbone")
    model.head.load_state_dict(load_file(path / "head.safetensors"))
    return model.to(device or get_device()).eval()


def make_world_pairs(world, n_train: int = 4000, n_test: int = 1000, seed: int = 0):
    """Train pairs from the world's SFT-split reviews, held-out pairs from its eval-split reviews."""
    from helpers import world as W

    reward_fn = W.get_reward_fn(world)
    out = []
    for split, n, s in ((world.sft_split, n_train, seed), (world.eval_split, n_test, seed + 1)):
        texts = W.load_reviews(world, split)
        rng = random.Random(s)
        texts = rng.sample(texts, min(len(texts), 2 * n + 500))
        out.append(make_review_pairs(texts, reward_fn(texts), n, seed=s))
    return out[0], out[1]


# ----------------------------------------------------------------------------- RLHF's reward model (notebook 08)


class NormalisedReward:
    """A text reward rescaled to mean 0, std 1 over reference texts (samples of the SFT model).

    A Bradley-Terry reward model is defined only up to an additive constant (the loss sees score
    differences) and its scale is arbitrary; normalising on SFT samples makes beta mean the same
    thing for the learned reward as for any other (Ziegler et al. 2019 do the same).

    Args:
        reward_fn: ``reward_fn(texts) -> list[float]`` (e.g. a trained reward model's scorer).
        reference_texts: prompt + response texts sampled from the SFT model; or None with
            ``mean`` and ``std`` given (constants saved with a model).
    """

    def __init__(self, reward_fn, reference_texts: list[str] | None = None, mean: float | None = None,
                 std: float | None = None):
        self.reward_fn = reward_fn
        if reference_texts is not None:
            raw = torch.as_tensor(reward_fn(reference_texts), dtype=torch.float64)
            mean, std = raw.mean().item(), raw.std().item()
        if mean is None or std is None:
            raise ValueError("give reference_texts, or mean and std")
        self.mean, self.std = mean, std

    def __call__(self, texts) -> list[float]:
        raw = torch.as_tensor(self.reward_fn(list(texts)), dtype=torch.float64)
        return ((raw - self.mean) / self.std).tolist()


def load_or_train_pair_reward_model(world, steps: int = 300, lr: float = 2e-3, batch_size: int = 32,
                                    test_frac: float = 0.1, n_norm: int = 256,
                                    seed: int = 0, force: bool = False, device=None, path=None):
    """RLHF's reward model, fit to *the same preference pairs DPO trains on*, normalised on SFT samples.

    Its backbone starts from the SFT model (as in InstructGPT) and it is trained with this module's
    Bradley-Terry loop on the world's pairs (``helpers.pairs.get_preference_pairs``) minus
    ``test_frac`` of the prompts (``helpers.pairs.split_pairs``, the split notebooks 06-07 train DPO
    on), whose pairs measure the held-out accuracy. A ``helpers.cache`` artifact under
    ``world.root/rlhf_reward_model/`` named by every argument and the pairs' fingerprint (or at
    ``path``, still checked against that spec): a changed argument trains a new model.

    ``steps``, ``lr``, ``batch_size``: ``train_reward_model``'s (sizes: ``helpers.profiles.RLHF_SIZES``).

    Returns:
        reward: ``NormalisedReward`` -- ``reward(texts) -> list[float]`` (prompt + response texts),
            mean 0 / std 1 over ``n_norm`` SFT samples.
        info: {"heldout_accuracy", "heldout_loss", "n_train_pairs", "n_test_pairs", "steps",
            "train_s", "norm_mean", "norm_std"}.
    """
    from helpers.evaluate import sample_policy
    from helpers.pairs import get_preference_pairs, split_pairs
    from helpers.world import get_prompts, load_sft_model, load_tokenizer, world_spec

    tok = load_tokenizer(world)
    pairs = get_preference_pairs(world, progress=False)
    spec = {"artifact": "pair reward model", "world": world_spec(world), "pairs": records_fingerprint(pairs),
            "steps": steps, "lr": lr, "batch_size": batch_size, "test_frac": test_frac, "n_norm": n_norm,
            "seed": seed}
    folder = Path(path) if path is not None else artifact_path(Path(world.root) / "rlhf_reward_model", "rm", spec)

    def train(tmp: Path) -> None:
        train_pairs, test_pairs = split_pairs(pairs, test_frac, seed=0)
        train_pairs, test_pairs = [dict(r) for r in train_pairs], [dict(r) for r in test_pairs]
        model = build_reward_model(backbone=world.sft_dir, seed=seed).to(device or "cpu")
        history = train_reward_model(model, tok, train_pairs, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
        result = evaluate_pairs(model, tok, test_pairs)
        # normalisation constants from fresh SFT samples on pair-split prompts
        sft = load_sft_model(world, device=device)
        prompts = get_prompts(world, world.pairs_split, n_norm, seed=seed + 1, tokenizer=tok)
        samples = sample_policy(sft, tok, prompts, 1, world.max_new_tokens, seed=seed + 1, progress=False)
        raw = score_texts(model, tok, [p + r for p, r in zip(samples["prompt"], samples["response"])])
        info = {"heldout_accuracy": result["accuracy"], "heldout_loss": result["loss"],
                "n_train_pairs": len(train_pairs), "n_test_pairs": len(test_pairs), "steps": steps,
                "train_s": history["seconds"], "norm_mean": raw.double().mean().item(),
                "norm_std": raw.double().std().item()}
        save_reward_model(model, tmp, info=info)

    build_artifact(folder, spec, train, force=force)
    info = json.loads((folder / "info.json").read_text())
    model = load_reward_model(folder, device)
    # the saved constants, not a re-estimate: every process (notebook, sweep workers) scores alike
    reward = NormalisedReward(lambda texts: score_texts(model, tok, list(texts)).tolist(),
                              mean=info["norm_mean"], std=info["norm_std"])
    reward.model = model  # the network itself, for whoever needs it (memory accounting, inspection)
    return reward, info
