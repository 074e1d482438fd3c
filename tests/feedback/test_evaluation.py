import random

import pytest
from sklearn.metrics import cohen_kappa_score, f1_score

from feedback.evaluation import cohen_kappa, evaluate, format_table, macro_f1, skill_report
from feedback.skills import SKILL_KEYS


@pytest.mark.parametrize("seed", range(25))
def test_macro_f1_and_kappa_equal_sklearn_on_random_binary_data(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 60)
    y_true = [rng.random() < 0.4 for _ in range(n)]
    y_pred = [rng.random() < 0.5 for _ in range(n)]
    assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    if len(set(y_true) | set(y_pred)) > 1:
        assert cohen_kappa(y_true, y_pred) == pytest.approx(cohen_kappa_score(y_true, y_pred))


@pytest.mark.parametrize("seed", range(10))
def test_level_kappa_equals_sklearn_on_random_three_level_data(seed):
    rng = random.Random(seed)
    levels = ["strong", "weak", "none"]
    gold = [rng.choice(levels) for _ in range(40)]
    pred = [rng.choice(levels) for _ in range(40)]
    report = skill_report("assert", gold, pred)
    assert report.kappa_levels == pytest.approx(cohen_kappa_score(gold, pred))
    binary_gold = [g == "strong" for g in gold]
    binary_pred = [p == "strong" for p in pred]
    assert report.macro_f1 == pytest.approx(f1_score(binary_gold, binary_pred, average="macro"))
    assert report.kappa == pytest.approx(cohen_kappa_score(binary_gold, binary_pred))


def test_weak_and_none_count_as_the_same_not_strong_class():
    report = skill_report("describe", ["weak", "none", "strong"], ["none", "weak", "strong"])
    assert report.macro_f1 == 1.0
    assert report.confusion == {"tp": 1, "fp": 0, "fn": 0, "tn": 2}
    assert report.kappa_levels < 1.0


def test_states_treat_yes_as_the_positive_class():
    report = skill_report("mindful", ["yes", "no", "no", "yes"], ["yes", "yes", "no", "no"])
    assert report.confusion == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert report.kappa_levels is None


def test_kappa_is_none_when_every_label_and_prediction_is_the_same():
    assert cohen_kappa(["yes"] * 4, ["yes"] * 4) is None


def test_unknown_level_is_rejected():
    with pytest.raises(ValueError):
        skill_report("mindful", ["strong"], ["yes"])


def test_overall_macro_f1_is_the_mean_over_the_seven_skills():
    rng = random.Random(3)
    gold, pred = [], []
    for _ in range(30):
        g, p = {}, {}
        for k in SKILL_KEYS:
            options = ["yes", "no"] if k in ("mindful", "confident") else ["strong", "weak", "none"]
            g[k], p[k] = rng.choice(options), rng.choice(options)
        gold.append(g)
        pred.append(p)
    report = evaluate(gold, pred)
    assert list(report.per_skill) == list(SKILL_KEYS)
    assert report.overall_macro_f1 == pytest.approx(
        sum(r.macro_f1 for r in report.per_skill.values()) / 7
    )
    as_dict = report.as_dict()
    assert set(as_dict) == {"overall_macro_f1", "per_skill", "n"}
    assert as_dict["n"] == 30
    assert "overall" in format_table(report)


# Floors under the offline rater's agreement (README, "Feedback that teaches"): a change to the
# cues, the settings or the bank that loses more than a message or two on either file fails here.
# dev.jsonl is the team's own held-back part; holdout.jsonl was written later, in other styles,
# and is never trained or tuned on (tests/feedback/test_raters_offline.py checks the loader).
@pytest.mark.parametrize(
    ("name", "overall_floor", "skill_floor"),
    [("dev.jsonl", 0.85, 0.72), ("holdout.jsonl", 0.83, 0.72)],
)
def test_offline_rater_agreement_stays_above_its_measured_floor(name, overall_floor, skill_floor):
    from feedback.raters.bank import DATA_DIR, read_jsonl
    from feedback.raters.offline import rate_many

    examples = read_jsonl(DATA_DIR / name)
    report = evaluate([e.labels for e in examples], rate_many(examples))
    assert report.overall_macro_f1 >= overall_floor, format_table(report)
    assert min(r.macro_f1 for r in report.per_skill.values()) >= skill_floor, format_table(report)


# Session 20's Assert cues (a want or need with any object, the ask named as such, terse and
# formal asks, verbless refusals) lifted Assert on dev 0.856 -> 0.903 and on the held-out set
# 0.799 -> 0.839; these floors fail if the cues stop reading those asks.
@pytest.mark.parametrize(("name", "floor"), [("dev.jsonl", 0.88), ("holdout.jsonl", 0.82)])
def test_offline_rater_reads_first_person_asks_as_strong_assert(name, floor):
    from feedback.raters.bank import DATA_DIR, read_jsonl
    from feedback.raters.offline import rate_many

    examples = read_jsonl(DATA_DIR / name)
    report = evaluate([e.labels for e in examples], rate_many(examples))
    assert report.per_skill["assert"].macro_f1 >= floor, format_table(report)
