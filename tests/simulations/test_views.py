"""The conversation page and its no-JavaScript form posts."""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from imbue import ratelimit
from simulations import services, views
from simulations.learners import SESSION_KEY
from simulations.models import Conversation, EmotionCheckin, Learner, Message, Situation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_rate_limit(settings) -> None:
    # Learner ids repeat across runs while Redis keeps the last minute's hits.
    settings.IMBUE = {**settings.IMBUE, "messages_per_minute": 0}


def owner_client(learner: Learner) -> Client:
    client = Client()
    session = client.session
    session[SESSION_KEY] = learner.pk
    session.save()
    return client


def start(**options: object) -> Conversation:
    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner,
        situation="My boss has asked me to stay late three evenings this week with no notice.",
        goal="Agree on at least a day's notice before late shifts.",
        category="work",
        difficulty=4,
    )
    return services.start_conversation(
        learner=learner, situation=situation, options=options or None
    )


def url(name: str, conversation: Conversation) -> str:
    return reverse(f"simulations:{name}", kwargs={"conversation_id": conversation.pk})


def test_the_page_shows_situation_log_form_worksheet_and_feedback_slot(no_llm: None) -> None:
    conversation = start()
    response = owner_client(conversation.learner).get(url("conversation", conversation))
    page = response.content.decode()
    assert response.status_code == 200
    assert "stay late three evenings" in page and "a day&#x27;s notice" in page
    assert 'role="log"' in page and 'aria-live="polite"' in page
    assert f'ws-connect="/ws/conversations/{conversation.pk}/"' in page
    assert 'id="chat-form"' in page and 'for="message-text"' in page
    assert page.count('type="checkbox" name="strategies"') == 5
    assert "<legend>Which skills will you use in this message?</legend>" in page
    assert 'id="worksheet"' in page and "Stay mindful" in page
    assert 'id="feedback-panel"' in page
    assert "Suggest a skill" in page
    assert 'id="checkin-before"' in page and page.count('name="intensity"') == 11
    assert "offline partner" in page


def test_switches_hide_feedback_suggestion_worksheet_and_single_mode_uses_radios(
    no_llm: None,
) -> None:
    conversation = start(
        feedback_enabled=False,
        suggestion_enabled=False,
        worksheet_enabled=False,
        strategy_mode="single",
    )
    page = owner_client(conversation.learner).get(url("conversation", conversation)).content
    page = page.decode()
    assert 'id="feedback-panel"' not in page and "Suggest a skill" not in page
    assert 'id="worksheet"' not in page
    assert page.count('type="radio" name="strategies"') == 5
    assert "Which skill will you use in this message?" in page


def test_another_browser_gets_404_for_every_conversation_url(no_llm: None) -> None:
    conversation = start()
    stranger = owner_client(Learner.objects.create())
    assert stranger.get(url("conversation", conversation)).status_code == 404
    for name in ("send", "retry", "end", "checkin", "suggest"):
        assert stranger.post(url(name, conversation), {"text": "hi"}).status_code == 404
    assert Client().get(url("conversation", conversation)).status_code == 404
    assert not conversation.messages.exists()
    conversation.refresh_from_db()
    assert conversation.is_open


def test_sending_without_javascript_stores_the_message_and_the_reply(no_llm: None) -> None:
    conversation = start()
    client = owner_client(conversation.learner)
    response = client.post(
        url("send", conversation),
        {"text": "Please give me a day's notice.", "strategies": ["assert"]},
    )
    assert response.status_code == 302
    assert response["Location"].endswith(url("conversation", conversation) + "#composer")
    learner, reply = conversation.messages.order_by("seq")
    assert learner.text == "Please give me a day's notice."
    assert reply.state == Message.State.COMPLETE and reply.text
    page = client.get(url("conversation", conversation)).content.decode()
    assert "Please give me a day&#x27;s notice." in page
    assert re.search(rf'id="msg-{reply.pk}" class="msg msg-partner msg-complete"', page)
    assert "You have 9 messages left." in page


SEND_KEY = re.compile(r'<input type="hidden" name="send_key" id="send-key" value="([^"]+)">')


def test_a_form_sent_twice_without_javascript_stores_one_message(no_llm: None) -> None:
    conversation = start()
    client = owner_client(conversation.learner)
    page = client.get(url("conversation", conversation)).content.decode()
    key = SEND_KEY.search(page).group(1)
    form = {"text": "Please give me notice.", "strategies": ["assert"], "send_key": key}
    first = client.post(url("send", conversation), form)
    again = client.post(url("send", conversation), form)  # a double click, a resubmitted page
    assert first.status_code == again.status_code == 302
    assert again["Location"] == first["Location"]
    assert list(conversation.messages.values_list("role", flat=True)) == ["learner", "partner"]
    assert not list(get_messages(first.wsgi_request))
    assert [str(m) for m in get_messages(again.wsgi_request)] == [views.ALREADY_SENT]
    # The page comes back with a new key for the next message.
    page = client.get(url("conversation", conversation)).content.decode()
    assert SEND_KEY.search(page).group(1) != key


def test_a_page_kept_from_before_sends_its_words_again_as_a_new_message(no_llm: None) -> None:
    # Without JavaScript the back button shows the page as it was, with the key of a message
    # sent since; the same words sent from it after later messages are a new message.
    conversation = start()
    client = owner_client(conversation.learner)
    old = SEND_KEY.search(client.get(url("conversation", conversation)).content.decode())
    form = {"text": "Okay.", "strategies": ["assert"], "send_key": old.group(1)}
    client.post(url("send", conversation), form)
    fresh = SEND_KEY.search(client.get(url("conversation", conversation)).content.decode())
    client.post(
        url("send", conversation),
        {"text": "Text me by ten.", "strategies": ["assert"], "send_key": fresh.group(1)},
    )
    stale = client.post(url("send", conversation), form)
    assert not list(get_messages(stale.wsgi_request))
    again = client.post(url("send", conversation), form)  # that page's form sent twice
    texts = conversation.messages.filter(role="learner").order_by("seq")
    assert list(texts.values_list("text", flat=True)) == ["Okay.", "Text me by ten.", "Okay."]
    assert conversation.messages.filter(role="partner", state="complete").count() == 3
    # The learner reads why the second sending shows nothing new.
    assert [str(m) for m in get_messages(again.wsgi_request)] == [views.ALREADY_SENT]


def test_a_refused_message_comes_back_with_the_draft_and_the_reason(no_llm: None) -> None:
    conversation = start()
    response = owner_client(conversation.learner).post(
        url("send", conversation), {"text": "My draft, kept.", "strategies": []}
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert "Pick at least one skill" in page
    assert ">My draft, kept.</textarea>" in page
    assert not conversation.messages.exists()


def test_checkin_suggest_and_end_without_javascript(no_llm: None) -> None:
    conversation = start()
    client = owner_client(conversation.learner)
    assert client.post(url("checkin", conversation), {"phase": "before", "intensity": "8"})[
        "Location"
    ].endswith("#chat")
    assert EmotionCheckin.objects.get(conversation=conversation).intensity == 8
    page = client.post(url("suggest", conversation)).content.decode()
    assert "Try <strong>Describe</strong>." in page
    assert client.post(url("end", conversation)).status_code == 302
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.ENDED
    page = client.get(url("conversation", conversation)).content.decode()
    assert "You ended the conversation" in page and 'id="chat-form"' not in page
    assert 'id="checkin-after"' in page
    bad = client.post(url("checkin", conversation), {"phase": "after", "intensity": "99"})
    assert bad.status_code == 400 and "0 to 10" in bad.content.decode()


@pytest.mark.parametrize(
    ("status", "says"),
    [
        ("ended", "has ended"),
        ("limit", "has ended"),
        ("agreed", "has ended"),
        ("paused", "is paused"),
    ],
)
def test_a_closed_chat_suggests_nothing_without_javascript(
    no_llm: None, status: str, says: str
) -> None:
    conversation = start()
    Conversation.objects.filter(pk=conversation.pk).update(status=status)
    response = owner_client(conversation.learner).post(url("suggest", conversation))
    page = response.content.decode()
    assert response.status_code == 400
    assert f"This conversation {says}, so there is no next message to suggest" in page
    assert "Try <strong>" not in page
    assert not conversation.suggestions.exists()


def test_suggestions_are_limited_per_learner_and_a_refused_one_is_neither_asked_nor_stored(
    no_llm: None, settings
) -> None:
    settings.IMBUE = {**settings.IMBUE, "suggestions_per_minute": 2}
    conversation = start()
    ratelimit.reset(f"suggestions:{conversation.learner_id}")
    client = owner_client(conversation.learner)
    for _ in range(2):
        assert (
            "Try <strong>Describe</strong>."
            in client.post(url("suggest", conversation)).content.decode()
        )
    response = client.post(url("suggest", conversation))
    page = html.unescape(response.content.decode())
    assert response.status_code == 400
    assert "You're asking for suggestions very fast. Please wait" in page
    assert "Try <strong>" not in page
    assert conversation.suggestions.count() == 2
    # The limit is the learner's, across their conversations.
    other = services.start_conversation(
        learner=conversation.learner, situation=conversation.situation
    )
    assert "suggestions very fast" in client.post(url("suggest", other)).content.decode()


def test_a_failed_reply_shows_try_again_and_the_retry_post_writes_it(fake_llm) -> None:
    conversation = start()
    fake_llm.faults(["500", "500", "500"])
    client = owner_client(conversation.learner)
    client.post(url("send", conversation), {"text": "Please.", "strategies": ["assert"]})
    reply = conversation.messages.get(seq=2)
    assert reply.state == Message.State.FAILED
    page = client.get(url("conversation", conversation)).content.decode()
    assert "Try again" in page and "Your message is saved" in page
    assert client.post(url("retry", conversation)).status_code == 302
    reply.refresh_from_db()
    assert reply.state == Message.State.COMPLETE


def test_get_only_and_post_only(no_llm: None) -> None:
    conversation = start()
    client = owner_client(conversation.learner)
    assert client.post(url("conversation", conversation)).status_code == 405
    assert client.get(url("send", conversation)).status_code == 405


def test_the_transcript_never_shows_up_as_flash_messages(no_llm: None) -> None:
    conversation = start()
    client = owner_client(conversation.learner)
    client.post(url("send", conversation), {"text": "Please.", "strategies": ["assert"]})
    response = client.get(url("conversation", conversation))
    page = response.content.decode()
    assert [m.seq for m in response.context["transcript"]] == [1, 2]
    assert 'class="messages"' not in page and "of conversation" not in page
    assert "Please." in page


def embedded(**options: object) -> Conversation:
    """A chat another page embeds, as a study step starts it."""
    learner = Learner.objects.create()
    situation = Situation.objects.create(
        learner=learner,
        situation="My boss has asked me to stay late three evenings this week with no notice.",
        goal="Agree on at least a day's notice before late shifts.",
        category="work",
        difficulty=4,
    )
    return services.start_conversation(
        learner=learner,
        situation=situation,
        kind=Conversation.Kind.EVALUATION,
        options=options or None,
        return_url="/s/trial/step/eval_s1_pre/#study-continue",
        return_label="Continue to the next step",
    )


def test_an_embedded_chats_summary_leads_to_its_page_not_the_practice_pages(
    no_llm: None,
) -> None:
    conversation = embedded()
    client = owner_client(conversation.learner)
    client.post(url("end", conversation))
    page = client.get(url("conversation", conversation)).content.decode()
    summary = page[page.index('id="summary"') :]
    assert 'href="/s/trial/step/eval_s1_pre/#study-continue">Continue to the next step</a>' in (
        summary
    )
    assert "Back to your practice" not in summary and "start again" not in summary
    practice = start()
    client = owner_client(practice.learner)
    client.post(url("end", practice))
    page = client.get(url("conversation", practice)).content.decode()
    assert "Back to your practice" in page and "start again whenever you like" in page


def test_without_javascript_an_embedded_chats_forms_return_to_the_embedding_page(
    no_llm: None,
) -> None:
    conversation = embedded()
    client = owner_client(conversation.learner)
    back = "/s/trial/step/eval_s1_pre/"
    checked = client.post(url("checkin", conversation), {"phase": "before", "intensity": "4"})
    assert checked["Location"] == back + "#chat"
    sent = client.post(url("send", conversation), {"text": "Please.", "strategies": ["assert"]})
    assert sent["Location"] == back + "#composer"
    assert conversation.messages.get(seq=2).state == Message.State.COMPLETE
    refused = client.post(url("send", conversation), {"text": "Hi.", "strategies": []})
    assert refused.status_code == 302 and refused["Location"] == back
    # The reason goes with the learner as a flash message, which the embedding page shows.
    flashed = " ".join(str(m) for m in get_messages(refused.wsgi_request))
    assert "Pick at least one skill" in flashed
    suggested = client.post(url("suggest", conversation))
    assert suggested["Location"] == back
    assert client.post(url("end", conversation))["Location"] == back + "#summary"


def test_a_return_url_that_is_not_a_path_on_this_site_is_never_followed(no_llm: None) -> None:
    conversation = start()
    Conversation.objects.filter(pk=conversation.pk).update(return_url="//evil.example/x")
    client = owner_client(conversation.learner)
    sent = client.post(url("send", conversation), {"text": "Please.", "strategies": ["assert"]})
    assert sent["Location"] == url("conversation", conversation) + "#composer"


def test_a_chat_that_may_not_be_ended_early_hides_the_button_and_refuses_the_post(
    no_llm: None,
) -> None:
    conversation = start(end_enabled=False)
    client = owner_client(conversation.learner)
    page = client.get(url("conversation", conversation)).content.decode()
    assert "End the conversation" not in page and url("end", conversation) not in page
    refused = client.post(url("end", conversation))
    assert refused.status_code == 400 and "ends when they agree" in refused.content.decode()
    inside = embedded(end_enabled=False)
    refused = owner_client(inside.learner).post(url("end", inside))
    assert refused["Location"] == "/s/trial/step/eval_s1_pre/"
    for chat in (conversation, inside):
        chat.refresh_from_db()
        assert chat.is_open


def test_the_page_says_the_offline_partner_answers_once_the_budget_is_spent(
    no_llm: None,
) -> None:
    conversation = start()
    client = owner_client(conversation.learner)
    assert 'id="budget-note"' not in client.get(url("conversation", conversation)).content.decode()
    Conversation.objects.filter(pk=conversation.pk).update(
        partner_brief={
            **conversation.partner_brief,
            "partner_fallback_reason": "the conversation's model-token budget was used up",
        }
    )
    page = client.get(url("conversation", conversation)).content.decode()
    assert f'<p class="hint" id="budget-note">{ratelimit.BUDGET_USED_UP}</p>' in page
