"""The "Get feedback" endpoint: owner only, CSRF-protected, the panel at once, clear refusals."""

from __future__ import annotations

import pytest
import redis
from django.test import Client
from django.urls import reverse

from feedback.models import Draft, FeedbackRequest
from imbue import ratelimit
from simulations.learners import SESSION_KEY
from simulations.models import Conversation, Learner, Situation


@pytest.fixture(autouse=True)
def _fresh_feedback_limits(settings) -> None:
    """Learner ids restart with every test database; their rate-limit windows must too."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}feedback:*"):
        client.delete(key)


DRAFT = "The rent was due on the 1st and it's the 9th. I feel anxious. Please pay by Friday."


def browser(learner: Learner, **kwargs: object) -> Client:
    client = Client(**kwargs)
    session = client.session
    session[SESSION_KEY] = learner.pk
    session.save()
    return client


def make_conversation(**switches: object) -> Conversation:
    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner,
        situation="My flatmate has paid the rent late three months running.",
        goal="Get my flatmate to pay their half on the 1st.",
    )
    return Conversation.objects.create(learner=learner, situation=situation, **switches)


def post(client: Client, conversation: Conversation, **data: object):
    data.setdefault("text", DRAFT)
    data.setdefault("strategies", ["describe", "assert"])
    return client.post(
        reverse("feedback:request", args=[conversation.pk]), data, headers={"HX-Request": "true"}
    )


@pytest.mark.django_db
def test_owner_gets_the_offline_panel_as_the_final_answer_when_no_model_is_connected(no_llm):
    conversation = make_conversation()
    response = post(browser(conversation.learner), conversation)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="feedback-panel-body"' in html
    assert 'data-state="final"' in html
    assert "offline rater" in html and "no language model is connected" in html
    for name in ("Describe:", "Assert:", "Stay mindful:", "Appear confident:"):
        assert name in html
    assert "Express:" not in html  # not chosen, not shown
    feedback = FeedbackRequest.objects.get()
    assert f'data-request-id="{feedback.pk}"' in html
    assert feedback.delivered_at is not None


@pytest.mark.django_db
def test_chips_are_words_and_weak_skills_offer_their_rewrite(no_llm):
    conversation = make_conversation()
    html = post(
        browser(conversation.learner),
        conversation,
        text="sorry, maybe if it's ok you could kind of pay sometime?",
        strategies=["describe", "express", "assert", "reinforce", "negotiate"],
    ).content.decode()
    assert any(f">{label}</span>" in html for label in ("Weak", "None"))
    assert "data-feedback-rewrite=" in html and "Use this version" in html


@pytest.mark.django_db
def test_with_a_model_the_panel_says_the_expert_check_is_still_running(
    fake_llm, django_capture_on_commit_callbacks
):
    conversation = make_conversation()
    with django_capture_on_commit_callbacks(execute=False):
        html = post(browser(conversation.learner), conversation).content.decode()
    assert 'data-state="queued"' in html
    assert "Quick offline check" in html and "expert model is checking" in html


@pytest.mark.django_db
def test_another_browser_gets_404_and_nothing_is_stored(no_llm):
    conversation = make_conversation()
    stranger = browser(Learner.objects.create())
    assert post(stranger, conversation).status_code == 404
    assert post(Client(), conversation).status_code == 404
    assert not Draft.objects.exists()


@pytest.mark.django_db
def test_the_endpoint_needs_post_and_a_csrf_token(no_llm):
    conversation = make_conversation()
    url = reverse("feedback:request", args=[conversation.pk])
    assert browser(conversation.learner).get(url).status_code == 405
    strict = browser(conversation.learner, enforce_csrf_checks=True)
    assert post(strict, conversation).status_code == 403
    strict.get(reverse("home"))  # sets the CSRF cookie, as the chat page does
    token = strict.cookies["csrftoken"].value
    response = strict.post(url, {"text": DRAFT, "strategies": ["assert"]},
                           headers={"X-CSRFToken": token})  # fmt: skip
    assert response.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"text": ""}, "Write your message first"),
        ({"text": "x" * 2001}, "the limit is 2,000"),
        ({"strategies": []}, "at least one strategy"),
    ],
)
def test_bad_input_answers_422_with_a_message_in_the_panel(no_llm, data, message):
    conversation = make_conversation()
    response = post(browser(conversation.learner), conversation, **data)
    assert response.status_code == 422
    html = response.content.decode()
    assert 'id="feedback-panel-body"' in html and 'role="alert"' in html
    assert message in html
    assert not Draft.objects.exists()


@pytest.mark.django_db
def test_a_no_feedback_arm_shows_no_rating(fake_llm, django_capture_on_commit_callbacks):
    conversation = make_conversation(feedback_enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        html = post(browser(conversation.learner), conversation).content.decode()
    assert "not part of this conversation" in html
    assert "Strong" not in html and "Weak" not in html
    assert fake_llm.requests() == []


@pytest.mark.django_db
def test_the_learners_words_are_escaped_in_the_panel(no_llm):
    conversation = make_conversation()
    html = post(
        browser(conversation.learner),
        conversation,
        text='<script>alert(1)</script> "quote" please pay',
        strategies=["describe", "express", "assert", "reinforce", "negotiate"],
    ).content.decode()
    assert "<script>alert" not in html


@pytest.mark.django_db
def test_used_rewrite_is_recorded_on_the_draft(no_llm):
    conversation = make_conversation()
    post(browser(conversation.learner), conversation, used_rewrite="1")
    assert Draft.objects.get().used_rewrite is True


@pytest.mark.django_db
def test_a_draft_suggesting_risk_shows_support_instead_of_feedback(no_llm):
    conversation = make_conversation()
    html = post(
        browser(conversation.learner), conversation, text="I want to kill myself tonight."
    ).content.decode()
    assert "This practice is paused" in html and 'class="support-resources"' in html
    assert "Strong" not in html and "Weak" not in html
    # What a screen reader is told (the panel is not a live region) points to the contacts.
    assert "Support contacts are in the feedback panel." in html
