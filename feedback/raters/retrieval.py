"""A local TF-IDF index over the bank's train split: nearest examples and contrasting pairs.

A contrasting pair is a bank message where a skill is weak or missing, next to the writer's
rewrite of it in which that skill is strong. The model rater shows the pairs nearest to the
learner's draft. Everything is built in memory from the JSONL files; nothing is downloaded.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from feedback.raters.bank import TRAIN_PATH, Example, train_examples
from feedback.raters.features import normalise
from feedback.raters.tfidf import TfidfRows
from feedback.skills import SKILLS


@dataclass(frozen=True)
class Pair:
    """A weak/none (or no) use of a skill and its strong (or yes) rewrite."""

    skill: str
    level: str
    before: str
    after: str
    partner_said: str
    similarity: float


def _document(text: str, partner_said: str, situation: str) -> str:
    # The draft dominates; context words help find pairs from similar conversations.
    draft = normalise(text)
    return f"{draft} {draft} {normalise(partner_said)} {normalise(situation)}"


# The index's analyser (character n-grams within words, `char_wb`) counts each word on its own,
# so a document's counts are the sum of its parts' counts: a draft's document counts as twice
# the draft plus its context. The context (the partner's last words and the situation) is the
# same for every draft of a turn, and for each feedback request on them: counted once.
CONTEXTS_KEPT = 512


def _context_counts(analyze: Any, partner_said: str, situation: str) -> Counter[str]:
    return Counter(analyze(f"{normalise(partner_said)} {normalise(situation)}"))


class Index:
    """Cosine-similarity search over the train examples (word and character n-grams)."""

    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = list(examples)
        self.vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=1
        )
        documents = [_document(e.text, e.partner_said, e.situation) for e in self.examples]
        self.matrix = self.vectorizer.fit_transform(documents) if documents else None
        self.rows = TfidfRows(self.vectorizer) if documents else None
        if self.rows is not None:
            self._context = lru_cache(maxsize=CONTEXTS_KEPT)(
                partial(_context_counts, self.rows.analyze)
            )

    def document_counts(self, text: str, partner_said: str = "", situation: str = "") -> Counter:
        """The n-gram counts of `_document(text, partner_said, situation)`, in the same order
        (the draft's terms first), with the context's part counted once per context."""
        assert self.rows is not None
        counts = Counter(self.rows.analyze(normalise(text)))
        for term in counts:
            counts[term] *= 2
        counts.update(self._context(partner_said, situation))  # adds; the cached one is unchanged
        return counts

    def similarities(self, text: str, partner_said: str = "", situation: str = "") -> np.ndarray:
        """Cosine similarity of the draft (in its context) to every example, in bank order."""
        if self.matrix is None or self.rows is None:
            return np.zeros(0)
        return self.matrix @ self.rows.dense_of_counts(
            self.document_counts(text, partner_said, situation)
        )

    def ranking(self, text: str, partner_said: str = "", situation: str = "") -> "Ranking":
        """The examples by similarity to the draft: compute once, then ask for each skill's pairs
        (the transform is what costs)."""
        sims = self.similarities(text, partner_said, situation)
        # Stable order on ties (by position) keeps prompts reproducible.
        order = np.lexsort((np.arange(len(sims)), -sims)).tolist()
        return Ranking(self, sims, order)

    def pairs(
        self, skill: str, text: str, *, partner_said: str = "", situation: str = "", k: int = 2
    ) -> list[Pair]:
        """The k most similar examples where `skill` is not at its top level and has a rewrite."""
        return self.ranking(text, partner_said, situation).pairs(skill, k=k)

    def neighbours(
        self, text: str, *, partner_said: str = "", situation: str = "", k: int = 3
    ) -> list[tuple[Example, float]]:
        """The k most similar labelled examples with their similarity."""
        ranking = self.ranking(text, partner_said, situation)
        return [(self.examples[i], float(ranking.sims[i])) for i in ranking.order[:k]]


@dataclass(frozen=True)
class Ranking:
    """One draft's similarity to every example of an index, most similar first."""

    index: Index
    sims: np.ndarray
    order: list[int]

    def pairs(self, skill: str, k: int = 2) -> list[Pair]:
        """The k most similar examples where `skill` is not at its top level and has a rewrite."""
        top = SKILLS[skill].top_level
        sims, order = self.sims, self.order
        found: list[Pair] = []
        seen: set[str] = set()
        for i in order:
            e = self.index.examples[i]
            level = e.labels.get(skill)
            after = e.rewrites.get(skill, "").strip()
            if level in (None, top) or not after or e.text in seen:
                continue
            seen.add(e.text)
            found.append(Pair(skill, level, e.text, after, e.partner_said, float(sims[i])))
            if len(found) == k:
                break
        return found


@lru_cache(maxsize=1)
def default_index() -> Index:
    """The index over train.jsonl, built once per process."""
    return Index(train_examples([TRAIN_PATH]))
