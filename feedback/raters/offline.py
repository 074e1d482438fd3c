"""The offline rater: rubric cues plus a small classifier trained on the example bank.

Deterministic, no network, about a millisecond per message. It gives instant first feedback, is
the fallback when the model rater fails, and scores mastery cheaply. Per skill, a regularised
logistic regression reads the skill's rubric cues (feedback/raters/features.py), the verdict of
a hand-written rubric rule, and down-weighted word n-grams; the rules alone rate when no bank is
available. It is trained on first use from the bank's train split (well under two seconds) and
kept in memory.
"""

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from feedback.raters.bank import DATA_DIR, TRAIN_PATH, Example, train_examples
from feedback.raters.features import Cues, extract, names_for, normalise
from feedback.raters.rating import Rating, SkillRating
from feedback.raters.tfidf import TfidfRows
from feedback.skills import LEVELS, SKILL_KEYS, SKILLS, STRATEGIES

SEED_PATH = DATA_DIR / "seed.jsonl"
# Written to analyse errors on messages unlike the bank's (texting, formal, non-native...), then
# trained on; holdout.jsonl, written alongside it, is never read here.
ANALYSIS_PATH = DATA_DIR / "analysis.jsonl"
TRAINING_PATHS = (TRAIN_PATH, SEED_PATH, ANALYSIS_PATH)


# --------------------------------------------------------------------------- rubric rules


def _v(cues: Cues, *names: str) -> float:
    return sum(cues.values.get(n, 0.0) for n in names)


def rule_level(skill: str, cues: Cues) -> str:
    """The level the rubric alone gives: a transparent prior the classifier learns to weigh."""
    if skill == "describe":
        events = _v(cues, "d_past_event", "d_negated_fact", "d_count", "d_last_n", "d_past_verb")
        when = _v(cues, "d_digit", "d_number_word", "d_since_ago", "d_time")
        judged = _v(cues, "d_label", "d_you_are_label", "d_motive", "d_absolute")
        if events and when and not judged:
            return "strong"
        if events or judged or _v(cues, "d_vague"):
            return "weak"
        return "none"
    if skill == "express":
        named = _v(cues, "e_i_feel_feeling", "e_makes_me", "e_feeling_noun")
        named = max(named, _v(cues, "e_first_person_feeling"))
        judged = _v(cues, "e_feel_like", "e_judgment_feeling", "e_you_make_me")
        if named > judged:
            return "strong"
        if judged or _v(cues, "e_vague", "e_feel_word"):
            return "weak"
        return "none"
    if skill == "assert":
        direct = _v(cues, "a_direct", "a_refusal", "a_imperative", "a_please", "a_modal_q")
        hedged = _v(cues, "a_hint", "c_permission") + max(_v(cues, "c_hedge") - 1, 0)
        if direct and not hedged:
            return "strong"
        if direct or hedged or _v(cues, "shape_questions"):
            return "weak"
        return "none"
    if skill == "reinforce":
        if _v(cues, "r_you_gain", "r_we_gain"):
            return "strong"
        if _v(cues, "r_so_that", "r_vague_benefit", "r_self_benefit", "r_threat"):
            return "weak"
        return "none"
    if skill == "negotiate":
        if _v(cues, "n_what_if", "n_give_to_get", "n_their_option"):
            return "strong"
        if _v(cues, "n_vague", "n_trial"):
            return "weak"
        return "none"
    if skill == "mindful":
        broken = _v(cues, "m_insult", "m_sarcasm", "m_counter", "m_give_up", "m_past")
        broken += _v(cues, "d_you_are_label", "m_accuse", "m_caps_words", "m_exclaim")
        return "no" if broken else "yes"
    if skill == "confident":
        shaky = _v(cues, "c_apology", "c_self_down", "c_permission", "m_give_up", "m_insult")
        shaky += (_v(cues, "c_hedge") >= 2) + _v(cues, "m_caps_words")
        shaky += _v(cues, "m_exclaim")
        return "no" if shaky else "yes"
    raise KeyError(skill)


# --------------------------------------------------------------------------- classifier


@dataclass(frozen=True)
class Settings:
    """Hyper-parameters, chosen by cross-validation on the train split (bench/offline_rater.py)."""

    c: float = 0.1
    ngram_weight: float = 0.3
    min_df: int = 2
    rule_weight: float = 2.0


DEFAULT_SETTINGS = Settings()


def _dense(skill: str, cues: Cues) -> list[float]:
    # log1p tames counts so that a long rant does not dominate.
    return [math.log1p(max(cues.values[n], 0.0)) for n in names_for(skill)]


def _rule(skill: str, cues: Cues) -> list[float]:
    verdict = rule_level(skill, cues)
    return [1.0 if verdict == level else 0.0 for level in LEVELS[skill]]


@dataclass
class SkillModel:
    """One skill's fitted scaler and logistic regression over cues, rule verdict and n-grams."""

    skill: str
    settings: Settings
    mean: np.ndarray
    scale: np.ndarray
    classifier: LogisticRegression | None = None
    constant: str | None = None
    _ngram_t: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def dense(self, cues: Sequence[Cues]) -> np.ndarray:
        """Standardised cues followed by the rule's verdict."""
        values = (np.array([_dense(self.skill, c) for c in cues]) - self.mean) / self.scale
        # The verdict is not standardised: its scale is how much the rubric rule is trusted
        # before the data speak (L2 shrinks every weight towards zero alike).
        rule = np.array([_rule(self.skill, c) for c in cues]) * self.settings.rule_weight
        return np.hstack([values, rule])

    def matrix(self, ngrams: sparse.csr_matrix | None, cues: Sequence[Cues]) -> sparse.csr_matrix:
        """The full design matrix, as the classifier was fitted on it."""
        blocks = [sparse.csr_matrix(self.dense(cues))]
        if ngrams is not None:
            blocks.append(ngrams * self.settings.ngram_weight)
        return sparse.hstack(blocks, format="csr")

    def predict(self, ngrams: sparse.csr_matrix | None, cues: Sequence[Cues]) -> list[str]:
        """Levels for a batch of messages."""
        if self.classifier is None:
            return [self.constant or rule_level(self.skill, c) for c in cues]
        # The linear scores by hand: sklearn's input checks cost more than the arithmetic.
        dense = self.dense(cues)
        coef = self.classifier.coef_
        n_dense = dense.shape[1]
        scores = dense @ coef[:, :n_dense].T + self.classifier.intercept_
        if ngrams is not None:
            scores = scores + np.asarray(ngrams @ coef[:, n_dense:].T * self.settings.ngram_weight)
        return self._levels(scores)

    def predict_one(self, cues: Cues, columns: np.ndarray, weights: np.ndarray) -> str:
        """The level of one message: `predict`'s arithmetic on plain vectors (its n-gram row as
        `TfidfRows.row` gives it), without building the small matrices that cost more than the
        sums for a single message (the "Get feedback" button rates one draft at a time)."""
        if self.classifier is None:
            return self.constant or rule_level(self.skill, cues)
        dense = self.dense((cues,))[0]
        coef = self.classifier.coef_
        n_dense = dense.shape[0]
        scores = coef[:, :n_dense] @ dense + self.classifier.intercept_
        if columns.size:
            ngram = self._ngram_rows(n_dense)[columns].T @ weights
            scores = scores + ngram * self.settings.ngram_weight
        return self._levels(scores[np.newaxis, :])[0]

    def _ngram_rows(self, n_dense: int) -> np.ndarray:
        """The n-gram weights, one row per vocabulary column (a message's columns pick rows)."""
        if self._ngram_t is None:
            self._ngram_t = np.ascontiguousarray(self.classifier.coef_[:, n_dense:].T)
        return self._ngram_t

    def _levels(self, scores: np.ndarray) -> list[str]:
        # A binary model has one column of scores: positive means the second class.
        binary = scores.shape[1] == 1
        picked = (scores[:, 0] > 0).astype(int) if binary else scores.argmax(axis=1)
        return [str(self.classifier.classes_[i]) for i in picked]


def fit_skill(
    skill: str,
    ngrams: sparse.csr_matrix | None,
    cues: Sequence[Cues],
    labels: Sequence[str],
    settings: Settings,
) -> SkillModel:
    """Fit one skill's classifier on the shared n-gram matrix, the cues and gold levels."""
    dense = np.array([_dense(skill, c) for c in cues])
    mean = dense.mean(axis=0)
    scale = dense.std(axis=0)
    scale[scale == 0] = 1.0
    model = SkillModel(skill, settings, mean, scale)
    if len(set(labels)) < 2:
        model.constant = labels[0] if labels else None
        return model
    classifier = LogisticRegression(C=settings.c, class_weight="balanced", max_iter=5000)
    classifier.fit(model.matrix(ngrams, cues), list(labels))
    model.classifier = classifier
    return model


@dataclass
class OfflineModel:
    """Seven skill models fitted on the same examples, sharing one n-gram vocabulary."""

    skills: dict[str, SkillModel]
    n_train: int
    vectorizer: TfidfVectorizer | None = None
    rows: TfidfRows | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.vectorizer is not None:
            self.rows = TfidfRows(self.vectorizer)

    def predict(self, examples: Sequence[Example]) -> list[dict[str, str]]:
        """Levels for all seven skills for each example."""
        cues = [_cues(e) for e in examples]
        ngrams = None
        if self.rows is not None:
            ngrams = self.rows.matrix([normalise(e.text) for e in examples])
        columns = {k: m.predict(ngrams, cues) for k, m in self.skills.items()}
        return [{k: columns[k][i] for k in SKILL_KEYS} for i in range(len(examples))]

    def predict_one(self, example: Example) -> dict[str, str]:
        """Levels for all seven skills for one example: what `predict([example])[0]` gives,
        without the batch path's sparse-matrix steps (a rating in all: 1.62 -> 1.26 ms in-process,
        bench/README.md, session 11)."""
        cues = _cues(example)
        if self.rows is not None:
            columns, weights = self.rows.row(cues.text)  # the normalised text
        else:
            columns, weights = np.zeros(0, dtype=np.intp), np.zeros(0)
        return {k: self.skills[k].predict_one(cues, columns, weights) for k in SKILL_KEYS}


def _cues(e: Example) -> Cues:
    return extract(e.text, partner_said=e.partner_said, goal=e.goal, situation=e.situation)


def train(examples: Sequence[Example], settings: Settings = DEFAULT_SETTINGS) -> OfflineModel:
    """Fit the offline rater on labelled examples (the bank's train split, never dev)."""
    examples = [e for e in examples if e.fully_labelled]
    texts = [normalise(e.text) for e in examples]
    cues = [_cues(e) for e in examples]
    vectorizer: TfidfVectorizer | None = None
    ngrams = None
    if settings.ngram_weight > 0 and texts:
        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2),
            min_df=settings.min_df,
            sublinear_tf=True,
            token_pattern=r"[a-z']+",  # noqa: S106 (a regex, not a password)
        )
        try:
            ngrams = vectorizer.fit_transform(texts)
        except ValueError:  # no word reaches min_df: rely on the cues alone
            vectorizer = None
    skills = {
        k: fit_skill(k, ngrams, cues, [e.labels[k] for e in examples], settings) for k in SKILL_KEYS
    }
    return OfflineModel(skills=skills, n_train=len(examples), vectorizer=vectorizer)


def rules_only() -> OfflineModel:
    """A model that rates with the rubric rules alone (used when no bank is present)."""
    empty = np.zeros(0)
    skills = {k: SkillModel(k, DEFAULT_SETTINGS, empty, empty) for k in SKILL_KEYS}
    return OfflineModel(skills=skills, n_train=0)


@lru_cache(maxsize=1)
def default_model() -> OfflineModel:
    """The bank-trained model, fitted once per process on train, seed and analysis."""
    examples = train_examples(TRAINING_PATHS)
    return train(examples) if examples else rules_only()


# --------------------------------------------------------------------------- feedback text

_REASONS: dict[tuple[str, str], str] = {
    ("describe", "strong"): "States concrete facts{q} without judging them.",
    ("describe", "weak"): "Mentions the situation, but {why}.",
    ("describe", "none"): "Gives no facts about what actually happened.",
    ("express", "strong"): "Names your own feeling{q}.",
    ("express", "weak"): "Hints at how you feel, but {why}.",
    ("express", "none"): "Does not say how you feel.",
    ("assert", "strong"): "Makes a clear request or refusal{q}.",
    ("assert", "weak"): "There is an ask in here, but {why}.",
    ("assert", "none"): "Does not ask for anything or say no.",
    ("reinforce", "strong"): "Tells them what they gain{q}.",
    ("reinforce", "weak"): "Gives a reason, but {why}.",
    ("reinforce", "none"): "Does not say what is in it for them.",
    ("negotiate", "strong"): "Offers or asks for a concrete alternative{q}.",
    ("negotiate", "weak"): "Shows openness, but {why}.",
    ("negotiate", "none"): "Offers no alternative and asks for none.",
    ("mindful", "yes"): "Stays on your goal without taking the bait.",
    ("mindful", "no"): "Drifts from your goal: {why}.",
    ("confident", "yes"): "Sounds calm and direct.",
    ("confident", "no"): "The tone undercuts the message: {why}.",
}


def _why(skill: str, cues: Cues) -> str:
    """The rubric's weak reason that the cues point to, quoting the words that triggered it."""
    q = cues.quote
    checks: dict[str, list[tuple[tuple[str, ...], str]]] = {
        "describe": [
            (("d_you_are_label", "d_label"), "it labels the person ('{}')"),
            (("d_absolute",), "it exaggerates ('{}')"),
            (("d_motive",), "it guesses at motives ('{}')"),
            (("d_vague",), "the facts stay vague ('{}')"),
        ],
        "express": [
            (("e_feel_like", "e_judgment_feeling"), "'{}' is a judgment dressed as a feeling"),
            (("e_you_make_me",), "'{}' blames instead of naming the feeling"),
            (("e_vague",), "'{}' leaves the feeling unnamed"),
        ],
        "assert": [
            (("a_hint",), "it is a hint ('{}') rather than a request"),
            (("c_permission", "c_hedge"), "hedging ('{}') softens it away"),
        ],
        "reinforce": [
            (("r_threat",), "it is a threat ('{}') rather than a benefit to them"),
            (("r_self_benefit",), "the gain is yours ('{}'), not theirs"),
            (("r_vague_benefit",), "the benefit is vague ('{}')"),
        ],
        "negotiate": [
            (("n_vague",), "'{}' is not a concrete option they can say yes to"),
            (("n_trial",), "the option is not spelled out"),
        ],
        "mindful": [
            (("m_insult",), "an insult ('{}')"),
            (("m_sarcasm",), "sarcasm ('{}')"),
            (("m_counter", "m_defend"), "arguing the side point ('{}')"),
            (("m_give_up",), "giving up on the goal ('{}')"),
            (("m_past",), "going back over the past ('{}')"),
            (("d_you_are_label",), "labelling the person ('{}')"),
        ],
        "confident": [
            (("c_apology",), "apologising ('{}')"),
            (("c_self_down",), "putting yourself down ('{}')"),
            (("c_permission",), "asking permission ('{}')"),
            (("c_hedge",), "hedging ('{}')"),
            (("m_give_up",), "giving in ('{}')"),
            (("m_insult", "m_exclaim"), "aggression ('{}')"),
        ],
    }
    for names, template in checks[skill]:
        quote = q(*names)
        if quote:
            return template.format(quote) if "{}" in template else template
    return {
        "describe": "it is not specific about what happened, when and how often",
        "express": "the feeling is not named plainly",
        "assert": "what you want is not said outright",
        "reinforce": "it is not clear what they gain",
        "negotiate": "no concrete option is on the table",
        "mindful": "the message moves away from what you are asking for",
        "confident": "the wording sounds unsure",
    }[skill]


_STRONG_QUOTES: dict[str, tuple[str, ...]] = {
    "describe": ("d_count", "d_last_n", "d_past_event", "d_since_ago", "d_digit"),
    "express": ("e_i_feel_feeling", "e_makes_me", "e_feeling_noun"),
    "assert": ("a_direct", "a_refusal", "a_imperative", "a_modal_q", "a_please"),
    "reinforce": ("r_you_gain", "r_we_gain", "r_so_that"),
    "negotiate": ("n_what_if", "n_give_to_get", "n_their_option", "n_trial"),
}


def reasoning(skill: str, level: str, cues: Cues) -> str:
    """One or two sentences explaining the level from the cues that fired."""
    quote = cues.quote(*_STRONG_QUOTES.get(skill, ()))
    template = _REASONS[(skill, level)]
    return template.format(q=f" ('{quote}')" if quote else "", why=_why(skill, cues))


_SUGGESTIONS: dict[str, dict[str, str]] = {
    "describe": {
        "weak": "Replace judgments and 'always/never' with what happened, when and how often.",
        "none": "Start with the plain facts: what happened, when, and how often.",
    },
    "express": {
        "weak": "Name your own feeling directly, 'I feel worried', not 'I feel like...'.",
        "none": "Tell them how this situation makes you feel, using a feeling word.",
    },
    "assert": {
        "weak": "Ask outright for what you want, e.g. 'I'd like you to...', without softening.",
        "none": "Say clearly what you are asking for, or say no clearly.",
    },
    "reinforce": {
        "weak": "Say what they concretely gain if they agree, not what you gain or a threat.",
        "none": "Add what is in it for them if they say yes.",
    },
    "negotiate": {
        "weak": "Put a specific option on the table, e.g. 'what if we tried it for two weeks?'",
        "none": "Offer a concrete trade or ask which alternative would work for them.",
    },
    "mindful": {
        "no": "Let the side point go and come back to your request, calmly, like a broken record.",
    },
    "confident": {
        "no": "Drop the apologies and hedges and state your point plainly and calmly.",
    },
}


def _suggestion(skill: str, level: str, cues: Cues) -> str:
    """The rubric's advice for this level, specific to what broke the state where we can tell."""
    v = cues.values
    shaky = v["c_apology"] or v["c_hedge"] or v["c_self_down"]
    loud = v["m_caps_words"] or v["m_exclaim"] or v["m_insult"]
    if skill == "confident" and loud and not shaky:
        return "Say it calmly and firmly; capitals and exclamation marks sound like lost control."
    if skill == "mindful" and v["m_give_up"] and not (v["m_insult"] or v["m_counter"]):
        return "Don't drop your request; acknowledge them and ask again for what you need."
    return _SUGGESTIONS[skill][level]


_HEDGE_STRIP = re.compile(
    r"\b(?:i'?m (?:so |really )?sorry(?: to bother you| but| to ask)?|sorry(?: but)?|"
    r"i apologi[sz]e(?: but)?|maybe|perhaps|possibly|i guess|i suppose|kind of|kinda|sort of|"
    r"sorta|just|if (?:that'?s|it'?s) (?:ok|okay|alright|fine)(?: with you)?|"
    r"if you don'?t mind|i'?m not sure(?: but| if)?|no pressure(?: if not)?|"
    r"(?:it'?s )?(?:totally )?(?:fine|ok|okay) if not|no worries if not|um+|uh+|hmm+|"
    r"i (?:hate|don'?t want) to (?:ask|bother you)(?: but)?|any chance)\b[,.]?",
    re.IGNORECASE,
)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+([,.!?])", r"\1", text)
    text = re.sub(r"([,.!?])(?:\s*[,.])+", r"\1", text)
    text = re.sub(r"^[\s,.]+", "", text)
    text = re.sub(r"\s{2,}", " ", text).strip()
    text = re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    return re.sub(r"\bi\b", "I", text)


def _goal_request(goal: str) -> str:
    """A request sentence with a bracketed gap, naming the learner's goal as the thing to ask."""
    g = re.sub(r"\s+", " ", goal).strip().rstrip(".")
    if not g or len(g) > 140:
        return "I'd like you to [say exactly what you want them to do]."
    return f"I'd like you to [say what you want, in your words: {g[0].lower()}{g[1:]}]."


def rewrite_hint(skill: str, level: str, text: str, goal: str, cues: Cues) -> str:
    """A partial, template-based improvement of the draft; [brackets] mark what to fill in."""
    text = text.strip()
    if skill == "confident":
        stripped = _tidy(_HEDGE_STRIP.sub("", text))
        if stripped and stripped.lower() != _tidy(text).lower():
            return stripped
        calm = _tidy(re.sub(r"[!?]{2,}", ".", text))
        return f"{calm} [Say it once, calmly, without capitals, exclamation marks or apologies.]"
    if skill == "describe":
        fixed = re.sub(
            r"\b(?:always|never|constantly|every single time|all the time)\b",
            "[how often, e.g. three times this week]",
            text,
            flags=re.IGNORECASE,
        )
        if fixed != text:
            return fixed
        return f"[What happened, when, how often: e.g. 'On Monday and Thursday ...'] {text}"
    if skill == "express":
        feeling = "[worried / hurt / frustrated]"
        body = re.sub(r"\bi feel (?:like|that)\b", f"I feel {feeling} because", text, flags=re.I)
        return body if body != text else f"I feel {feeling} about this. {text}"
    if skill == "assert":
        return f"{text} {_goal_request(goal)}"
    if skill == "reinforce":
        return f"{text} That way you'd [what they gain, e.g. have your evenings free]."
    if skill == "negotiate":
        return f"{text} What if [I do X] and you [do Y], and we try it for two weeks?"
    if skill == "mindful":
        # Broken record: acknowledge, leave the side point, and ask again.
        return f"I hear you, and I'm not going to argue about that. {_goal_request(goal)}"
    raise KeyError(skill)


# --------------------------------------------------------------------------- the rater


def rate_offline(
    *,
    text: str,
    situation: str = "",
    goal: str = "",
    partner_said: str = "",
    chosen: Sequence[str] = (),
    model: OfflineModel | None = None,
) -> Rating:
    """Rate a draft on all seven skills offline, with reasoning, suggestions and rewrite hints."""
    example = Example(id="", text=text, situation=situation, goal=goal, partner_said=partner_said)
    levels = (model or default_model()).predict_one(example)
    cues = _cues(example)
    skills: dict[str, SkillRating] = {}
    for key in SKILL_KEYS:
        level = levels[key]
        needs_help = level != SKILLS[key].top_level
        skills[key] = SkillRating(
            skill=key,
            level=level,
            reasoning=reasoning(key, level, cues),
            suggestion=_suggestion(key, level, cues) if needs_help else "",
            rewrite=rewrite_hint(key, level, text, goal, cues) if needs_help else "",
        )
    return Rating(
        engine="offline", skills=skills, chosen=tuple(k for k in STRATEGIES if k in chosen)
    )


def rate_many(
    examples: Iterable[Example], model: OfflineModel | None = None
) -> list[dict[str, str]]:
    """Levels only, for a batch (evaluation and mastery at scale)."""
    return (model or default_model()).predict(list(examples))
