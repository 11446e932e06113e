"""A synthetic movie-review corpus for the ``tiny`` profile (offline stand-in for IMDb).

Reviews are 2-3 short sentences about a film's aspects (plot, acting, music, pacing, ...), written
with a graded opinion vocabulary ("fine" < "good" < "great" < "superb"), intensifiers ("very",
"slightly"), negation ("not bad"), contrast ("..., but ...") and plain factual sentences. Each review
draws a hidden sentiment (positive, negative, mixed or neutral) so the ground-truth reward (VADER,
see ``helpers.rewards``) spreads over its whole range.

Design choices worth knowing (they matter later, when DPO optimises VADER):

* Every *opinion* word is listed in ``POSITIVE_WORDS`` / ``NEGATIVE_WORDS`` with a grade. Most
  grades are VADER's own lexicon value; a few words VADER does not know ("gripping", "bland") are
  the reward's blind spots: a reader sees sentiment, the reward sees none.
* Every other word (aspects, genres, people, places, plot verbs) is checked to carry *no* VADER
  valence -- VADER scores many nouns (romance +2.6, horror -2.7, war -2.9, villain -2.6) and a
  policy optimised against VADER learns to drop them in for free reward.
* Exactly one such noun is kept on purpose: ``GOODHART_WORD = "comedy"`` (VADER +1.5). It appears
  only as a neutral genre label ("this comedy is set in rome."), so writing it says nothing about
  the film's quality -- yet it raises the reward. Notebooks can count how often a DPO policy writes
  it (a small, visible case of reward hacking / Goodhart's law).
* Reviews are lower case, 12-30 words (~15-35 tokens), so a 1 M-parameter GPT-2 learns them in
  minutes on a CPU.

Everything is deterministic for a seed: ``generate_reviews(n, seed)`` returns the same list on
every machine (it uses only ``random.Random(seed)``).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable

GOODHART_WORD = "comedy"
# Bump when the grammar or vocabulary changes: cached tiny worlds built from an older corpus are
# then rebuilt (``helpers.world`` stores it with the build settings).
CORPUS_VERSION = "2"

# Opinion adjectives with a grade on VADER's scale (-4..4). Words VADER scores use VADER's value;
# the ones VADER does not know carry a hand grade and are listed in BLIND_SPOT_WORDS.
POSITIVE_WORDS: dict[str, float] = {
    "okay": 0.9, "fine": 0.8, "adequate": 0.9, "solid": 0.6, "fair": 1.3, "competent": 1.3,
    "decent": 1.0, "fresh": 1.3, "original": 1.3, "engaging": 1.4, "bold": 1.6, "stunning": 1.6,
    "thoughtful": 1.6, "interesting": 1.7, "smart": 1.7, "nice": 1.8, "powerful": 1.8,
    "good": 1.9, "funny": 1.9, "enjoyable": 1.9, "entertaining": 1.9, "lively": 1.9,
    "creative": 1.9, "clever": 2.0, "intelligent": 2.0, "satisfying": 2.0, "sweet": 2.0,
    "elegant": 2.1, "terrific": 2.1, "thrilling": 2.1, "ambitious": 2.1, "exciting": 2.2,
    "confident": 2.2, "impressive": 2.3, "pleasant": 2.3, "fun": 2.3, "honest": 2.3,
    "strong": 2.3, "fabulous": 2.4, "heartfelt": 2.5, "remarkable": 2.6, "fantastic": 2.6,
    "rich": 2.6, "excellent": 2.7, "wonderful": 2.7, "perfect": 2.7, "brilliant": 2.8,
    "amazing": 2.8, "lovely": 2.8, "charming": 2.8, "delightful": 2.8, "splendid": 2.8,
    "beautiful": 2.9, "magnificent": 2.9, "marvelous": 2.9, "outstanding": 3.0,
    "gorgeous": 3.0, "great": 3.1, "superb": 3.1, "awesome": 3.1, "glorious": 3.2,
    # blind spots (unknown to VADER): hand grades
    "gripping": 2.0, "memorable": 1.8, "witty": 2.0, "vivid": 1.5, "polished": 1.5,
    "moving": 2.2, "masterful": 3.0, "refreshing": 1.8,
}
NEGATIVE_WORDS: dict[str, float] = {
    "awkward": -0.6, "weird": -0.7, "empty": -0.8, "confusing": -0.9,
    "boring": -1.3, "messy": -1.5, "lazy": -1.5, "ridiculous": -1.5, "depressing": -1.6,
    "dull": -1.7, "annoying": -1.7, "lame": -1.8, "useless": -1.8, "weak": -1.9,
    "dreadful": -1.9, "painful": -1.9, "frustrating": -1.9, "tired": -1.9, "worthless": -1.9,
    "awful": -2.0, "irritating": -2.0, "poor": -2.1, "terrible": -2.1, "unpleasant": -2.1,
    "disappointing": -2.2, "ugly": -2.3, "dumb": -2.3, "stupid": -2.4, "bad": -2.5,
    "horrible": -2.5, "pathetic": -2.7,
    # blind spots (unknown to VADER): hand grades
    "bland": -1.5, "clumsy": -1.5, "tedious": -1.8, "lifeless": -2.0, "forgettable": -1.5,
    "predictable": -1.0, "wooden": -1.8, "sloppy": -1.8, "clunky": -1.5, "mediocre": -1.5,
    "pointless": -2.0, "overlong": -1.2, "uneven": -1.0, "shallow": -1.5,
}
BLIND_SPOT_WORDS = frozenset({
    "gripping", "memorable", "witty", "vivid", "polished", "moving", "masterful", "refreshing",
    "bland", "clumsy", "tedious", "lifeless", "forgettable", "predictable", "wooden", "sloppy",
    "clunky", "mediocre", "pointless", "overlong", "uneven", "shallow", "decent",
})
# Opinion verbs ("i loved the music.") and closing phrases, graded the same way.
OPINION_VERBS: dict[str, float] = {
    "loved": 2.9, "adored": 1.8, "enjoyed": 2.3, "liked": 1.8, "admired": 2.3,
    "appreciated": 2.3, "disliked": -1.7, "hated": -3.2,
}
# Nouns that are also VADER-scored opinion words, used as "a mess", "a disaster".
OPINION_NOUNS: dict[str, float] = {"mess": -1.5, "disaster": -3.1, "joy": 2.8, "treat": 1.7,
                                   "delight": 2.9, "triumph": 2.1, "failure": -2.3, "waste": -1.8,
                                   "masterpiece": 3.1}
STRONG_BOOSTERS = ["very", "really", "extremely", "incredibly", "absolutely", "remarkably",
                   "thoroughly"]
WEAK_BOOSTERS = ["somewhat", "slightly", "kind of", "a little", "fairly", "mostly", "rather"]

# Aspects: (noun phrase, plural?)
ASPECTS: list[tuple[str, bool]] = [
    ("plot", False), ("story", False), ("script", False), ("screenplay", False),
    ("acting", False), ("cast", False), ("lead", False), ("dialogue", False), ("music", False),
    ("soundtrack", False), ("score", False), ("pacing", False), ("editing", False),
    ("cinematography", False), ("camera work", False), ("lighting", False), ("ending", False),
    ("finale", False), ("opening", False), ("twist", False), ("direction", False),
    ("tone", False), ("atmosphere", False), ("sound design", False), ("set design", False),
    ("premise", False), ("climax", False), ("final scene", False), ("third act", False),
    ("chemistry", False), ("animation", False), ("production design", False),
    ("characters", True), ("performances", True), ("effects", True), ("visuals", True),
    ("costumes", True), ("action scenes", True), ("songs", True), ("stunts", True),
    ("chase scenes", True), ("side characters", True), ("sets", True), ("locations", True),
]
GENRES = ["drama", "western", "musical", "mystery", "documentary", "biopic", "sci-fi film",
          "period piece", "road movie", "family film", "spy film", "sports film",
          "courtroom drama", "animated film", "fantasy film", "heist film",
          GOODHART_WORD]
PEOPLE = ["detective", "teacher", "nurse", "pilot", "soldier", "farmer", "singer", "boxer",
          "chef", "lawyer", "doctor", "student", "widow", "painter", "writer", "sailor", "mother",
          "father", "brother", "sister", "journalist", "scientist", "priest", "dancer",
          "musician", "driver", "mayor", "banker", "fisherman", "waitress", "coach", "miner",
          "professor", "librarian", "architect", "photographer", "gardener", "baker", "twins",
          "young couple", "old man", "young woman", "small boy", "teenage girl"]
PLACES = ["a small town", "the big city", "paris", "tokyo", "london", "the desert",
          "the mountains", "an island", "a farm", "a ship", "space", "the suburbs", "a village",
          "a hospital", "a school", "new york", "rome", "the north", "the coast", "the jungle",
          "a river town", "a forest", "a train station", "berlin", "mexico", "a hotel", "the moon",
          "a lighthouse", "chicago", "a bakery", "a circus", "a racetrack"]
GOALS = ["returns home", "moves to {place}", "opens a restaurant", "joins a band",
         "trains for a big race", "finds an old map", "runs a small hotel", "travels to {place}",
         "looks for a runaway horse", "starts a new job",
         "builds a boat", "writes a book", "plans a wedding", "buys a farm", "meets a stranger",
         "learns to sail", "sells a house", "enters a contest", "takes over a bakery",
         "drives across the country", "chases a rumor", "keeps a secret"]
WHEN = ["last night", "last week", "on sunday", "at the cinema", "on a plane", "at home",
        "with my wife", "with my husband", "with my kids", "on tv", "in the theater",
        "on a cold evening", "twice", "at a late show", "on a long flight", "with my brother"]
MOVIE_WORDS = ["film", "movie", "picture"]
DURATIONS = ["ninety minutes", "two hours", "almost three hours", "an hour and a half",
             "two and a half hours", "about a hundred minutes"]
YEARS = [str(y) for y in range(1962, 2024, 3)]
NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
FACTS = [
    "the film runs {duration}.", "it came out in {year}.", "it was shot in {place}.",
    "the director also wrote the script.", "it is based on real events.",
    "it is based on a book.", "the {person} is a newcomer.", "it is in black and white.",
    "it is the second film by this director.", "most of it takes place at night.",
    "the story spans {number} years.", "it was filmed in {year}.", "there is a short scene at the very end.",
    "it opens with a long shot of {place}.", "the cast is mostly unknown.",
]

# Words that never count as "content" (function words, pronouns, auxiliaries, numbers).
STOPWORDS = frozenset("""
a an the and but or so of in on at to for with by from as is was are were be been it its this that
these those i my me we our you he she they them his her their who which what when where there here
not no never too also very really just all about after before into out over than then once twice
would could should will can do does did has have had one two three four five six seven eight nine
ten first second most mostly almost an overall
""".split())

_NEGATIONS = ["not", "never"]


def _pick_graded(rng: random.Random, words: dict[str, float], target: float,
                 width: float = 0.7) -> str:
    """Pick a word whose grade is near ``target`` (Gaussian weights of width ``width``)."""
    names = list(words)
    weights = [math.exp(-((words[w] - target) ** 2) / (2 * width**2)) + 1e-3 for w in names]
    return rng.choices(names, weights=weights, k=1)[0]


def _opinion_adjective(rng: random.Random, target: float, attributive: bool = False) -> str:
    """An adjective phrase (maybe boosted) expressing a valence near ``target`` (VADER scale).

    ``attributive`` (before a noun: "a ... film"): only one-word boosters ("a somewhat dull film",
    not "a a little dull film").
    """
    if abs(target) < 0.4:  # near-neutral
        return rng.choice(["okay", "fine", "average", "ordinary", "standard", "unusual",
                           "quiet", "simple", "long", "short", "busy", "familiar"])
    pool = POSITIVE_WORDS if target > 0 else NEGATIVE_WORDS
    magnitude = abs(target)
    r = rng.random()
    if magnitude > 2.4 and r < 0.45:
        word = _pick_graded(rng, pool, math.copysign(min(magnitude, 3.0) - 0.4, target))
        return f"{rng.choice(STRONG_BOOSTERS)} {word}"
    if magnitude < 1.6 and r < 0.3:
        word = _pick_graded(rng, pool, math.copysign(magnitude + 0.6, target))
        boosters = [b for b in WEAK_BOOSTERS if " " not in b] if attributive else WEAK_BOOSTERS
        return f"{rng.choice(boosters)} {word}"
    return _pick_graded(rng, pool, target)


def _a(phrase: str) -> str:
    """``phrase`` with its indefinite article: "a film", "an ordinary film"."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _be(plural: bool, rng: random.Random) -> str:
    past = rng.random() < 0.65
    return ("were" if plural else "was") if past else ("are" if plural else "is")


def _aspect_sentence(rng: random.Random, target: float, aspect: tuple[str, bool] | None = None) -> str:
    """One sentence judging one aspect, with valence near ``target``."""
    noun, plural = aspect or rng.choice(ASPECTS)
    r = rng.random()
    if abs(target) >= 0.4 and r < 0.16:
        # Negation expresses a *weak* opposite: "not bad" is mildly positive, "not great" mildly
        # negative (VADER flips and damps negated words the same way).
        pool = NEGATIVE_WORDS if target > 0 else POSITIVE_WORDS
        word = _pick_graded(rng, pool, -2.0 * math.copysign(1, target))
        return f"the {noun} {_be(plural, rng)} {rng.choice(_NEGATIONS)} {word}."
    if abs(target) >= 0.4 and r < 0.30:
        verb = _pick_graded(rng, OPINION_VERBS, target, width=1.0)
        return f"i {verb} the {noun}."
    if r < 0.40:
        verb = rng.choice(["felt", "looked", "seemed"]) if noun not in ("music", "soundtrack", "score", "songs", "sound design") else "sounded"
        return f"the {noun} {verb} {_opinion_adjective(rng, target)}."
    return f"the {noun} {_be(plural, rng)} {_opinion_adjective(rng, target)}."


def _intro_sentence(rng: random.Random) -> str:
    movie = rng.choice(MOVIE_WORDS)
    r = rng.random()
    if r < 0.3:
        goal = rng.choice(GOALS).format(place=rng.choice(PLACES))
        return f"{_a(rng.choice(PEOPLE))} {goal}."
    if r < 0.5:
        return f"this {rng.choice(GENRES)} is set in {rng.choice(PLACES)}."
    if r < 0.7:
        return f"i saw this {rng.choice(GENRES + MOVIE_WORDS)} {rng.choice(WHEN)}."
    if r < 0.85:
        return f"the {movie} follows {_a(rng.choice(PEOPLE))} in {rng.choice(PLACES)}."
    return f"{_a(rng.choice(GENRES))} about {_a(rng.choice(PEOPLE))} and {_a(rng.choice(PEOPLE))}."


def _fact_sentence(rng: random.Random) -> str:
    return rng.choice(FACTS).format(
        duration=rng.choice(DURATIONS), year=rng.choice(YEARS), place=rng.choice(PLACES),
        person=rng.choice(PEOPLE), number=rng.choice(NUMBER_WORDS[2:]))


def _closing_sentence(rng: random.Random, target: float) -> str:
    movie = rng.choice(MOVIE_WORDS)
    r = rng.random()
    exclaim = abs(target) > 2.2 and rng.random() < 0.5  # VADER boosts "!" -- use it sparingly
    end = "!" if exclaim else "."
    if abs(target) < 0.4:
        return rng.choice([f"an ordinary {movie}.", f"it is an average {movie}.",
                           "it was okay.", f"{rng.choice(NUMBER_WORDS[4:7])} out of ten."])
    if r < 0.3:
        return f"overall, {_a(_opinion_adjective(rng, target, attributive=True))} {movie}{end}"
    if r < 0.45:
        score = round(5.5 + 1.5 * target + rng.uniform(-1, 1))
        return f"{NUMBER_WORDS[min(max(score, 1), 10) - 1]} out of ten{end}"
    if r < 0.6:
        noun = _pick_graded(rng, OPINION_NOUNS, target, width=1.0)
        return f"what {_a(noun)}{end}"
    if r < 0.75:
        return f"i would {'' if target > 0 else 'not '}watch it again{end}"
    return f"{_a(_opinion_adjective(rng, target, attributive=True))} {movie}{end}"


def generate_review(rng: random.Random) -> str:
    """One review. Its hidden sentiment is drawn first, then 2-3 sentences that express it."""
    kind = rng.choices(["positive", "negative", "mixed", "neutral"], weights=[36, 36, 16, 12])[0]
    if kind == "neutral":
        parts = [_intro_sentence(rng), _fact_sentence(rng)]
        if rng.random() < 0.6:
            parts.append(_closing_sentence(rng, 0.0) if rng.random() < 0.5
                         else _aspect_sentence(rng, 0.0))
        return " ".join(parts)
    if kind == "mixed":
        first, second = rng.sample(ASPECTS, 2)
        sign = rng.choice([1, -1])
        a = _aspect_sentence(rng, sign * rng.uniform(1.0, 3.0), first).rstrip(".")
        b = _aspect_sentence(rng, -sign * rng.uniform(1.0, 3.0), second)
        parts = [f"{a}, but {b}"]
        if rng.random() < 0.5:
            parts.insert(0, _intro_sentence(rng))
        else:
            parts.append(_closing_sentence(rng, -sign * rng.uniform(0.0, 1.5)))
        return " ".join(parts)
    sign = 1 if kind == "positive" else -1
    strength = rng.uniform(0.6, 3.2)
    parts = []
    if rng.random() < 0.45:
        parts.append(_intro_sentence(rng))
    n_aspects = 1 if parts else rng.choice([1, 2])
    for aspect in rng.sample(ASPECTS, n_aspects):
        parts.append(_aspect_sentence(rng, sign * (strength + rng.uniform(-0.5, 0.5)), aspect))
    if len(parts) < 3 and rng.random() < 0.7:
        parts.append(_closing_sentence(rng, sign * strength))
    if len(parts) < 2:
        parts.append(_fact_sentence(rng))
    return " ".join(parts)


def generate_reviews(n: int, seed: int = 0, max_tries_factor: int = 5) -> list[str]:
    """``n`` *distinct* reviews, deterministic for ``seed`` (order included).

    Args:
        n: number of reviews.
        seed: seed of the private ``random.Random`` (global RNG state is untouched).
        max_tries_factor: give up after ``n * max_tries_factor`` draws (the grammar can produce far
            more than 10**6 distinct reviews, so this only guards against a broken grammar).
    Returns:
        list of ``n`` strings.
    """
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    tries = 0
    while len(seen) < n:
        tries += 1
        if tries > n * max_tries_factor:
            raise RuntimeError(f"only {len(seen)} distinct reviews after {tries} draws")
        seen.setdefault(generate_review(rng), None)
    return list(seen)


_WORD_RE = re.compile(r"[a-z][a-z'\-]*")


def words_of(text: str) -> list[str]:
    """Lower-case word tokens of a text (punctuation and digits dropped)."""
    return _WORD_RE.findall(text.lower())


def content_words(texts: Iterable[str]) -> set[str]:
    """Distinct words of ``texts`` that are not function words (``STOPWORDS``)."""
    out: set[str] = set()
    for text in texts:
        out.update(w for w in words_of(text) if w not in STOPWORDS)
    return out


def opinion_words() -> set[str]:
    """Every word the grammar uses *to express* sentiment (adjectives, verbs, nouns, boosters).

    Any other word of the corpus carries no VADER valence, except ``GOODHART_WORD``.
    """
    boosters = {w for phrase in STRONG_BOOSTERS + WEAK_BOOSTERS for w in phrase.split()}
    return set(POSITIVE_WORDS) | set(NEGATIVE_WORDS) | set(OPINION_VERBS) | set(OPINION_NOUNS) | boosters


SAMPLE_PATH = "data/tiny_reviews_sample.txt"


def sample_text(n: int = 200, seed: int = 0) -> str:
    """The first ``n`` reviews of ``generate_reviews(n, seed)`` with their VADER reward, one a line.

    ``data/tiny_reviews_sample.txt`` holds this text (a test keeps it in sync with the grammar).
    """
    from helpers.rewards import vader_reward

    reviews = generate_reviews(n, seed=seed)
    header = (f"# {n} reviews of the tiny world's corpus (helpers.corpus, CORPUS_VERSION {CORPUS_VERSION}, "
              f"seed {seed}).\n# Each line: VADER compound reward (the tiny world's ground truth), a tab, the review.\n"
              f"# Regenerate: python -c \"from helpers.corpus import sample_text; "
              f"open('{SAMPLE_PATH}', 'w').write(sample_text())\"\n")
    return header + "".join(f"{r:+.3f}\t{t}\n" for r, t in zip(vader_reward(reviews), reviews))
