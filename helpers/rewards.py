"""Ground-truth rewards: the "true" sentiment score that preference pairs are ranked by and that
every policy is evaluated on. DPO never sees it directly -- only through the pairs.

Every reward here has the same batched interface::

    reward_fn(texts: list[str]) -> list[float]      # higher = more positive

* ``tiny`` profile: ``vader_reward`` -- VADER's compound score (``vaderSentiment``; its lexicon ships
  inside the wheel, no download), in [-1, 1]. VADER is a lexicon + rules scorer: it sums word
  valences, flips them after "not", boosts them after "very" and after "!", weighs the clause after
  "but" more. It also scores some nouns ("comedy" +1.5), which a policy can exploit (see
  ``helpers.corpus.GOODHART_WORD``).
* ``gpt2`` profile: ``classifier_reward_fn(name)`` -- a sentiment classifier through a transformers
  ``pipeline`` (default ``lvwerra/distilbert-imdb``; the DPO paper's
  ``siebert/sentiment-roberta-large-english`` works the same). The reward is the classifier's
  **log-odds of "positive"**: logit(POSITIVE) - logit(NEGATIVE) = log p(pos) / p(neg), an unbounded
  real number (0 = undecided). Log-odds rather than the probability, because probabilities saturate
  at 1 and stop telling a good review from a great one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

RewardFn = Callable[[Sequence[str]], list[float]]

DEFAULT_CLASSIFIER = "lvwerra/distilbert-imdb"

_VADER = None


def vader_reward(texts: Sequence[str]) -> list[float]:
    """VADER compound score of each text, in [-1, 1].

    Args:
        texts: list of B strings.
    Returns:
        list of B floats.
    """
    global _VADER
    if _VADER is None:  # building the analyzer reads the lexicon file (~0.1 s): do it once
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    return [float(_VADER.polarity_scores(t)["compound"]) for t in texts]


def _positive_negative_labels(id2label: dict[int, str]) -> tuple[str, str]:
    """Find the "positive" and "negative" label names of a 2-class sentiment classifier."""
    labels = list(id2label.values())
    pos = [lab for lab in labels if lab.lower().startswith("pos")]
    neg = [lab for lab in labels if lab.lower().startswith("neg")]
    if len(labels) == 2 and len(pos) == 1 and len(neg) == 1:
        return pos[0], neg[0]
    if len(labels) == 2:  # unnamed heads (LABEL_0 / LABEL_1): the convention is 1 = positive
        return id2label[1], id2label[0]
    raise ValueError(f"expected a 2-class sentiment classifier, got labels {labels}")


def classifier_reward_fn(model_name_or_path: str = DEFAULT_CLASSIFIER, device=None,
                         batch_size: int = 32, max_length: int = 512) -> RewardFn:
    """A reward function scoring texts by a sentiment classifier's log-odds of "positive".

    Args:
        model_name_or_path: hub id or absolute local path of a 2-class sequence classifier.
        device: torch device (or None: cuda if available, else cpu).
        batch_size: texts per forward pass.
        max_length: longer texts are truncated (IMDb reviews can exceed 512 tokens).
    Returns:
        ``reward_fn(texts) -> list[float]`` with logit(positive) - logit(negative) per text.
    """
    import torch
    from transformers import pipeline

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = pipeline("text-classification", model=model_name_or_path, device=device)
    pos, neg = _positive_negative_labels(pipe.model.config.id2label)

    def reward_fn(texts: Sequence[str]) -> list[float]:
        # function_to_apply="none": raw logits, not softmax probabilities; top_k=None: all labels.
        outputs = pipe(list(texts), top_k=None, function_to_apply="none", batch_size=batch_size,
                       truncation=True, max_length=max_length)
        rewards = []
        for scores in outputs:
            by_label = {s["label"]: s["score"] for s in scores}
            rewards.append(float(by_label[pos] - by_label[neg]))
        return rewards

    return reward_fn


def make_reward_fn(name: str = "vader", device=None) -> RewardFn:
    """``"vader"`` -> ``vader_reward``; anything else is a classifier id/path for ``classifier_reward_fn``."""
    if name == "vader":
        return vader_reward
    return classifier_reward_fn(name, device=device)
