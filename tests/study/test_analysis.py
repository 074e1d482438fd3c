import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from study.analysis import (
    Observation,
    SkillRating,
    bonus_list,
    did_table,
    mastery_observations,
    mastery_tables,
    mean_ci,
    paired_test,
    prepost_table,
    two_group_test,
)

ARMS = ["simulation", "feedback"]


def close(ours: float | None, theirs: float) -> bool:
    assert ours is not None
    return math.isclose(ours, float(theirs), rel_tol=1e-9, abs_tol=1e-12)


def synthetic_study(
    seed: int = 0, n_per_arm: int = 40, missing: float = 0.15
) -> tuple[list[Observation], dict]:
    """Two arms, two situations, two items; the feedback arm gains 1.0 on S1, the other 0.3."""
    rng = np.random.default_rng(seed)
    effect = {("feedback", "S1"): 1.0, ("simulation", "S1"): 0.3}
    observations = []
    truth: dict = {}
    for arm in ARMS:
        for i in range(n_per_arm):
            participant = f"{arm[:3]}-{i:03d}"
            for situation in ("S1", "S2"):
                for item in ("confident", "fear"):
                    pre = float(np.clip(np.round(rng.normal(3.5, 1.2)), 1, 7))
                    shift = effect.get((arm, situation), 0.0) * (1 if item == "confident" else -1)
                    post = float(np.clip(np.round(pre + shift + rng.normal(0, 1.0)), 1, 7))
                    values = {"pre": pre, "post": post}
                    for time in ("pre", "post"):
                        if rng.random() < missing:
                            values[time] = None
                        observations.append(
                            Observation(participant, arm, situation, item, time, values[time])
                        )
                    truth[(arm, situation, item, participant)] = values
    return observations, truth


def complete_pairs(truth: dict, arm: str, situation: str, item: str) -> tuple[list, list]:
    pre, post = [], []
    for (a, s, i, _), values in sorted(truth.items()):
        if (a, s, i) == (arm, situation, item) and None not in values.values():
            pre.append(values["pre"])
            post.append(values["post"])
    return pre, post


def test_prepost_table_equals_scipy_paired_ttest_with_missing_answers() -> None:
    observations, truth = synthetic_study()
    rows = prepost_table(observations)
    assert len(rows) == 2 * 2 * 2
    for row in rows:
        pre, post = complete_pairs(truth, row["arm"], row["situation"], row["item"])
        expected = stats.ttest_rel(post, pre)
        diff = np.subtract(post, pre)
        assert row["n"] == len(pre) < 40  # some answers were missing
        assert row["n_incomplete"] > 0
        assert close(row["t"], expected.statistic)
        assert close(row["p"], expected.pvalue)
        assert close(row["df"], expected.df)
        assert close(row["d_z"], np.mean(diff) / np.std(diff, ddof=1))
        d_av = np.mean(diff) / ((np.std(pre, ddof=1) + np.std(post, ddof=1)) / 2)
        assert close(row["d_av"], d_av)
        assert close(row["pre_mean"], np.mean(pre))
        assert close(row["post_mean"], np.mean(post))
        pct = (np.mean(post) - np.mean(pre)) / np.mean(pre) * 100
        assert close(row["percent_change"], pct)
        ci = expected.confidence_interval(0.95)
        assert close(row["change_ci_low"], ci.low)
        assert close(row["change_ci_high"], ci.high)


def test_prepost_table_recovers_the_known_effects() -> None:
    observations, _ = synthetic_study(seed=1, n_per_arm=200, missing=0.05)
    rows = {(r["arm"], r["situation"], r["item"]): r for r in prepost_table(observations)}
    gain = rows[("feedback", "S1", "confident")]
    assert gain["p"] < 1e-6 and gain["t"] > 0 and gain["mean_change"] > 0.6
    assert rows[("feedback", "S1", "fear")]["t"] < 0
    assert rows[("feedback", "S2", "confident")]["p"] > 1e-3  # no effect planted on S2


def test_did_table_equals_scipy_welch_by_default_and_student_on_request() -> None:
    observations, truth = synthetic_study(seed=2)
    for equal_var in (False, True):
        rows = did_table(observations, reference_arm="simulation", equal_var=equal_var)
        assert {r["arm"] for r in rows} == {"feedback"}
        assert len(rows) == 4
        for row in rows:
            changes = []
            for arm in ("feedback", "simulation"):
                pre, post = complete_pairs(truth, arm, row["situation"], row["item"])
                changes.append(np.subtract(post, pre))
            expected = stats.ttest_ind(changes[0], changes[1], equal_var=equal_var)
            assert row["test"] == ("student" if equal_var else "welch")
            assert close(row["t"], expected.statistic)
            assert close(row["p"], expected.pvalue)
            assert close(row["df"], expected.df)
            ci = expected.confidence_interval(0.95)
            assert close(row["ci_low"], ci.low)
            assert close(row["ci_high"], ci.high)
            n1, n2 = len(changes[0]), len(changes[1])
            pooled = math.sqrt(
                ((n1 - 1) * np.var(changes[0], ddof=1) + (n2 - 1) * np.var(changes[1], ddof=1))
                / (n1 + n2 - 2)
            )
            d = (np.mean(changes[0]) - np.mean(changes[1])) / pooled
            assert close(row["d"], d)
            assert close(row["g"], d * (1 - 3 / (4 * (n1 + n2) - 9)))
            assert close(row["difference"], np.mean(changes[0]) - np.mean(changes[1]))


def test_did_detects_the_planted_difference_between_arms() -> None:
    observations, _ = synthetic_study(seed=3, n_per_arm=150, missing=0.0)
    rows = {
        (r["situation"], r["item"]): r for r in did_table(observations, reference_arm="simulation")
    }
    assert rows[("S1", "confident")]["difference"] > 0.4
    assert rows[("S1", "confident")]["p"] < 1e-4
    assert rows[("S1", "fear")]["difference"] < 0


@settings(max_examples=80, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 7)), min_size=2, max_size=60).filter(
        lambda pairs: len({b - a for a, b in pairs}) > 1
    )
)
def test_paired_test_equals_scipy_on_any_likert_data(data: list[tuple[int, int]]) -> None:
    pre = [a for a, _ in data]
    post = [b for _, b in data]
    row = paired_test(pre, post)
    expected = stats.ttest_rel(post, pre)
    assert close(row["t"], expected.statistic)
    assert close(row["p"], expected.pvalue)


# scipy itself warns about precision when a group is constant; our code does not divide there.
@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
@settings(max_examples=80, deadline=None)
@given(
    a=st.lists(st.floats(-6, 6, allow_nan=False), min_size=2, max_size=40),
    b=st.lists(st.floats(-6, 6, allow_nan=False), min_size=2, max_size=40),
    equal_var=st.booleans(),
)
def test_two_group_test_equals_scipy_on_any_data(
    a: list[float], b: list[float], equal_var: bool
) -> None:
    if np.var(a) + np.var(b) < 1e-6:
        return  # near-zero spread: t is numerically meaningless on both sides
    row = two_group_test(a, b, equal_var=equal_var)
    expected = stats.ttest_ind(a, b, equal_var=equal_var)
    assert math.isclose(row["t"], expected.statistic, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(row["p"], expected.pvalue, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("n", [0, 1])
def test_paired_test_with_fewer_than_two_pairs_returns_none_not_an_error(n: int) -> None:
    row = paired_test([3.0] * n, [5.0] * n)
    assert row["n"] == n
    assert row["t"] is None and row["p"] is None and row["d_z"] is None and row["df"] is None
    if n == 1:
        assert row["mean_change"] == 2.0 and row["percent_change"] == pytest.approx(200 / 3)
    else:
        assert row["pre_mean"] is None and row["mean_change"] is None


def test_paired_test_with_two_pairs_works() -> None:
    row = paired_test([1, 2], [2, 4])
    expected = stats.ttest_rel([2, 4], [1, 2])
    assert close(row["t"], expected.statistic) and close(row["p"], expected.pvalue)


def test_paired_test_with_identical_changes_reports_the_change_but_no_test() -> None:
    row = paired_test([2, 3, 4], [3, 4, 5])
    assert row["mean_change"] == 1.0 and row["sd_change"] == 0.0
    assert row["t"] is None and row["p"] is None and row["d_z"] is None
    assert row["d_av"] == pytest.approx(1.0)


def test_paired_test_with_no_variation_at_all_is_all_none_but_means() -> None:
    row = paired_test([4, 4, 4], [4, 4, 4])
    assert row["pre_mean"] == 4.0 and row["mean_change"] == 0.0
    assert row["t"] is None and row["d_z"] is None and row["d_av"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in row.values())


def test_percent_change_is_none_when_the_pre_mean_is_zero() -> None:
    row = paired_test([0, 0, 0], [1, 2, 0])
    assert row["percent_change"] is None
    assert row["t"] is not None


def test_two_group_test_with_tiny_groups_returns_none() -> None:
    for a, b in (([], [1.0, 2.0]), ([1.0], [1.0, 2.0]), ([1.0, 2.0], [3.0])):
        row = two_group_test(a, b)
        assert row["t"] is None and row["p"] is None and row["d"] is None


def test_two_group_test_with_zero_variance_returns_none_not_nan() -> None:
    row = two_group_test([1.0, 1.0, 1.0], [2.0, 2.0])
    assert row["difference"] == -1.0
    assert row["t"] is None and row["d"] is None and row["df"] is None


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_welch_test_with_one_constant_group_still_runs_like_scipy() -> None:
    a, b = [1.0, 1.0, 1.0], [2.0, 3.0, 5.0]
    row = two_group_test(a, b)
    expected = stats.ttest_ind(a, b, equal_var=False)
    assert close(row["t"], expected.statistic) and close(row["p"], expected.pvalue)


def test_prepost_table_lists_named_cells_without_data_as_empty_rows() -> None:
    rows = prepost_table(
        [Observation("p1", "a", "S1", "confident", "pre", 3)],
        arms=["a", "b"],
        situations=["S1"],
        items=["confident"],
    )
    assert [(r["arm"], r["n"], r["n_incomplete"]) for r in rows] == [("a", 0, 1), ("b", 0, 0)]


def test_missing_values_may_be_none_or_nan() -> None:
    rows = prepost_table(
        [
            Observation("p1", "a", "S1", "x", "pre", 3),
            Observation("p1", "a", "S1", "x", "post", float("nan")),
            Observation("p2", "a", "S1", "x", "pre", None),
            Observation("p2", "a", "S1", "x", "post", 4),
        ]
    )
    assert rows[0]["n"] == 0 and rows[0]["n_incomplete"] == 2


def test_duplicate_answers_and_participants_in_two_arms_are_refused() -> None:
    with pytest.raises(ValueError, match="two pre values"):
        prepost_table([Observation("p", "a", "S1", "x", "pre", 1)] * 2)
    with pytest.raises(ValueError, match="two arms"):
        prepost_table(
            [
                Observation("p", "a", "S1", "x", "pre", 1),
                Observation("p", "b", "S1", "x", "post", 1),
            ]
        )
    with pytest.raises(ValueError, match="'pre' or 'post'"):
        prepost_table([Observation("p", "a", "S1", "x", "during", 1)])  # type: ignore[arg-type]


def test_rows_hold_only_plain_python_values_for_templates_and_json() -> None:
    observations, _ = synthetic_study(seed=4, n_per_arm=10)
    rows = prepost_table(observations) + did_table(observations, reference_arm="simulation")
    for row in rows:
        for value in row.values():
            assert value is None or type(value) in (str, int, float)


def ratings_for(arm: str, participant: str, pre: list[list[float]], post: list[list[float]]):
    """Each inner list is one message's scores: describe, then mindful."""
    out = []
    for time, messages in (("pre", pre), ("post", post)):
        for m, scores in enumerate(messages):
            for skill, score in zip(("describe", "mindful"), scores, strict=False):
                out.append(SkillRating(participant, arm, "S1", time, f"{time}{m}", skill, score))
    return out


def test_mastery_is_the_mean_per_skill_and_the_mean_of_message_means_overall() -> None:
    ratings = ratings_for("a", "p1", pre=[[0, 2], [1]], post=[[2, 2]])
    values = {(o.item, o.time): o.value for o in mastery_observations(ratings)}
    assert values[("describe", "pre")] == 0.5
    assert values[("mindful", "pre")] == 2.0
    # message means 1.0 and 1.0 -> 1.0 (not the mean of all three ratings, 1.0 here too)
    assert values[("overall", "pre")] == 1.0
    assert values[("overall", "post")] == 2.0


def test_mastery_tables_equal_scipy_on_per_participant_scores() -> None:
    rng = np.random.default_rng(5)
    ratings = []
    for arm, gain in (("simulation", 0.0), ("feedback", 0.4)):
        for i in range(30):
            level = rng.uniform(0.3, 1.5)
            pre = [
                [float(np.clip(round(level + rng.normal(0, 0.5)), 0, 2)) for _ in range(2)]
                for _ in range(5)
            ]
            post = [
                [float(np.clip(round(level + gain + rng.normal(0, 0.5)), 0, 2)) for _ in range(2)]
                for _ in range(5)
            ]
            ratings += ratings_for(arm, f"{arm}-{i}", pre, post)
    tables = mastery_tables(ratings, reference_arm="simulation", arms=ARMS, situations=["S1"])
    assert [r["item"] for r in tables["prepost"][:3]] == ["describe", "mindful", "overall"]
    observations = mastery_observations(ratings)
    for row in tables["prepost"]:
        by_time = {
            t: [
                o.value
                for o in sorted(observations, key=lambda o: o.participant)
                if (o.arm, o.item, o.time) == (row["arm"], row["item"], t)
            ]
            for t in ("pre", "post")
        }
        expected = stats.ttest_rel(by_time["post"], by_time["pre"])
        assert close(row["t"], expected.statistic) and close(row["p"], expected.pvalue)
    overall = next(r for r in tables["did"] if r["item"] == "overall")
    assert overall["arm"] == "feedback" and overall["difference"] > 0


def test_s2_mastery_borrows_the_s1_pre_chat_as_baseline() -> None:
    ratings = ratings_for("a", "p1", pre=[[1, 2]], post=[[2, 2]])
    ratings += [SkillRating("p1", "a", "S2", "post", "s2-0", "describe", 2)]
    rows = prepost_table(mastery_observations(ratings, baseline_from={"S2": "S1"}))
    s2 = next(r for r in rows if (r["situation"], r["item"]) == ("S2", "describe"))
    assert (s2["pre_mean"], s2["post_mean"]) == (1.0, 2.0)
    with pytest.raises(ValueError, match="own pre chat"):
        mastery_observations(ratings, baseline_from={"S1": "S2"})


def test_mastery_scores_outside_zero_to_two_are_refused() -> None:
    with pytest.raises(ValueError, match="0 to 2"):
        mastery_observations([SkillRating("p", "a", "S1", "pre", "m", "describe", 3)])


def test_bonus_list_pays_the_top_share_of_each_arm_best_first() -> None:
    scores = {f"a{i:02d}": float(i) for i in range(10)} | {f"b{i:02d}": float(i) for i in range(7)}
    arms = {p: p[0] for p in scores}
    rows = bonus_list(scores, arms, share=0.30)
    assert [r["participant"] for r in rows if r["arm"] == "a"] == ["a09", "a08", "a07"]
    # 30% of 7 is 2.1: pay 3 rather than short-change anyone
    assert [r["participant"] for r in rows if r["arm"] == "b"] == ["b06", "b05", "b04"]
    assert [r["rank"] for r in rows if r["arm"] == "a"] == [1, 2, 3]


def test_bonus_list_pays_everyone_tied_at_the_cut_or_breaks_ties_by_code() -> None:
    scores = {"p1": 2.0, "p2": 1.5, "p3": 1.5, "p4": 1.0, "p5": None, "p6": 0.0}
    arms = dict.fromkeys(scores, "x")
    rows = bonus_list(scores, arms, share=0.4)  # 5 scored -> quota 2, p2 and p3 tie at the cut
    assert [(r["participant"], r["rank"]) for r in rows] == [("p1", 1), ("p2", 2), ("p3", 2)]
    strict = bonus_list(scores, arms, share=0.4, include_ties=False)
    assert [r["participant"] for r in strict] == ["p1", "p2"]
    assert bonus_list(scores, arms, share=0.4) == rows  # deterministic


def test_bonus_list_refuses_bad_shares_and_unknown_participants() -> None:
    with pytest.raises(ValueError):
        bonus_list({"p": 1.0}, {"p": "a"}, share=0)
    with pytest.raises(ValueError, match="no arm"):
        bonus_list({"p": 1.0}, {}, share=0.3)
    assert bonus_list({}, {}, share=0.3) == []


def test_mean_ci_matches_the_t_interval() -> None:
    values = [3, 4, 5, 6, 2]
    mean, low, high = mean_ci(values)
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert mean == 4.0 and close(low, expected[0]) and close(high, expected[1])
    assert mean_ci([3.0]) == (3.0, None, None)
    assert mean_ci([]) == (None, None, None)
