import socket
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from study.analysis import Observation, SkillRating, mastery_tables, prepost_table
from study.plots import (
    NO_DATA,
    Chart,
    enrolment_chart,
    funnel_chart,
    mastery_chart,
    prepost_chart,
)

SVG = "{http://www.w3.org/2000/svg}"
ARM_LABELS = {"feedback": "Simulation + feedback", "simulation": "Simulation only"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("charts must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def survey_rows() -> list[dict]:
    rng = np.random.default_rng(0)
    observations = []
    for arm, gain in (("simulation", 0.3), ("feedback", 1.2)):
        for i in range(25):
            for item in ("confident", "fear"):
                pre = float(rng.integers(2, 6))
                post = pre + (gain if item == "confident" else -gain) + rng.normal(0, 1)
                observations.append(Observation(f"{arm}{i}", arm, "S1", item, "pre", pre))
                observations.append(Observation(f"{arm}{i}", arm, "S1", item, "post", post))
    return prepost_table(observations)


def mastery_rows() -> list[dict]:
    rng = np.random.default_rng(1)
    ratings = []
    for arm, gain in (("simulation", 0.0), ("feedback", 0.5)):
        for i in range(20):
            for time, shift in (("pre", 0.0), ("post", gain)):
                for m in range(4):
                    for skill in ("describe", "assert", "mindful"):
                        score = float(np.clip(round(0.8 + shift + rng.normal(0, 0.7)), 0, 2))
                        ratings.append(
                            SkillRating(f"{arm}{i}", arm, "S1", time, str(m), skill, score)
                        )
    return mastery_tables(ratings, reference_arm="simulation")["prepost"]


def check_svg(chart: Chart) -> ET.Element:
    root = ET.fromstring(chart.svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and title.text == chart.title
    assert desc is not None and desc.text == chart.summary
    assert root.get("aria-labelledby") == title.get("id")
    assert root.get("viewBox") and root.get("width") == "100%"
    # Kept as text, not glyph outlines: readable, searchable, and no font is embedded.
    words = " ".join(t for t in root.itertext())
    assert chart.title in words
    assert chart.summary.startswith(chart.title)
    assert "@font-face" not in chart.svg and "http://" not in chart.svg.split("<title", 1)[
        1
    ].replace("http://www.w3.org", "")
    return root


def test_prepost_chart_is_an_accessible_svg_with_a_summary_per_item() -> None:
    chart = prepost_chart(survey_rows(), situation="S1", arm_labels=ARM_LABELS)
    root = check_svg(chart)
    words = " ".join(root.itertext())
    assert "Confident" in words and "Simulation + feedback" in words
    assert "lower is better" in words
    assert "Confident: Simulation + feedback rose from" in chart.summary
    assert "Fear:" in chart.summary and "fell from" in chart.summary
    assert "(n=25)" in chart.summary


def test_mastery_chart_draws_change_per_skill_and_arm() -> None:
    chart = mastery_chart(mastery_rows(), situation="S1", arm_labels=ARM_LABELS)
    root = check_svg(chart)
    words = " ".join(root.itertext())
    for label in ("Describe", "Assert", "Stay mindful", "Overall", "Simulation only"):
        assert label in words
    assert "Overall:" in chart.summary and "above zero means better" in chart.summary


def test_enrolment_chart_counts_participants_per_arm() -> None:
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    enrolments = [
        (start + timedelta(hours=5 * i), "feedback" if i % 2 else "simulation") for i in range(30)
    ]
    chart = enrolment_chart(enrolments, arm_labels=ARM_LABELS)
    check_svg(chart)
    assert "30 participants assigned" in chart.summary
    assert (
        "15 in Simulation only" in chart.summary and "15 in Simulation + feedback" in chart.summary
    )


def test_enrolment_chart_copes_with_a_single_participant() -> None:
    chart = enrolment_chart([(datetime(2026, 3, 2, 9, 0), "a")])
    check_svg(chart)
    assert "1 participants assigned" in chart.summary or "1 participant" in chart.summary


def test_funnel_chart_lists_every_step_with_its_share() -> None:
    steps = [("Consented", 100), ("Pre-surveys", 92), ("Assigned", 90), ("Completed", 71)]
    chart = funnel_chart(steps)
    root = check_svg(chart)
    words = " ".join(root.itertext())
    assert "Completed" in words and "71 (71%)" in words
    assert "Of 100 participants at 'Consented', 71 reached 'Completed' (71%)" in chart.summary


@pytest.mark.parametrize(
    "make",
    [
        lambda: prepost_chart([], situation="S1"),
        lambda: prepost_chart(survey_rows(), situation="S2"),
        lambda: mastery_chart([], situation="S1"),
        lambda: enrolment_chart([]),
        lambda: funnel_chart([]),
        lambda: funnel_chart([("Consented", 0), ("Completed", 0)]),
    ],
)
def test_every_chart_handles_empty_data_with_a_clear_message(make) -> None:
    chart = make()
    root = check_svg(chart)
    assert NO_DATA in " ".join(root.itertext())
    assert chart.summary.endswith("no data yet.")


def test_rows_without_confidence_intervals_still_draw() -> None:
    rows = prepost_table(
        [
            Observation("p1", "a", "S1", "hopeful", "pre", 3),
            Observation("p1", "a", "S1", "hopeful", "post", 5),
        ]
    )
    chart = prepost_chart(rows, situation="S1")
    check_svg(chart)
    assert "Hopeful: a rose from 3.0 to 5.0 (n=1)." in chart.summary


def test_two_charts_on_one_page_have_distinct_ids_and_the_same_chart_is_reproducible() -> None:
    first = funnel_chart([("A", 3), ("B", 2)])
    second = funnel_chart([("A", 3), ("B", 1)])
    assert first.svg == funnel_chart([("A", 3), ("B", 2)]).svg
    first_ids = set(ET.fromstring(first.svg).iter())
    assert first_ids
    title_id = ET.fromstring(first.svg).find(f"{SVG}title").get("id")
    assert title_id != ET.fromstring(second.svg).find(f"{SVG}title").get("id")


def test_titles_and_summaries_are_escaped() -> None:
    chart = funnel_chart([("Consent <& agree>", 5)], title="Flow <draft> & co")
    root = check_svg(chart)
    assert root.find(f"{SVG}title").text == "Flow <draft> & co"
