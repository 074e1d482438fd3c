"""Two participants walk the whole default study in Chromium, one per arm, with the fake model.

The arm is not forced by any backdoor: each study is opened with a recorded seed whose allocation
sequence puts the wanted arm in the first slot, exactly as an auditor would regenerate it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Page, expect

from feedback.models import FeedbackRequest
from imbue import ratelimit
from study import assignment, flow, services
from study.models import Participant, Study, StudyChat, SurveyAnswer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SITUATIONS = {
    "s1": (
        "My flatmate has left their dishes in the sink most nights for the last two weeks.",
        "Get my flatmate to wash their dishes the same evening.",
        "social",
        3,
    ),
    "s2": (
        "My manager has added weekend shifts to my rota three times this month without asking.",
        "Be asked before any weekend shift is added.",
        "work",
        7,
    ),
}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(autouse=True)
def _fresh_rate_limits(settings) -> None:
    """Learner ids restart with every test database; their rate-limit windows must too."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}*"):
        client.delete(key)


def seed_with_first_arm(arm: str) -> str:
    """A seed whose sequence gives `arm` to the first participant (found, not forced)."""
    for index in range(1000):
        seed = f"e2e-{arm}-{index}"
        sequence = assignment.generate_sequence(
            method="blocks", arms=["simulation", "feedback"], seed=seed, length=4, block_size=4
        )
        if sequence[""][0] == arm:
            return seed
    raise AssertionError("no seed found")


def open_study(slug: str, arm: str, live_server_url: str) -> Study:
    study, _ = services.create_default_study(
        slug=slug, name=f"Study {slug}", seed=seed_with_first_arm(arm)
    )
    # A local "recruitment site" so the browser can follow the completion redirect offline.
    Study.objects.filter(pk=study.pk).update(
        completion_url=f"{live_server_url}/healthz?cc={{code}}", completion_code=f"{slug}-DONE"
    )
    study.refresh_from_db()
    assert study.sequence[""][0] == arm
    return study


def progress_number(page: Page) -> int:
    label = page.locator("#progress-label").inner_text()
    match = re.search(r"Step (\d+) of 11", label)
    assert match, label
    value = int(page.get_attribute("#study-progress progress", "value"))
    assert value == int(match.group(1))
    return value


def fits_the_screen(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def fill_situations(page: Page) -> None:
    for prefix, (text, goal, category, difficulty) in SITUATIONS.items():
        page.fill(f"#id_{prefix}-situation", text)
        page.fill(f"#id_{prefix}-goal", goal)
        page.check(f"#id_{prefix}-category_{category}")
        page.check(f"#id_{prefix}-difficulty_{difficulty}")
    page.click("#continue")


def answer_survey(page: Page, value: int) -> None:
    for key in [item.key for item in services.active_items()]:
        page.check(f"#item_{key}_{value}")
    page.click("#continue")


def talk(page: Page, *, strategy: str, text: str, feedback: bool) -> None:
    """One message that ends the chat (the fake partner agrees to '#agree'), then Continue."""
    page.wait_for_selector("#chat[data-socket=open]")
    page.check(f"#strategy-{strategy}")
    page.fill("#message-text", text)
    if feedback:
        page.click("#feedback-button")
        page.wait_for_selector("#feedback-panel-body[data-state='final']")
        assert page.locator("#feedback-panel-body .chip").count() > 0
    page.wait_for_selector("#send-button:not([disabled])")
    page.click("#send-button")
    page.wait_for_selector("#summary")
    # The Continue button turns on by itself once the chat has ended.
    expect(page.locator("#continue")).to_be_enabled(timeout=15_000)
    page.click("#continue")


def walk_the_study(
    page: Page, study: Study, pid: str, *, feedback_arm: bool, shots: Path
) -> list[int]:
    """The whole path through the pages; returns the step numbers the progress bar showed."""
    seen: list[int] = []
    page.goto(f"/s/{study.slug}/?PROLIFIC_PID={pid}&STUDY_ID=e2e-study&SESSION_ID=e2e-session")
    expect(page.locator("h1")).to_have_text("Before you start")
    seen.append(progress_number(page))
    assert fits_the_screen(page)
    page.screenshot(path=str(shots / f"study-{study.slug}-consent.png"), full_page=True)
    page.click("#agree")

    page.wait_for_url("**/step/situations/")
    seen.append(progress_number(page))
    fill_situations(page)

    page.wait_for_url("**/step/pre_s1/")
    seen.append(progress_number(page))
    assert fits_the_screen(page)
    answer_survey(page, 3)

    # Refresh mid-study, half-way through a survey: the same step comes back.
    page.wait_for_url("**/step/pre_s2/")
    seen.append(progress_number(page))
    page.check("#item_confident_2")
    page.reload()
    page.wait_for_url("**/step/pre_s2/")
    assert progress_number(page) == 4
    answer_survey(page, 2)

    page.wait_for_url("**/step/eval_s1_pre/")
    seen.append(progress_number(page))
    assert page.locator("#feedback-panel").count() == 0
    assert page.locator("#feedback-button").count() == 0
    expect(page.locator("#continue")).to_be_disabled()
    talk(page, strategy="describe", text="The dishes have been in the sink for two weeks. #agree",
         feedback=False)  # fmt: skip

    page.wait_for_url("**/step/train_s1/")
    seen.append(progress_number(page))
    page.wait_for_selector("#chat[data-socket=open]")
    # Refresh mid-chat: the same conversation comes back.
    before = page.get_attribute("#chat", "ws-connect")
    page.reload()
    page.wait_for_selector("#chat[data-socket=open]")
    assert page.get_attribute("#chat", "ws-connect") == before
    page.screenshot(path=str(shots / f"study-{study.slug}-training.png"), full_page=True)
    if feedback_arm:
        expect(page.locator("#feedback-panel")).to_be_visible()
        expect(page.get_by_role("button", name="Suggest a skill")).to_be_visible()
    else:
        assert page.locator("#feedback-panel").count() == 0
        assert page.locator("#feedback-button").count() == 0
        assert page.get_by_role("button", name="Suggest a skill").count() == 0
        assert "feedback" not in page.locator("#chat").inner_text().lower()
    talk(page, strategy="assert", text="Please wash your dishes the same evening. #agree",
         feedback=feedback_arm)  # fmt: skip

    page.wait_for_url("**/step/post_s1/")
    seen.append(progress_number(page))
    answer_survey(page, 5)

    page.wait_for_url("**/step/eval_s1_post/")
    seen.append(progress_number(page))
    assert page.locator("#feedback-panel").count() == 0
    talk(page, strategy="express", text="I feel tired when I come home to a full sink. #agree",
         feedback=False)  # fmt: skip

    page.wait_for_url("**/step/post_s2/")
    seen.append(progress_number(page))
    answer_survey(page, 4)

    page.wait_for_url("**/step/eval_s2_post/")
    seen.append(progress_number(page))
    assert page.locator("#feedback-panel").count() == 0
    talk(page, strategy="assert", text="Please ask me before adding a weekend shift. #agree",
         feedback=False)  # fmt: skip

    page.wait_for_url("**/step/debrief/")
    seen.append(progress_number(page))
    code = f"{study.slug}-DONE"
    expect(page.locator("#completion-code")).to_have_text(code)
    page.screenshot(path=str(shots / f"study-{study.slug}-debrief.png"), full_page=True)
    page.click("#completion-link")
    page.wait_for_url(f"**/healthz?cc={code}")
    return seen


def check_record(study: Study, pid: str, arm: str) -> Participant:
    participant = Participant.objects.select_related("arm").get(study=study, prolific_pid=pid)
    assert participant.status == Participant.Status.COMPLETED
    assert participant.arm.key == arm and participant.allocation.position == 0
    assert participant.step == flow.DEBRIEF
    chats = StudyChat.objects.filter(participant=participant).select_related("conversation")
    assert chats.count() == 4
    for chat in chats:
        conversation = chat.conversation
        assert conversation.status == "agreed"
        if chat.kind == "evaluation":
            assert not conversation.feedback_enabled and not conversation.suggestion_enabled
        else:
            assert conversation.feedback_enabled is (arm == "feedback")
    answers = SurveyAnswer.objects.filter(participant=participant)
    assert answers.count() == 32
    assert answers.filter(slot="S1", time="pre", item_key="confident").get().value == 3
    assert answers.filter(slot="S2", time="pre", item_key="confident").get().value == 2
    return participant


def test_a_participant_in_the_feedback_arm_walks_the_whole_study(
    page: Page, live_server_url: str, artifacts_dir: Path
) -> None:
    study = open_study("e2e-feedback", "feedback", live_server_url)
    pid = "5f0000000000000000000001"
    seen = walk_the_study(page, study, pid, feedback_arm=True, shots=artifacts_dir)
    assert seen == list(range(1, 12))
    participant = check_record(study, pid, "feedback")
    training = StudyChat.objects.get(participant=participant, kind="training").conversation
    shown = FeedbackRequest.objects.filter(draft__conversation=training)
    assert shown.count() == 1 and shown.get().status == FeedbackRequest.Status.DONE


def test_a_participant_in_the_simulation_arm_never_sees_feedback_on_a_phone(
    browser, live_server_url: str, artifacts_dir: Path
) -> None:
    study = open_study("e2e-simulation", "simulation", live_server_url)
    context = browser.new_context(base_url=live_server_url, viewport=PHONE, is_mobile=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        pid = "5f0000000000000000000002"
        seen = walk_the_study(page, study, pid, feedback_arm=False, shots=artifacts_dir)
        assert seen == list(range(1, 12))
    except Exception:
        page.screenshot(
            path=str(artifacts_dir / "e2e-study-simulation-failure.png"), full_page=True
        )
        raise
    finally:
        context.close()
    participant = check_record(study, pid, "simulation")
    assert not FeedbackRequest.objects.filter(draft__conversation__learner=participant.learner)
