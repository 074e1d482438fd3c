"""The raters' one-text TF-IDF rows are scikit-learn's `transform`, on every text of the bank."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from feedback.raters import offline
from feedback.raters.bank import DEV_PATH, TRAIN_PATH, read_jsonl
from feedback.raters.features import normalise
from feedback.raters.retrieval import Index, _document, default_index
from feedback.raters.tfidf import TfidfRows

# Texts the bank never saw: words outside its vocabulary, nothing at all, one repeated word.
ODD = ["", "zzzz qqqq", "please please please please", "Ça va? Naïve café — 3 times!!"]


def bank_texts() -> list[str]:
    texts = [e.text for path in (DEV_PATH, TRAIN_PATH) for e in read_jsonl(path)]
    assert len(texts) > 300
    return texts + ODD


def assert_rows_equal(rows: TfidfRows, vectorizer: TfidfVectorizer, texts: list[str]) -> None:
    expected = vectorizer.transform(texts)
    got = rows.matrix(texts)
    assert got.shape == expected.shape
    assert np.array_equal(got.indptr, expected.indptr)
    assert np.array_equal(got.indices, expected.indices)
    assert np.allclose(got.data, expected.data, rtol=1e-12, atol=1e-15)
    for i in (0, len(texts) // 2, len(texts) - 1):
        assert np.allclose(rows.dense(texts[i]), expected[i].toarray().ravel(), atol=1e-15)


@pytest.mark.parametrize(
    "options",
    [
        {"analyzer": "char_wb", "ngram_range": (3, 5), "sublinear_tf": True},  # retrieval's
        {"ngram_range": (1, 2), "sublinear_tf": True, "token_pattern": r"[a-z']+"},  # rater's
        {"norm": "l1", "use_idf": False},
        {"binary": True, "norm": None, "min_df": 2},
    ],
)
def test_rows_match_scikit_learns_transform(options: dict[str, object]) -> None:
    texts = bank_texts()
    vectorizer = TfidfVectorizer(**options).fit(texts[: len(texts) // 2])  # unseen words too
    assert_rows_equal(TfidfRows(vectorizer), vectorizer, texts)


def test_unsupported_norm_is_refused() -> None:
    vectorizer = TfidfVectorizer().fit(["a text", "another text"])
    vectorizer.norm = "max"
    with pytest.raises(ValueError, match="norm"):
        TfidfRows(vectorizer)


def test_the_retrieval_index_ranks_the_bank_as_scikit_learn_would() -> None:
    index = default_index()
    assert index.matrix is not None
    examples = read_jsonl(DEV_PATH)
    assert len(examples) >= 40
    for example in examples:
        document = _document(example.text, example.partner_said, example.situation)
        reference = (index.matrix @ index.vectorizer.transform([document]).T).toarray().ravel()
        got = index.similarities(example.text, example.partner_said, example.situation)
        assert np.allclose(got, reference, rtol=1e-12, atol=1e-15)


def test_the_offline_rater_reads_its_ngrams_as_scikit_learn_would() -> None:
    model = offline.default_model()
    assert model.vectorizer is not None and model.rows is not None
    texts = [normalise(t) for t in bank_texts()]
    assert_rows_equal(model.rows, model.vectorizer, texts)


def test_a_drafts_document_is_counted_from_its_parts_exactly() -> None:
    """The index counts the draft twice and its context once per context: the same counts, in
    the same order, and the same similarities to the last bit as counting the whole document."""
    index = default_index()
    assert index.rows is not None and index.matrix is not None
    examples = [*read_jsonl(DEV_PATH), *index.examples]
    others = [e.partner_said for e in reversed(examples)]  # another conversation's words too
    for example, other in zip(examples, others, strict=True):
        for partner in (example.partner_said, other, ""):
            document = _document(example.text, partner, example.situation)
            whole = Counter(index.rows.analyze(document))
            counted = index.document_counts(example.text, partner, example.situation)
            assert list(counted.items()) == list(whole.items())
            reference = index.matrix @ index.rows.dense(document)
            got = index.similarities(example.text, partner, example.situation)
            assert np.array_equal(got, reference)


def test_a_turns_context_is_counted_once_for_all_its_drafts() -> None:
    index = Index(default_index().examples[:40])
    drafts = ["I feel worried about the rent.", "Could you pay by Friday?", "Thanks for that."]
    for draft in drafts:
        index.similarities(draft, "I'm busy right now.", "Rent is late again.")
    info = index._context.cache_info()
    assert (info.misses, info.hits) == (1, len(drafts) - 1)
