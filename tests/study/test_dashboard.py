"""The live dashboard: the analysis it shows is study.analysis's (hence scipy's) on the data
written; the flow, times, model health and bonus list count what happened; each fragment reloads
itself; the participant page shows the whole record in order."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from scipy import stats

from imbue.models import AuditEntry
from simulations.models import SkillSuggestion
from study import analysis, dashboard, exports, flow
from study.models import Participant
from tests.study.factories import Seeded, seed_study

pytestmark = pytest.mark.django_db

ANALYSIS_KEYS = set(analysis.paired_test([1.0, 2.0], [2.0, 4.0])) | {
    "arm", "situation", "item", "n_incomplete",
}  # fmt: skip
DID_KEYS = set(analysis.two_group_test([1.0, 2.0], [2.0, 3.0])) | {
    "arm", "reference_arm", "situation", "item",
}  # fmt: skip


@pytest.fixture
def seeded(no_llm: None) -> Seeded:
    return seed_study(participants=40, screened_out=3, in_progress=4, withdrawn=2, messages=4)


@pytest.fixture
def boss(db: None) -> Client:
    User.objects.create_superuser("boss", "boss@example.org", "pw-for-tests-1")
    client = Client()
    client.login(username="boss", password="pw-for-tests-1")
    return client


def strip(rows: list[dict[str, Any]], keys: set[str]) -> dict[tuple[str, str, str], dict]:
    """The analysis module's columns of each row, by arm, situation and item (the page orders the
    rows for reading, the module for computing)."""
    return {
        (row["arm"], row["situation"], row["item"]): {k: v for k, v in row.items() if k in keys}
        for row in rows
    }


def test_survey_tables_are_the_analysis_modules_on_the_answers_written(seeded: Seeded) -> None:
    shown = dashboard.analysis_tables(seeded.study)["analysis"]
    arms = ["simulation", "feedback"]
    items = ["confident", "worried", "hopeful", "motivated", "anger", "fear", "sadness", "disgust"]
    truth = seeded.observations
    expected = analysis.prepost_table(truth, arms=arms, situations=["S1", "S2"], items=items)
    assert strip(shown["prepost"], ANALYSIS_KEYS) == strip(expected, ANALYSIS_KEYS)
    assert len(shown["prepost"]) == len(expected) == 2 * 2 * 8
    first = shown["prepost"][:2]  # the two arms of one item sit side by side
    assert [(r["situation"], r["item"], r["arm"]) for r in first] == [
        ("S1", "confident", "simulation"),
        ("S1", "confident", "feedback"),
    ]
    expected_did = analysis.did_table(
        truth, reference_arm="simulation", arms=arms, situations=["S1", "S2"], items=items
    )
    assert strip(shown["did"], DID_KEYS) == strip(expected_did, DID_KEYS)


def test_mastery_tables_are_the_analysis_modules_on_the_ratings_written(seeded: Seeded) -> None:
    shown = dashboard.analysis_tables(seeded.study)["analysis"]
    expected = analysis.mastery_tables(
        seeded.ratings,
        reference_arm="simulation",
        arms=["simulation", "feedback"],
        situations=["S1", "S2"],
        baseline_from={"S2": "S1"},
    )
    assert strip(shown["mastery_prepost"], ANALYSIS_KEYS) == strip(
        expected["prepost"], ANALYSIS_KEYS
    )
    assert strip(shown["mastery_did"], DID_KEYS) == strip(expected["did"], DID_KEYS)
    assert len(shown["mastery_prepost"]) == len(expected["prepost"])
    overall = next(
        r
        for r in shown["mastery_prepost"]
        if (r["arm"], r["situation"], r["item"]) == ("feedback", "S1", "overall")
    )
    assert overall["mean_change"] > 0.3  # the factory's built-in effect is visible


class Cells(HTMLParser):
    """Collects the data-value of every statistic cell of the dashboard's tables, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.table = ""
        self.row: dict[str, str] = {}
        self.found: dict[str, list[dict[str, str]]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self.table = a.get("id", "")
        elif tag == "tr" and "data-item" in a:
            self.row = {
                "arm": a["data-arm"],
                "situation": a["data-situation"],
                "item": a["data-item"],
            }
            self.found.setdefault(self.table, []).append(self.row)
        elif tag == "td" and "data-stat" in a:
            self.row[a["data-stat"]] = a["data-value"]


def shown_value(text: str) -> float | None:
    return None if text == "None" else float(text)


def test_page_shows_the_paired_tests_that_scipy_computes(seeded: Seeded, boss: Client) -> None:
    html = boss.get(f"/research/{seeded.study.slug}/").content.decode()
    cells = Cells()
    cells.feed(html)
    rows = cells.found["prepost-table"]
    assert len(rows) == 2 * 2 * 8
    checked = 0
    for row in rows:
        pairs: dict[str, list[float | None]] = {}
        for o in seeded.observations:
            if (o.arm, o.situation, o.item) == (row["arm"], row["situation"], row["item"]):
                pairs.setdefault(o.participant, [None, None])[o.time == "post"] = o.value
        complete = [(pre, post) for pre, post in pairs.values() if None not in (pre, post)]
        assert int(row["n"]) == len(complete)
        pre = [p for p, _ in complete]
        post = [q for _, q in complete]
        diffs = [q - p for p, q in complete]
        if len(set(diffs)) < 2:
            continue
        result = stats.ttest_rel(post, pre)
        assert shown_value(row["t"]) == pytest.approx(result.statistic, abs=1e-9)
        assert shown_value(row["p"]) == pytest.approx(result.pvalue, abs=1e-9)
        mean = sum(diffs) / len(diffs)
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
        assert shown_value(row["d_z"]) == pytest.approx(mean / sd, abs=1e-9)
        checked += 1
    assert checked > 20
    did = cells.found["did-table"]
    assert len(did) == 2 * 8 and {r["arm"] for r in did} == {"feedback"}
    assert {"mastery-table", "mastery-did-table"} <= set(cells.found)


def test_charts_are_drawn_for_each_situation(seeded: Seeded, boss: Client) -> None:
    html = boss.get(f"/research/{seeded.study.slug}/fragment/analysis/").content.decode()
    titles = re.findall(r'<title id="chart-[0-9a-f]+-title">([^<]+)</title>', html)
    assert titles == [
        "Before and after training, situation S1",
        "Before and after training, situation S2",
        "Change in skill mastery, situation S1",
        "Change in skill mastery, situation S2",
    ]


def test_flow_counts_each_step_with_screen_outs_and_withdrawals(seeded: Seeded) -> None:
    rows = {r["key"]: r for r in dashboard.funnel(seeded.study)["funnel"]["rows"]}
    # 40 finished, 4 stopped at training, 3 did not consent, 2 withdrew at training.
    assert rows["consent"]["reached"] == 49
    assert rows["consent"]["screened_out"] == 3
    assert rows["situations"]["reached"] == 46
    assert rows["train_s1"]["reached"] == 46
    assert rows["train_s1"]["here"] == 4 and rows["train_s1"]["withdrew"] == 2
    assert rows["post_s1"]["reached"] == 40
    assert rows["debrief"]["reached"] == 40
    assert sum(rows["debrief"]["by_arm"]) == 40
    assert sum(rows["assignment"]["by_arm"]) == 46


def test_enrolment_counts_and_time_per_step(seeded: Seeded) -> None:
    counts = dashboard.enrolment(seeded.study)["enrolment"]
    assert (counts["enrolled"], counts["completed"], counts["screened_out"]) == (49, 40, 3)
    assert (counts["active"], counts["withdrawn"]) == (4, 2)
    assert sum(arm["assigned"] for arm in counts["arms"]) == 46  # withdrawn slots stay assigned
    assert "46 participants assigned" in counts["chart"].summary
    times = {r["key"]: r for r in dashboard.step_times(seeded.study)["step_times"]}
    assert times["consent"]["minutes"] == pytest.approx(5.0)
    assert times["post_s1"]["n"] == 40


def test_model_health_counts_timeouts_and_offline_fallbacks(seeded: Seeded) -> None:
    health = dashboard.model_health(seeded.study)["health"]
    purposes = {row["purpose"]: row for row in health["purposes"]}
    assert set(purposes) == {"persona", "partner", "feedback", "suggestion"}
    done = [e for e in health["engines"] if e["status"] == "done"]
    # One model call per computed feedback request; every tenth timed out and fell back.
    assert sum(e["n"] for e in done) == purposes["feedback"]["n"] > 0
    assert purposes["feedback"]["errors"] == purposes["feedback"]["n"] // 10
    assert {e["engine"] for e in done} == {"llm", "offline"}
    assert health["reasons"][0]["fallback_reason"].startswith("timeout")
    assert purposes["partner"]["retried"] > 0 and purposes["partner"]["median_ms"] == 900.0
    assert any(e["status"] == "withheld" for e in health["engines"])


def test_bonus_list_pays_the_top_thirty_percent_of_each_arm_by_mastery_after_training(
    seeded: Seeded,
) -> None:
    rows = dashboard.bonus(seeded.study)["bonus"]["rows"]
    observations = analysis.mastery_observations([r for r in seeded.ratings if r.time == "post"])
    scores: dict[str, list[float]] = {}
    arms: dict[str, str] = {}
    for o in observations:
        if o.item == analysis.OVERALL:
            scores.setdefault(o.participant, []).append(o.value)
            arms[o.participant] = o.arm
    expected = analysis.bonus_list({p: sum(v) / len(v) for p, v in scores.items()}, arms)
    assert [(r["participant"], r["rank"]) for r in rows] == [
        (r["participant"], r["rank"]) for r in expected
    ]
    assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in expected], abs=1e-12)
    per_arm = {arm: sum(1 for r in rows if r["arm"] == arm) for arm in ("simulation", "feedback")}
    assert all(n >= 1 for n in per_arm.values())
    completed = set(
        Participant.objects.filter(study=seeded.study, status="completed").values_list(
            "code", flat=True
        )
    )
    assert {r["participant"] for r in rows} <= completed


@pytest.mark.parametrize("name", list(dashboard.FRAGMENTS))
def test_each_fragment_reloads_itself_every_ten_seconds_under_a_stable_id(
    seeded: Seeded, boss: Client, name: str
) -> None:
    url = f"/research/{seeded.study.slug}/fragment/{name}/"
    html = boss.get(url, HTTP_HX_REQUEST="true").content.decode().strip()
    opening = re.match(r"<section [^>]*>", html)
    assert opening is not None and html.endswith("</section>")
    tag = opening.group(0)
    assert f'hx-get="{url}"' in tag and 'hx-trigger="every 10s"' in tag
    assert 'hx-swap="outerHTML"' in tag
    page = boss.get(f"/research/{seeded.study.slug}/").content.decode()
    assert tag in page  # the page holds the same element the fragment replaces


def test_unknown_fragment_is_not_found(seeded: Seeded, boss: Client) -> None:
    assert boss.get(f"/research/{seeded.study.slug}/fragment/nothing/").status_code == 404


def test_cached_analysis_follows_new_data(seeded: Seeded) -> None:
    def n_confident() -> int:
        rows = dashboard.cached_analysis(seeded.study)["analysis"]["prepost"]
        return next(
            r["n"]
            for r in rows
            if (r["arm"], r["situation"], r["item"]) == ("feedback", "S1", "confident")
        )

    before = n_confident()
    assert n_confident() == before  # served from the cache
    answer = (
        Participant.objects.filter(study=seeded.study, arm__key="feedback")
        .first()
        .answers.get(slot="S1", time="pre", item_key="confident")
    )
    answer.delete()
    assert n_confident() == before - 1


def test_participant_page_shows_drafts_feedback_messages_checkins_and_calls_in_order(
    seeded: Seeded, boss: Client
) -> None:
    person = Participant.objects.filter(
        study=seeded.study, status="completed", arm__key="feedback"
    ).first()
    response = boss.get(f"/research/{seeded.study.slug}/participants/{person.code}/")
    assert response.status_code == 200
    html = response.content.decode()
    training = html[html.index('id="chat-train_s1"') :]
    training = training[: training.index("</section>")]
    order = [
        training.index("Emotion check-in (before)"),
        training.index('id="draft-'),
        training.index("Say how often it happened."),  # the feedback's suggestion
        training.index("You were late three times this week."),  # its rewrite
        training.index('id="message-'),
        training.index("Emotion check-in (after)"),
    ]
    assert order == sorted(order)
    assert "first token 400 ms" in training and "prompt v3" in training
    assert "resistance after" in training
    assert "Model calls of this chat" in training
    for item in ("Confident", "Fear", "Disgust"):
        assert f'<th scope="row">{item}</th>' in html
    entry = AuditEntry.objects.get(action="study.participant.view")
    assert entry.object_id == str(person.pk) and entry.actor_username == "boss"


def test_participant_list_filters_by_status_and_arm(seeded: Seeded, boss: Client) -> None:
    url = f"/research/{seeded.study.slug}/participants/"
    html = boss.get(url, {"status": "screened_out"}).content.decode()
    assert "3 participants" in html
    html = boss.get(url, {"status": "completed", "arm": "feedback"}).content.decode()
    shown = int(re.search(r"(\d+) participants?, newest first", html).group(1))
    assert (
        shown
        == Participant.objects.filter(
            study=seeded.study, status="completed", arm__key="feedback"
        ).count()
    )


def test_timeline_places_check_ins_after_the_message_they_followed() -> None:
    chat = {
        "messages": [
            {"seq": 1, "role": "learner", "llm_call_id": None},
            {"seq": 2, "role": "partner", "llm_call_id": None},
            {"seq": 3, "role": "learner", "llm_call_id": None},
        ],
        "drafts": [{"turn": 2, "revision": 1, "feedback": []}],
        "checkins": [{"after_seq": 2, "phase": "midway"}, {"after_seq": 0, "phase": "before"}],
        "model_calls": [],
    }
    events = dashboard.timeline(chat)
    assert [(e["type"], e.get("seq", e.get("phase"))) for e in events] == [
        ("checkin", "before"),
        ("message", 1),
        ("message", 2),
        ("checkin", "midway"),
        ("draft", None),
        ("message", 3),
    ]


def test_dashboard_of_a_new_study_shows_no_data_yet(no_llm: None, boss: Client) -> None:
    from tests.study.factories import open_study

    study = open_study("empty")
    response = boss.get(f"/research/{study.slug}/")
    assert response.status_code == 200
    assert "No data yet" in response.content.decode()
    assert flow.STEPS[0].title in response.content.decode()
    assert exports.post_mastery(study) == ({}, {})


def test_timeline_places_each_skill_suggestion_among_its_turns_drafts_by_time() -> None:
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    chat = {
        "messages": [
            {"seq": 1, "role": "learner", "llm_call_id": None},
            {"seq": 2, "role": "partner", "llm_call_id": None},
            {"seq": 3, "role": "learner", "llm_call_id": None},
        ],
        "drafts": [
            {"turn": 2, "revision": 1, "feedback": [], "created_at": at + timedelta(seconds=40)},
            {"turn": 2, "revision": 2, "feedback": [], "created_at": at + timedelta(seconds=50)},
        ],
        "checkins": [],
        "suggestions": [
            {
                "turn": 2,
                "after_seq": 2,
                "skill": "express",
                "reason": "Say how you feel.",
                "engine": "llm",
                "model": "fake-small",
                "llm_call_id": 9,
                "created_at": at + timedelta(seconds=45),
            },
            {
                "turn": 1,
                "after_seq": 0,
                "skill": "describe",
                "reason": "Start with the facts.",
                "engine": "rule",
                "model": "",
                "llm_call_id": None,
                "created_at": at,
            },
        ],
        "model_calls": [{"id": 9, "model": "fake-small", "outcome": "ok"}],
    }
    events = dashboard.timeline(chat)
    assert [(e["type"], e.get("seq", e.get("revision", e.get("skill")))) for e in events] == [
        ("suggestion", "describe"),
        ("message", 1),
        ("message", 2),
        ("draft", 1),
        ("suggestion", "express"),
        ("draft", 2),
        ("message", 3),
    ]
    express = events[4]
    assert express["call"] == {"id": 9, "model": "fake-small", "outcome": "ok"}
    assert express["skill_label"] == "Express" and express["engine_label"] == "the language model"
    assert events[0]["call"] is None


def test_participant_page_shows_the_skill_suggestions_before_the_message_they_were_for(
    seeded: Seeded, boss: Client
) -> None:
    suggestion = (
        SkillSuggestion.objects.filter(
            conversation__study_chat__participant__study=seeded.study, engine="llm", turn=2
        )
        .select_related("conversation__study_chat__participant")
        .first()
    )
    assert suggestion is not None
    chat = suggestion.conversation.study_chat
    person = chat.participant
    html = boss.get(f"/research/{seeded.study.slug}/participants/{person.code}/").content.decode()
    section = html[html.index(f'id="chat-{chat.step}"') :]
    section = section[: section.index("</section>")]
    shown = section.index(f'id="suggestion-{suggestion.conversation_id}-2-')
    item = section[shown : section.index("</li>", shown)]
    assert "Skill suggestion for message 2" in item
    assert f"Suggested skill: <strong>{suggestion.get_skill_display()}</strong>" in item
    assert suggestion.reason in item
    assert "from the language model (fake-small)" in item
    assert "prompt suggestion v3" in item  # its model call
    # After the learner's first message, before their second.
    learner_seqs = list(
        suggestion.conversation.messages.filter(role="learner")
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    first = section.index(f'id="message-{suggestion.conversation_id}-{learner_seqs[0]}"')
    second = section.index(f'id="message-{suggestion.conversation_id}-{learner_seqs[1]}"')
    assert first < shown < second
    # Every stored suggestion of the chat is on the page.
    assert section.count('class="suggestion"') == suggestion.conversation.suggestions.count()
