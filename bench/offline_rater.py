"""Offline rater: time per message (p50/p95 on one core) and cross-validated agreement on train.

    python bench/offline_rater.py                    # timing over feedback/data/dev.jsonl
    python bench/offline_rater.py --cv               # 5-fold CV on the train split, by situation
    python bench/offline_rater.py --cv --grid        # the small grid the defaults came from

Timing rates each message alone (as the product does), after one warm-up call that trains the
model. Cross-validation groups folds by situation, so no situation is in both halves, and never
reads dev labels.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# One core, as the budget is stated; must be set before numpy loads its thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from feedback.evaluation import evaluate, format_table  # noqa: E402
from feedback.raters.bank import DEV_PATH, TRAIN_PATH, Example, read_jsonl  # noqa: E402
from feedback.raters.offline import (  # noqa: E402
    DEFAULT_SETTINGS,
    SEED_PATH,
    Settings,
    rate_offline,
    rules_only,
    train,
)


def cross_validate(
    examples: list[Example], settings: Settings, folds: int = 5, extra: list[Example] | None = None
) -> tuple[float, dict[str, float], list[dict[str, str]]]:
    """Grouped k-fold CV: fit on k-1 folds (plus `extra`), predict the held-out fold."""
    situations = sorted({e.situation for e in examples})
    fold_of = {s: i % folds for i, s in enumerate(situations)}
    predictions: list[dict[str, str] | None] = [None] * len(examples)
    for fold in range(folds):
        fit = [e for e in examples if fold_of[e.situation] != fold] + (extra or [])
        held = [i for i, e in enumerate(examples) if fold_of[e.situation] == fold]
        model = train(fit, settings)
        for i, levels in zip(held, model.predict([examples[i] for i in held]), strict=True):
            predictions[i] = levels
    report = evaluate([e.labels for e in examples], predictions)  # type: ignore[arg-type]
    per_skill = {k: r.macro_f1 for k, r in report.per_skill.items()}
    return report.overall_macro_f1, per_skill, predictions  # type: ignore[return-value]


def main() -> None:
    """Parse arguments and run the timing or the cross-validation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cv", action="store_true", help="cross-validate on the train split")
    parser.add_argument("--grid", action="store_true", help="with --cv: try a small grid")
    parser.add_argument("--train", nargs="*", default=[str(TRAIN_PATH)])
    parser.add_argument("--dev", default=str(DEV_PATH))
    parser.add_argument("--no-seed", action="store_true", help="leave seed.jsonl out of fitting")
    args = parser.parse_args()

    if args.cv:
        examples = [
            e for p in args.train for e in read_jsonl(p) if e.split != "dev" and e.fully_labelled
        ]
        extra = [] if args.no_seed or not SEED_PATH.exists() else read_jsonl(SEED_PATH)
        print(f"train examples: {len(examples)} (+{len(extra)} seed always in the fit)")
        rules = rules_only().predict(examples)
        print("rubric rules alone:")
        print(format_table(evaluate([e.labels for e in examples], rules)))
        grid = [DEFAULT_SETTINGS]
        if args.grid:
            grid = [
                Settings(c=c, ngram_weight=w, rule_weight=r)
                for c in (0.1, 0.3, 1.0)
                for w in (0.0, 0.3, 0.6)
                for r in (0.0, 1.0, 2.0, 4.0)
            ]
        for settings in grid:
            overall, per_skill, _ = cross_validate(examples, settings, extra=extra)
            figures = " ".join(f"{k[:4]} {v:.3f}" for k, v in per_skill.items())
            print(f"{settings}  overall {overall:.3f}  {figures}")
        return

    examples = read_jsonl(args.dev)
    rate_offline(text="warm-up", chosen=())
    wall, cpu = [], []
    for e in examples:
        start, start_cpu = time.perf_counter(), time.process_time()
        rate_offline(
            text=e.text,
            situation=e.situation,
            goal=e.goal,
            partner_said=e.partner_said,
            chosen=("describe", "express", "assert", "reinforce", "negotiate"),
        )
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    print(f"offline rater over {len(wall)} messages, one thread (CPU time is immune to load):")
    for name, timings in (("wall", wall), ("cpu", cpu)):
        timings.sort()
        p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
        print(
            f"  {name}: p50 {statistics.median(timings):.2f} ms, p95 {p95:.2f} ms, "
            f"max {timings[-1]:.2f} ms"
        )


if __name__ == "__main__":
    main()
