"""The trial's analysis, computed live: pre/post change per arm, paired tests, effect sizes, DiD.

Pure module: plain rows in, plain dict rows out (floats, ints, None), ready for a template or CSV.

Definitions (also shown to researchers; keep them in step with the tests):

- Pairing: for each arm x situation x item, a participant counts only if both their pre and post
  values exist (pairwise deletion, per item). ``n`` is the number of such participants and every
  statistic of the row, means included, is computed on those same ``n`` people. ``n_incomplete``
  counts the participants of that arm with only one of the two values.
- Percent change: ``(mean_post - mean_pre) / mean_pre * 100``, a change of the means; None when
  ``mean_pre`` is 0.
- Paired t-test: ``diff = post - pre``, ``t = mean(diff) / (sd(diff, ddof=1) / sqrt(n))``,
  ``df = n - 1``, two-sided p; identical to ``scipy.stats.ttest_rel(post, pre)``. Positive t means
  the value rose.
- Paired effect sizes: ``d_z = mean(diff) / sd(diff, ddof=1)`` (Cohen's d for paired data, the one
  the t-test implies: ``t = d_z * sqrt(n)``); ``d_av = mean(diff) / ((sd_pre + sd_post) / 2)``
  (Cumming 2012, comparable with between-subject d).
- Difference in differences: per participant ``change = post - pre``; the row compares an arm with
  the reference arm by an independent two-sample t-test on the change scores. Welch's test
  (unequal variances, Welch-Satterthwaite df) by default, identical to
  ``scipy.stats.ttest_ind(change_arm, change_reference, equal_var=False)``; Student's pooled test
  with ``equal_var=True``. ``difference = mean(change_arm) - mean(change_reference)``.
- Two-group effect size: ``d = difference / s_pooled`` with
  ``s_pooled = sqrt(((n1 - 1) * s1**2 + (n2 - 1) * s2**2) / (n1 + n2 - 2))`` (Cohen's d, whichever
  t-test is used), and Hedges' ``g = d * (1 - 3 / (4 * (n1 + n2) - 9))``.
- Confidence intervals: 95%, from the t distribution with the test's df.
- Undefined statistics are None, never NaN and never an exception: fewer than 2 pairs (paired),
  fewer than 2 people in either group (two-group), or a zero standard deviation where one divides
  by it (e.g. everyone changed by exactly the same amount: t, p and d are None while the means and
  the change are reported). scipy would return NaN or an infinite t in those cases.
- Skill mastery: each rated skill of each evaluation-chat message scores 0-2 (none 0, weak 1,
  strong 2; yes 2, no 0). A participant's mastery of a skill in one chat is the mean of that skill's
  scores over the chat's messages; their overall mastery is the mean over messages of each
  message's mean score (``feedback.skills.mastery``). Those per-participant values then go through
  the same pre/post and DiD machinery, one "item" per skill plus ``overall``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from feedback.skills import SKILL_KEYS

TIMES = ("pre", "post")
OVERALL = "overall"
CONFIDENCE = 0.95

Row = dict[str, Any]


@dataclass(frozen=True)
class Observation:
    """One value of one participant: a survey answer, or a mastery score, at one time point."""

    participant: str
    arm: str
    situation: str
    item: str
    time: Literal["pre", "post"]
    value: float | None


@dataclass(frozen=True)
class SkillRating:
    """One skill's 0-2 score on one message of an evaluation chat."""

    participant: str
    arm: str
    situation: str
    time: Literal["pre", "post"]
    message: str
    skill: str
    score: float


def paired_test(pre: Sequence[float], post: Sequence[float]) -> Row:
    """Paired t-test and effect sizes of post vs pre for already-paired, complete values."""
    a = np.asarray(post, dtype=float)
    b = np.asarray(pre, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("pre and post must be 1-D and of equal length")
    n = int(a.size)
    row: Row = {
        "n": n,
        "pre_mean": _mean(b),
        "pre_sd": _sd(b),
        "post_mean": _mean(a),
        "post_sd": _sd(a),
        "mean_change": None,
        "sd_change": None,
        "change_ci_low": None,
        "change_ci_high": None,
        "percent_change": None,
        "t": None,
        "df": None,
        "p": None,
        "d_z": None,
        "d_av": None,
    }
    row.update(_ci("pre", b))
    row.update(_ci("post", a))
    if n == 0:
        return row
    diff = a - b
    mean_diff = float(np.mean(diff))
    row["mean_change"] = mean_diff
    if row["pre_mean"]:
        row["percent_change"] = (row["post_mean"] - row["pre_mean"]) / row["pre_mean"] * 100
    if n < 2:
        return row
    sd_diff = float(np.std(diff, ddof=1))
    df = n - 1
    row["sd_change"] = sd_diff
    row["df"] = float(df)
    if row["pre_sd"] + row["post_sd"] > 0:
        row["d_av"] = mean_diff / ((row["pre_sd"] + row["post_sd"]) / 2)
    if sd_diff == 0:
        return row
    # Same order of operations as scipy.stats.ttest_rel, so the results agree to the last bits.
    se = math.sqrt(float(np.var(diff, ddof=1)) / n)
    t = mean_diff / se
    margin = float(stats.t.ppf((1 + CONFIDENCE) / 2, df)) * se
    row.update(
        t=t,
        p=_two_sided_p(t, df),
        d_z=mean_diff / sd_diff,
        change_ci_low=mean_diff - margin,
        change_ci_high=mean_diff + margin,
    )
    return row


def two_group_test(
    group: Sequence[float], reference: Sequence[float], *, equal_var: bool = False
) -> Row:
    """Independent t-test of group vs reference (Welch by default) with Cohen's d and Hedges' g."""
    a = np.asarray(group, dtype=float)
    b = np.asarray(reference, dtype=float)
    n1, n2 = int(a.size), int(b.size)
    row: Row = {
        "test": "student" if equal_var else "welch",
        "n": n1,
        "n_reference": n2,
        "mean": _mean(a),
        "mean_reference": _mean(b),
        "sd": _sd(a),
        "sd_reference": _sd(b),
        "difference": None,
        "ci_low": None,
        "ci_high": None,
        "t": None,
        "df": None,
        "p": None,
        "d": None,
        "g": None,
    }
    if n1 and n2:
        row["difference"] = row["mean"] - row["mean_reference"]
    if n1 < 2 or n2 < 2:
        return row
    v1, v2 = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
    difference = float(np.mean(a)) - float(np.mean(b))
    pooled_var = ((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2)
    if pooled_var > 0:
        d = difference / math.sqrt(pooled_var)
        row["d"] = d
        row["g"] = d * (1 - 3 / (4 * (n1 + n2) - 9))
    if equal_var:
        df = float(n1 + n2 - 2)
        se = math.sqrt(pooled_var * (1.0 / n1 + 1.0 / n2))
    else:
        s1, s2 = v1 / n1, v2 / n2
        se = math.sqrt(s1 + s2)
        df = (s1 + s2) ** 2 / (s1**2 / (n1 - 1) + s2**2 / (n2 - 1)) if se > 0 else None
    if se == 0 or df is None:
        return row
    t = difference / se
    margin = float(stats.t.ppf((1 + CONFIDENCE) / 2, df)) * se
    row.update(
        t=t,
        df=df,
        p=_two_sided_p(t, df),
        ci_low=difference - margin,
        ci_high=difference + margin,
    )
    return row


def prepost_table(
    observations: Iterable[Observation],
    *,
    arms: Sequence[str] | None = None,
    situations: Sequence[str] | None = None,
    items: Sequence[str] | None = None,
) -> list[Row]:
    """One row per arm x situation x item: pre/post means, percent change, paired test, d.

    Orders (and filters) by the given arms, situations and items, else sorted; rows with no data
    appear, with n = 0, only for combinations named explicitly.
    """
    pairs = _pairs(observations)
    arms_, situations_, items_ = _orders(pairs, arms, situations, items)
    rows = []
    for arm in arms_:
        for situation in situations_:
            for item in items_:
                cell = pairs.get((arm, situation, item))
                if cell is None and (arms is None or situations is None or items is None):
                    continue
                complete = _complete(cell or {})
                row = {"arm": arm, "situation": situation, "item": item}
                row.update(paired_test([v[0] for v in complete], [v[1] for v in complete]))
                row["n_incomplete"] = len(cell or {}) - len(complete)
                rows.append(row)
    return rows


def did_table(
    observations: Iterable[Observation],
    *,
    reference_arm: str,
    arms: Sequence[str] | None = None,
    situations: Sequence[str] | None = None,
    items: Sequence[str] | None = None,
    equal_var: bool = False,
) -> list[Row]:
    """Difference in differences: each arm's change scores vs the reference arm's, per item.

    In these rows ``mean``/``mean_reference`` and ``sd``/``sd_reference`` describe the change
    scores (post - pre) of the arm and of the reference arm.
    """
    pairs = _pairs(observations)
    arms_, situations_, items_ = _orders(pairs, arms, situations, items)
    rows = []
    for arm in arms_:
        if arm == reference_arm:
            continue
        for situation in situations_:
            for item in items_:
                cells = (
                    pairs.get((arm, situation, item)),
                    pairs.get((reference_arm, situation, item)),
                )
                if cells == (None, None) and (arms is None or situations is None or items is None):
                    continue
                changes = [[post - pre for pre, post in _complete(c or {})] for c in cells]
                row = {
                    "arm": arm,
                    "reference_arm": reference_arm,
                    "situation": situation,
                    "item": item,
                }
                row.update(two_group_test(changes[0], changes[1], equal_var=equal_var))
                rows.append(row)
    return rows


def mastery_observations(
    ratings: Iterable[SkillRating],
    *,
    baseline_from: Mapping[str, str] | None = None,
) -> list[Observation]:
    """Per-participant mastery (per skill and overall) of each evaluation chat, as observations.

    ``baseline_from`` maps a situation that has no pre chat to the one whose pre chat serves as its
    baseline: in the default study S2 is only chatted about after training, so ``{"S2": "S1"}``
    measures transfer as S2 post against S1 pre.
    """
    by_skill: dict[tuple[str, str, str, str, str], list[float]] = defaultdict(list)
    by_message: dict[tuple[str, str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    arm_of: dict[str, str] = {}
    for r in ratings:
        if r.time not in TIMES:
            raise ValueError(f"time must be 'pre' or 'post', not {r.time!r}")
        if arm_of.setdefault(r.participant, r.arm) != r.arm:
            raise ValueError(f"participant {r.participant!r} appears in two arms")
        score = float(r.score)
        if not 0 <= score <= 2:
            raise ValueError(f"mastery scores run from 0 to 2, not {r.score!r}")
        by_skill[(r.participant, r.arm, r.situation, r.time, r.skill)].append(score)
        by_message[(r.participant, r.arm, r.situation, r.time)][r.message].append(score)
    out = [
        Observation(p, arm, situation, skill, time, _fmean(scores))  # type: ignore[arg-type]
        for (p, arm, situation, time, skill), scores in by_skill.items()
    ]
    out += [
        Observation(
            p,
            arm,
            situation,
            OVERALL,
            time,  # type: ignore[arg-type]
            _fmean([_fmean(scores) for scores in messages.values()]),
        )
        for (p, arm, situation, time), messages in by_message.items()
    ]
    for target, source in (baseline_from or {}).items():
        if any(o.situation == target and o.time == "pre" for o in out):
            raise ValueError(f"situation {target!r} has its own pre chat; no baseline to borrow")
        out += [
            Observation(o.participant, o.arm, target, o.item, "pre", o.value)
            for o in out
            if o.situation == source and o.time == "pre"
        ]
    return out


def mastery_tables(
    ratings: Iterable[SkillRating],
    *,
    reference_arm: str,
    arms: Sequence[str] | None = None,
    situations: Sequence[str] | None = None,
    baseline_from: Mapping[str, str] | None = None,
    equal_var: bool = False,
) -> dict[str, list[Row]]:
    """Skill mastery change per arm and skill ("prepost") and between arms ("did")."""
    observations = mastery_observations(ratings, baseline_from=baseline_from)
    present = {o.item for o in observations}
    items = [k for k in (*SKILL_KEYS, OVERALL) if k in present]
    items += sorted(present - set(items))
    return {
        "prepost": prepost_table(observations, arms=arms, situations=situations, items=items),
        "did": did_table(
            observations,
            reference_arm=reference_arm,
            arms=arms,
            situations=situations,
            items=items,
            equal_var=equal_var,
        ),
    }


def bonus_list(
    scores_by_participant: Mapping[str, float | None],
    arms: Mapping[str, str],
    share: float = 0.30,
    *,
    include_ties: bool = True,
) -> list[Row]:
    """The top ``share`` of each arm by score, for bonus payment, best first.

    Each arm pays ``ceil(share * n)`` people, n counting only participants with a score. Anyone
    tied with the last paid person is paid too (equal work, equal pay) unless ``include_ties`` is
    False, in which case ties break by participant code, ascending. Rows: arm, participant,
    score, rank (1 = best; tied scores share a rank).
    """
    if not 0 < share <= 1:
        raise ValueError("share must be in (0, 1]")
    by_arm: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for participant, score in scores_by_participant.items():
        if score is None or (isinstance(score, float) and math.isnan(score)):
            continue
        if participant not in arms:
            raise ValueError(f"participant {participant!r} has no arm")
        by_arm[arms[participant]].append((participant, float(score)))
    rows: list[Row] = []
    for arm in sorted(by_arm):
        ranked = sorted(by_arm[arm], key=lambda ps: (-ps[1], ps[0]))
        # The epsilon keeps 0.3 * 10 (= 3.0000000000000004 in floats) from paying a fourth person.
        quota = math.ceil(share * len(ranked) - 1e-9)
        cutoff = ranked[quota - 1][1]
        rank = 0
        for position, (participant, score) in enumerate(ranked):
            if position >= quota and not (include_ties and score == cutoff):
                break
            if position == 0 or score != ranked[position - 1][1]:
                rank = position + 1
            rows.append({"arm": arm, "participant": participant, "score": score, "rank": rank})
    return rows


def mean_ci(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """Mean and its 95% t-interval; interval None for fewer than two values."""
    a = np.asarray(values, dtype=float)
    ci = _ci("x", a)
    return _mean(a), ci["x_ci_low"], ci["x_ci_high"]


def _pairs(
    observations: Iterable[Observation],
) -> dict[tuple[str, str, str], dict[str, list[float | None]]]:
    pairs: dict[tuple[str, str, str], dict[str, list[float | None]]] = defaultdict(dict)
    arm_of: dict[str, str] = {}
    for o in observations:
        if o.time not in TIMES:
            raise ValueError(f"time must be 'pre' or 'post', not {o.time!r}")
        if arm_of.setdefault(o.participant, o.arm) != o.arm:
            raise ValueError(f"participant {o.participant!r} appears in two arms")
        slot = pairs[(o.arm, o.situation, o.item)].setdefault(o.participant, [None, None])
        index = TIMES.index(o.time)
        value = _value(o.value)
        if slot[index] is not None and value is not None:
            # Answers are stored once; a duplicate means the caller joined rows wrongly.
            raise ValueError(
                f"two {o.time} values for {o.participant!r}, {o.situation!r}, {o.item!r}"
            )
        if value is not None:
            slot[index] = value
    return pairs


def _complete(cell: Mapping[str, list[float | None]]) -> list[tuple[float, float]]:
    return [
        (pre, post)
        for _, (pre, post) in sorted(cell.items())
        if pre is not None and post is not None
    ]


def _orders(
    pairs: Mapping[tuple[str, str, str], object],
    arms: Sequence[str] | None,
    situations: Sequence[str] | None,
    items: Sequence[str] | None,
) -> tuple[list[str], list[str], list[str]]:
    return (
        list(arms) if arms is not None else sorted({k[0] for k in pairs}),
        list(situations) if situations is not None else sorted({k[1] for k in pairs}),
        list(items) if items is not None else sorted({k[2] for k in pairs}),
    )


def _value(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a score")
    value = float(value)
    return None if math.isnan(value) else value


def _mean(a: np.ndarray) -> float | None:
    return float(np.mean(a)) if a.size else None


def _sd(a: np.ndarray) -> float | None:
    return float(np.std(a, ddof=1)) if a.size >= 2 else None


def _fmean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _ci(prefix: str, a: np.ndarray) -> Row:
    if a.size < 2:
        return {f"{prefix}_ci_low": None, f"{prefix}_ci_high": None}
    mean = float(np.mean(a))
    margin = (
        float(stats.t.ppf((1 + CONFIDENCE) / 2, a.size - 1))
        * float(np.std(a, ddof=1))
        / math.sqrt(a.size)
    )
    return {f"{prefix}_ci_low": mean - margin, f"{prefix}_ci_high": mean + margin}


def _two_sided_p(t: float, df: float) -> float:
    return float(2 * stats.t.sf(abs(t), df))
