"""The raters' TF-IDF for one draft: scikit-learn's `transform` against `TfidfRows`, in one run.

    python bench/tfidf_rows.py            # the dev split's drafts, median of 5 passes

Per draft, as the product does it: the model rater's ranking of the bank (the retrieval of
example pairs, in the worker) and the offline rater's levels (every feedback request, in the web
process), each with scikit-learn's `transform` (the way before session 7) and with
`feedback.raters.tfidf.TfidfRows` (now), the rest of the work the same. Prints microseconds per
draft and the ratio; bench/README.md (session 7) has the figures.
"""

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# One core, as elsewhere in bench/; must be set before numpy loads its thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from feedback.raters import offline  # noqa: E402
from feedback.raters.bank import DEV_PATH, Example, read_jsonl  # noqa: E402
from feedback.raters.features import normalise  # noqa: E402
from feedback.raters.retrieval import _document, default_index  # noqa: E402


def per_draft_us(work: Callable[[Example], object], drafts: list[Example], passes: int) -> float:
    """Median over passes of the mean time per draft, in microseconds."""
    for draft in drafts[:5]:
        work(draft)  # warm
    means = []
    for _ in range(passes):
        started = time.perf_counter()
        for draft in drafts:
            work(draft)
        means.append((time.perf_counter() - started) / len(drafts) * 1e6)
    return statistics.median(means)


def main() -> int:
    drafts = read_jsonl(DEV_PATH)
    index = default_index()
    model = offline.default_model()
    assert index.matrix is not None and model.vectorizer is not None

    def ranking_transform(e: Example) -> object:
        query = index.vectorizer.transform([_document(e.text, e.partner_said, e.situation)])
        sims = (index.matrix @ query.T).toarray().ravel()
        return np.lexsort((np.arange(len(sims)), -sims))

    def ranking_rows(e: Example) -> object:
        return index.ranking(e.text, e.partner_said, e.situation)

    def levels_transform(e: Example) -> object:
        cues = [offline._cues(e)]
        ngrams = model.vectorizer.transform([normalise(e.text)])
        return {k: m.predict(ngrams, cues) for k, m in model.skills.items()}

    def levels_rows(e: Example) -> object:
        return model.predict([e])

    print(f"{len(drafts)} drafts of {DEV_PATH.name}, median of 5 passes, microseconds per draft")
    for name, before, after in (
        ("model rater: rank the bank", ranking_transform, ranking_rows),
        ("offline rater: levels", levels_transform, levels_rows),
    ):
        old, new = per_draft_us(before, drafts, 5), per_draft_us(after, drafts, 5)
        print(f"{name:30} transform {old:8.0f}   TfidfRows {new:8.0f}   ratio {old / new:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
