"""Agreement between a rater and gold labels, as the published Table 1 measures it.

Per skill the task is binary: strong versus not strong (yes versus no for mindful and confident).
Macro F1 is the mean of the two classes' F1; `overall_macro_f1` is the mean over the seven skills.
Cohen's kappa is reported on the same binary task (`kappa`) and, for the five strategies, on the
three levels strong/weak/none (`kappa_levels`, unweighted). Pure: no I/O, no Django.
"""

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

from feedback.skills import LEVELS, SKILL_KEYS, SKILLS


def _f1(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def macro_f1(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Unweighted mean of per-class F1 over the classes seen in either list (as sklearn does)."""
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    classes = set(y_true) | set(y_pred)
    if not classes:
        return 0.0
    scores = []
    for c in classes:
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p != c)
        scores.append(_f1(tp, fp, fn))
    return sum(scores) / len(scores)


def cohen_kappa(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float | None:
    """Unweighted Cohen's kappa; None when chance agreement is total and kappa is undefined."""
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    n = len(y_true)
    if n == 0:
        return None
    observed = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == p) / n
    true_counts, pred_counts = Counter(y_true), Counter(y_pred)
    expected = sum(true_counts[c] * pred_counts[c] for c in true_counts) / (n * n)
    if expected == 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class SkillReport:
    """Agreement figures for one skill."""

    skill: str
    n: int
    macro_f1: float
    f1_top: float
    f1_rest: float
    kappa: float | None
    kappa_levels: float | None
    confusion: dict[str, int]
    level_confusion: dict[str, dict[str, int]]
    gold_top_share: float


@dataclass(frozen=True)
class Report:
    """Agreement figures for all seven skills."""

    n: int
    overall_macro_f1: float
    per_skill: dict[str, SkillReport]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form: overall_macro_f1, per_skill, n."""
        return {
            "overall_macro_f1": self.overall_macro_f1,
            "per_skill": {k: asdict(v) for k, v in self.per_skill.items()},
            "n": self.n,
        }


def skill_report(skill: str, gold: Sequence[str], predicted: Sequence[str]) -> SkillReport:
    """Binary and level agreement for one skill from parallel lists of levels."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    levels = LEVELS[skill]
    for level in (*gold, *predicted):
        if level not in levels:
            raise ValueError(f"{level!r} is not a level of {skill!r}")
    top = SKILLS[skill].top_level
    gold_bin = [g == top for g in gold]
    pred_bin = [p == top for p in predicted]
    pairs = list(zip(gold_bin, pred_bin, strict=True))
    tp = sum(1 for g, p in pairs if g and p)
    fp = sum(1 for g, p in pairs if not g and p)
    fn = sum(1 for g, p in pairs if g and not p)
    tn = sum(1 for g, p in pairs if not g and not p)
    level_confusion = {g: {p: 0 for p in levels} for g in levels}
    for g, p in zip(gold, predicted, strict=True):
        level_confusion[g][p] += 1
    return SkillReport(
        skill=skill,
        n=len(gold),
        macro_f1=macro_f1(gold_bin, pred_bin),
        f1_top=_f1(tp, fp, fn),
        f1_rest=_f1(tn, fn, fp),
        kappa=cohen_kappa(gold_bin, pred_bin),
        kappa_levels=cohen_kappa(gold, predicted) if len(levels) > 2 else None,
        confusion={"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        level_confusion=level_confusion,
        gold_top_share=(tp + fn) / len(gold) if gold else 0.0,
    )


def evaluate(gold: Sequence[Mapping[str, str]], predicted: Sequence[Mapping[str, str]]) -> Report:
    """Compare predicted against gold ratings (one mapping of all seven skills per message)."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    per_skill = {
        k: skill_report(k, [g[k] for g in gold], [p[k] for p in predicted]) for k in SKILL_KEYS
    }
    overall = sum(r.macro_f1 for r in per_skill.values()) / len(per_skill)
    return Report(n=len(gold), overall_macro_f1=overall, per_skill=per_skill)


def format_table(report: Report) -> str:
    """A readable fixed-width table of the report for the terminal."""
    header = (
        f"{'skill':<10} {'macroF1':>7} {'F1 top':>7} {'F1 rest':>7} {'kappa':>6} {'kappa3':>6}"
        f" {'tp':>4} {'fp':>4} {'fn':>4} {'tn':>4} {'gold top':>8}"
    )
    lines = [header]
    for r in report.per_skill.values():
        kappa = f"{r.kappa:6.3f}" if r.kappa is not None else f"{'-':>6}"
        kappa3 = f"{r.kappa_levels:6.3f}" if r.kappa_levels is not None else f"{'-':>6}"
        c = r.confusion
        lines.append(
            f"{r.skill:<10} {r.macro_f1:7.3f} {r.f1_top:7.3f} {r.f1_rest:7.3f} {kappa} {kappa3}"
            f" {c['tp']:4d} {c['fp']:4d} {c['fn']:4d} {c['tn']:4d} {r.gold_top_share:8.0%}"
        )
    lines.append(f"{'overall':<10} {report.overall_macro_f1:7.3f}   (n = {report.n})")
    return "\n".join(lines)
