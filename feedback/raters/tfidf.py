"""TF-IDF rows of a fitted `TfidfVectorizer`, for one text at a time, without its per-call cost.

The raters vectorise one draft per request. scikit-learn's `transform` is built for batches: for a
single short text it spends about a millisecond in input checks and sparse-matrix steps around
the 0.2 ms of actual tokenising (measured on the bench machine; bench/README.md, session 7).
`TfidfRows` reads the fitted vocabulary and weights once and repeats the same arithmetic (counts,
then 1 + log for sublinear tf, times idf, then the norm) on plain arrays. tests/feedback/
test_tfidf.py checks it against `transform` on the whole bank.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer


class TfidfRows:
    """What `vectorizer.transform` gives, for texts one by one (the vectorizer must be fitted)."""

    def __init__(self, vectorizer: TfidfVectorizer) -> None:
        self.analyze = vectorizer.build_analyzer()
        self.vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.n_features = len(self.vocabulary)
        self.binary = bool(vectorizer.binary)
        self.sublinear = bool(vectorizer.sublinear_tf)
        self.idf = np.asarray(vectorizer.idf_, dtype=np.float64) if vectorizer.use_idf else None
        if vectorizer.norm not in ("l2", "l1", None):
            raise ValueError(f"unsupported norm: {vectorizer.norm!r}")
        self.norm = vectorizer.norm

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The text's non-zero columns and their weights (columns in no particular order)."""
        return self.row_of_counts(Counter(self.analyze(text)))

    def row_of_counts(self, counts: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """`row` for a text whose terms were already counted (`Counter(analyze(text))`)."""
        vocabulary = self.vocabulary
        found = [(vocabulary[term], n) for term, n in counts.items() if term in vocabulary]
        if not found:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float64)
        columns = np.fromiter((c for c, _ in found), dtype=np.intp, count=len(found))
        values = np.fromiter((n for _, n in found), dtype=np.float64, count=len(found))
        if self.binary:
            values[:] = 1.0
        elif self.sublinear:
            values = np.log(values) + 1.0
        if self.idf is not None:
            values = values * self.idf[columns]
        if self.norm == "l2":
            length = np.sqrt(np.dot(values, values))
        elif self.norm == "l1":
            length = np.abs(values).sum()
        else:
            length = 0.0
        if length > 0:
            values = values / length
        return columns, values

    def dense(self, text: str) -> np.ndarray:
        """The text's row as a dense vector (for a product with a fitted matrix)."""
        return self.dense_of_counts(Counter(self.analyze(text)))

    def dense_of_counts(self, counts: Mapping[str, int]) -> np.ndarray:
        """`dense` for a text whose terms were already counted."""
        vector = np.zeros(self.n_features, dtype=np.float64)
        columns, values = self.row_of_counts(counts)
        vector[columns] = values
        return vector

    def matrix(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """The rows of several texts, as `transform` returns them."""
        rows = [self.row(text) for text in texts]
        indptr = np.cumsum([0, *(len(c) for c, _ in rows)])
        columns = np.concatenate([c for c, _ in rows]) if rows else np.zeros(0, dtype=np.intp)
        values = np.concatenate([v for _, v in rows]) if rows else np.zeros(0)
        found = sparse.csr_matrix(
            (values, columns, indptr), shape=(len(texts), self.n_features), dtype=np.float64
        )
        found.sort_indices()
        return found
