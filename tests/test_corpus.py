"""The synthetic review corpus: deterministic, varied, and clean of accidental VADER nouns."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import corpus
from helpers.rewards import vader_reward


@pytest.fixture(scope="module")
def reviews():
    return corpus.generate_reviews(20_000, seed=0)


def test_deterministic_for_a_seed():
    a = corpus.generate_reviews(500, seed=3)
    b = corpus.generate_reviews(500, seed=3)
    c = corpus.generate_reviews(500, seed=4)
    assert a == b
    assert a != c


def test_size_variety_and_length(reviews):
    assert len(reviews) == len(set(reviews)) == 20_000
    assert len(corpus.content_words(reviews)) >= 300
    n_words = np.array([len(r.split()) for r in reviews])
    assert 7 <= n_words.min() and n_words.max() <= 30, "reviews must stay short for fast training"
    # every review is lower case and ends a sentence
    assert all(r == r.lower() and r[-1] in ".!" for r in reviews[:2000])


def test_only_opinion_words_carry_vader_valence(reviews):
    """VADER scores some nouns (romance +2.6, horror -2.7); a DPO policy learns to drop them in.
    The corpus keeps exactly one on purpose (GOODHART_WORD), every other valenced word is an
    opinion word the grammar uses to express sentiment."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    lexicon = SentimentIntensityAnalyzer().lexicon
    words = corpus.content_words(reviews) | {w for r in reviews[:3000] for w in corpus.words_of(r)}
    valenced = {w for w in words if w in lexicon}
    stray = valenced - corpus.opinion_words() - {corpus.GOODHART_WORD}
    assert not stray, f"words with VADER valence outside the opinion vocabulary: {sorted(stray)}"
    assert corpus.GOODHART_WORD in words and lexicon[corpus.GOODHART_WORD] > 0


def test_grades_match_vader_except_blind_spots():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    lexicon = SentimentIntensityAnalyzer().lexicon
    graded = {**corpus.POSITIVE_WORDS, **corpus.NEGATIVE_WORDS, **corpus.OPINION_VERBS,
              **corpus.OPINION_NOUNS}
    for word, grade in graded.items():
        if word in corpus.BLIND_SPOT_WORDS:
            assert word not in lexicon, f"{word} is listed as a blind spot but VADER scores it"
        else:
            assert lexicon.get(word) == pytest.approx(grade), word


def test_reward_spreads_over_its_range(reviews):
    rewards = np.array(vader_reward(reviews[:4000]))
    assert rewards.std() > 0.4
    assert (rewards > 0.5).mean() > 0.2 and (rewards < -0.5).mean() > 0.15
    assert (np.abs(rewards) < 0.2).mean() > 0.05, "neutral reviews exist"
    # negation and contrast are in the corpus
    assert any(" not " in r for r in reviews) and any(", but " in r for r in reviews)


def test_shipped_sample_matches_the_generator():
    from helpers.config import REPO_ROOT

    assert (REPO_ROOT / corpus.SAMPLE_PATH).read_text() == corpus.sample_text()
