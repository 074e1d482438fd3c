"""The participant's pages over HTTP: entry, each step, resuming, and what cannot be skipped."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from simulations import services as chat_services
from simulations.models import Conversation, Situation
from study import flow, services
from study.models import Participant, Study, StudyChat, SurveyAnswer
from tests.study.conftest import S1_TEXT, S2_TEXT, run_out, walk_to

pytestmark = pytest.mark.django_db

PID = "5f1e2d3c4b5a69788796a5b4"


def entry_url(study: Study, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return reverse("study:entry", args=[study.slug]) + (f"?{query}" if query else "")


def step_url(study: Study, key: str) -> str:
    return reverse("study:step", args=[study.slug, key])


def join(client: Client, study: Study, pid: str = PID) -> Participant:
    response = client.get(entry_url(study, PROLIFIC_PID=pid, STUDY_ID="s1", SESSION_ID="x1"))
    assert response.status_code == 302
    return Participant.objects.get(study=study, prolific_pid=pid)


def situation_data(s1: int = 3, s2: int = 6, **extra: str) -> dict[str, str]:
    return {
        "step": "situations",
        "s1-situation": S1_TEXT,
        "s1-goal": "Share the washing up.",
        "s1-category": "social",
        "s1-difficulty": str(s1),
        "s2-situation": S2_TEXT,
        "s2-goal": "Be asked before extra shifts.",
        "s2-category": "work",
        "s2-difficulty": str(s2),
        **extra,
    }


def survey_data(key: str, value: int = 5) -> dict[str, str]:
    data = {"step": key}
    for item in services.active_items():
        data[f"item_{item.key}"] = str(value)
        data[f"version_{item.key}"] = str(item.version)
    return data


def current(participant: Participant) -> str:
    return Participant.objects.get(pk=participant.pk).step


def flashes(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --------------------------------------------------------------------------- entry


def test_prolific_link_enrols_and_keeps_the_recruitment_ids(client: Client, study: Study) -> None:
    response = client.get(entry_url(study, PROLIFIC_PID=PID, STUDY_ID="st", SESSION_ID="se"))
    participant = Participant.objects.get(study=study)
    assert response.url == step_url(study, "consent")
    assert (participant.prolific_pid, participant.prolific_study_id) == (PID, "st")
    assert participant.prolific_session_id == "se"
    assert participant.source == Participant.Source.PROLIFIC


def test_the_same_prolific_participant_returns_to_their_place_on_any_device(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "pre_s2")
    other_device = Client()
    response = other_device.get(
        entry_url(study, PROLIFIC_PID=PID, STUDY_ID="s1", SESSION_ID="x1"), follow=True
    )
    assert response.redirect_chain[-1][0] == step_url(study, "pre_s2")
    assert "Welcome back" in response.content.decode()
    assert Participant.objects.filter(study=study).count() == 1
    assert current(participant) == "pre_s2"


def test_a_prolific_id_alone_cannot_take_over_someone_elses_session(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "pre_s1")
    stranger = Client()
    for params in ({"PROLIFIC_PID": PID}, {"PROLIFIC_PID": PID, "SESSION_ID": "guess"}):
        response = stranger.get(entry_url(study, **params))
        assert response.status_code == 403
        assert "already started" in response.content.decode()
    assert stranger.get(step_url(study, "pre_s1")).url == entry_url(study)
    # The participant's own browser still comes back without the session id.
    assert client.get(entry_url(study, PROLIFIC_PID=PID)).url == step_url(study, "pre_s1")
    assert current(participant) == "pre_s1"


def test_generic_participant_label_enrols_once(client: Client, study: Study) -> None:
    client.get(entry_url(study, participant="panel-77"))
    Client().get(entry_url(study, participant="panel-77"))
    participant = Participant.objects.get(study=study)
    assert (participant.label, participant.source) == ("panel-77", "label")


def test_without_recruitment_ids_a_participant_gets_a_code_to_note(
    client: Client, study: Study
) -> None:
    page = client.get(entry_url(study))
    assert page.status_code == 200 and "Start the study" in page.content.decode()
    assert not Participant.objects.exists()
    response = client.post(reverse("study:start", args=[study.slug]), follow=True)
    participant = Participant.objects.get(study=study)
    assert participant.source == Participant.Source.DIRECT
    # The key to note is the participant's own, not the pseudonym staff and exports see.
    assert participant.resume_key in response.content.decode()
    assert participant.code not in response.content.decode()
    # Coming back to the same link on this browser continues; with the key, on another one.
    assert client.get(entry_url(study)).url == step_url(study, "consent")
    elsewhere = Client()
    resume = reverse("study:resume", args=[study.slug])
    moved = elsewhere.post(resume, {"code": participant.resume_key})
    assert moved.url == step_url(study, "consent")
    # The research pseudonym (in every export, on the dashboard) does not continue as them.
    assert Client().post(resume, {"code": participant.code}).status_code == 400
    assert Participant.objects.count() == 1


def test_an_unknown_resume_code_is_refused(client: Client, study: Study) -> None:
    response = client.post(reverse("study:resume", args=[study.slug]), {"code": "NOPE"})
    assert response.status_code == 400
    assert "not found" in response.content.decode()


def test_wrong_participant_codes_are_limited_with_a_429_on_the_studys_own_page(
    study: Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imbue import ratelimit

    monkeypatch.setattr(ratelimit, "RESUME_FAILURES_PER_ADDRESS", 3)
    ip = "192.0.2.77"
    ratelimit.forget_resume_failures(ip=ip, session_key=None)
    client = Client(REMOTE_ADDR=ip)
    client.post(reverse("study:start", args=[study.slug]))
    participant = Participant.objects.get(study=study)
    resume = reverse("study:resume", args=[study.slug])
    for _ in range(3):
        assert Client(REMOTE_ADDR=ip).post(resume, {"code": "NOPE"}).status_code == 400
    response = Client(REMOTE_ADDR=ip).post(resume, {"code": participant.resume_key})
    page = response.content.decode()
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "Please wait before trying again" in page and study.name in page
    assert f'value="{participant.resume_key}"' in page and f'action="{resume}"' in page
    assert "Continue where I stopped" in page and "Your practice" not in page
    # Its own browser, elsewhere, is not held up; the wait over, the key works again.
    elsewhere = Client(REMOTE_ADDR="192.0.2.78")
    ratelimit.forget_resume_failures(ip="192.0.2.78", session_key=None)
    assert elsewhere.post(resume, {"code": participant.resume_key}).status_code == 302
    ratelimit.forget_resume_failures(ip=ip, session_key=None)
    moved = Client(REMOTE_ADDR=ip).post(resume, {"code": participant.resume_key})
    assert moved.status_code == 302 and participant.step in moved["Location"]


@pytest.mark.parametrize("pid", ["{{%PROLIFIC_PID%}}", "a b", "x" * 65])
def test_malformed_recruitment_ids_get_a_clear_page(client: Client, study: Study, pid) -> None:
    response = client.get(reverse("study:entry", args=[study.slug]), {"PROLIFIC_PID": pid})
    assert response.status_code == 400
    assert "not complete" in response.content.decode()
    assert not Participant.objects.exists()


def test_closed_and_draft_studies_show_a_clear_page(client: Client, study: Study) -> None:
    services.close_study(study=study)
    closed = client.get(entry_url(study, PROLIFIC_PID=PID))
    assert "has closed" in closed.content.decode()
    draft, _ = services.create_default_study(slug="soon", name="Soon", open_now=False)
    page = client.get(entry_url(draft))
    assert "not opened yet" in page.content.decode()
    assert client.post(reverse("study:start", args=[draft.slug])).status_code == 200
    assert not Participant.objects.exists()
    assert client.get("/s/no-such-study/").status_code == 404


def test_participants_already_in_can_finish_after_the_study_closes(
    client: Client, study: Study
) -> None:
    join(client, study)
    services.close_study(study=study)
    response = client.get(step_url(study, "consent"))
    assert response.status_code == 200 and "I agree" in response.content.decode()


def test_step_pages_need_a_participant(client: Client, study: Study) -> None:
    response = client.get(step_url(study, "consent"))
    assert response.url == entry_url(study)


# --------------------------------------------------------------------------- the steps


def test_consent_page_has_clear_text_both_choices_progress_and_a_way_out(
    client: Client, study: Study
) -> None:
    join(client, study)
    html = client.get(step_url(study, "consent")).content.decode()
    assert study.consent_text.splitlines()[0][:40] in html
    assert "I agree" in html and "I do not agree" in html
    assert '<progress value="1" max="11"' in html and "Step 1 of 11" in html
    assert reverse("study:withdraw", args=[study.slug]) in html
    assert "Withdraw from the study" in html


def test_declining_consent_leads_to_the_screen_out_code_and_link(
    client: Client, study: Study
) -> None:
    Study.objects.filter(pk=study.pk).update(
        screenout_url="https://app.prolific.com/submissions/complete?cc={code}"
    )
    participant = join(client, study)
    response = client.post(
        step_url(study, "consent"), {"step": "consent", "decision": "decline"}, follow=True
    )
    html = response.content.decode()
    assert "TRIAL-NOCONSENT" in html
    assert "https://app.prolific.com/submissions/complete?cc=TRIAL-NOCONSENT" in html
    assert current(participant) == flow.SCREENED_OUT
    again = client.get(step_url(study, "situations"), follow=True)
    assert again.redirect_chain[-1][0] == step_url(study, flow.SCREENED_OUT)


def test_situation_form_reports_errors_and_keeps_what_was_typed(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "situations")
    response = client.post(step_url(study, "situations"), situation_data(s1=3, s2=""))  # type: ignore[arg-type]
    html = response.content.decode()
    assert response.status_code == 200 and "Please fix the following" in html
    assert S1_TEXT in html
    assert current(participant) == "situations"


def test_situation_two_easier_than_one_is_explained(client: Client, study: Study) -> None:
    participant = walk_to(join(client, study), "situations")
    response = client.post(step_url(study, "situations"), situation_data(s1=6, s2=4))
    assert "Situation 2 should feel at least as hard" in response.content.decode()
    assert current(participant) == "situations"
    assert not Situation.objects.filter(learner=participant.learner).exists()


def test_identifying_details_are_pointed_out_and_can_be_removed(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "situations")
    named = "My boss Jennifer Walsh emails me at 11pm every night."
    data = situation_data(**{"s1-situation": named})
    warned = client.post(step_url(study, "situations"), data)
    html = warned.content.decode()
    assert 'id="privacy-warning"' in html and "Jennifer Walsh" in html
    assert current(participant) == "situations"
    saved = client.post(step_url(study, "situations"), {**data, "identifying": "remove"})
    assert saved.url == step_url(study, "pre_s1")
    s1 = services.participant_situations(participant)["S1"]
    assert "Jennifer" not in s1.situation and s1.learner_id == participant.learner_id


def test_survey_is_radio_groups_with_legends_and_all_answers_are_required(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "pre_s1")
    html = client.get(step_url(study, "pre_s1")).content.decode()
    assert html.count("<fieldset") >= 8 and html.count("<legend>") >= 8
    assert html.count('type="radio"') == 8 * 7
    assert "Strongly disagree" in html and "Strongly agree" in html
    assert S1_TEXT in html
    partial = survey_data("pre_s1")
    partial.pop("item_fear")
    response = client.post(step_url(study, "pre_s1"), partial)
    html = response.content.decode()
    assert response.status_code == 400 and "Please answer every statement" in html
    assert 'value="5" id="item_anger_5" required\n          checked' in html
    assert not SurveyAnswer.objects.exists()
    client.post(step_url(study, "pre_s1"), survey_data("pre_s1"))
    assert current(participant) == "pre_s2"
    assert SurveyAnswer.objects.filter(participant=participant, slot="S1", time="pre").count() == 8


def test_a_later_step_cannot_be_reached_by_its_url_or_a_forged_form(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "pre_s1")
    response = client.get(step_url(study, "pre_s2"), follow=True)
    assert response.redirect_chain[-1][0] == step_url(study, "pre_s1")
    assert "Please finish this step first." in flashes(response)
    client.post(step_url(study, "pre_s2"), survey_data("pre_s2"))
    client.post(step_url(study, "pre_s1"), survey_data("pre_s2"))
    client.get(step_url(study, "debrief"))
    assert current(participant) == "pre_s1"
    assert not SurveyAnswer.objects.exists()


def test_the_back_button_and_a_resubmitted_form_cannot_repeat_a_step(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "pre_s1")
    client.post(step_url(study, "pre_s1"), survey_data("pre_s1", 2))
    again = client.post(step_url(study, "pre_s1"), survey_data("pre_s1", 7), follow=True)
    assert again.redirect_chain[-1][0] == step_url(study, "pre_s2")
    assert "already done" in " ".join(flashes(again))
    back = client.get(step_url(study, "consent"), follow=True)
    assert back.redirect_chain[-1][0] == step_url(study, "pre_s2")
    answers = SurveyAnswer.objects.filter(participant=participant)
    assert set(answers.values_list("value", flat=True)) == {2}


def test_two_tabs_of_one_participant_cannot_fork_the_path(study: Study) -> None:
    tab_a, tab_b = Client(), Client()
    participant = join(tab_a, study)
    join(tab_b, study)
    walk_to(participant, "situations")
    first = tab_a.post(step_url(study, "situations"), situation_data(s1=2, s2=5))
    second = tab_b.post(step_url(study, "situations"), situation_data(s1=4, s2=9))
    assert first.url == second.url == step_url(study, "pre_s1")
    assert Situation.objects.filter(learner=participant.learner).count() == 2
    assert services.participant_situations(participant)["S1"].difficulty == 2
    # Both tabs now see the same step; one answers, the other's identical form is stale.
    tab_a.post(step_url(study, "pre_s1"), survey_data("pre_s1", 1))
    tab_b.post(step_url(study, "pre_s1"), survey_data("pre_s1", 7))
    assert set(SurveyAnswer.objects.values_list("value", flat=True)) == {1}


def test_a_chat_step_starts_one_conversation_for_every_tab_and_every_visit(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "eval_s1_pre")
    html = client.get(step_url(study, "eval_s1_pre")).content.decode()
    other_tab = Client()
    join(other_tab, study)
    other_tab.get(step_url(study, "eval_s1_pre"))
    client.get(step_url(study, "eval_s1_pre"))
    conversation = Conversation.objects.get(learner=participant.learner)
    assert StudyChat.objects.get(participant=participant).conversation == conversation
    assert f'ws-connect="/ws/conversations/{conversation.pk}/"' in html
    assert 'id="feedback-panel"' not in html
    assert "There is no feedback in this conversation" in html
    assert re.search(r'<button type="submit" id="continue" disabled', html)
    assert "Step 5 of 11" in html


def test_continue_works_only_once_the_conversation_has_ended(client: Client, study: Study) -> None:
    participant = walk_to(join(client, study), "eval_s1_pre")
    client.get(step_url(study, "eval_s1_pre"))
    early = client.post(step_url(study, "eval_s1_pre"), {"step": "eval_s1_pre"}, follow=True)
    assert "still going" in " ".join(flashes(early))
    assert current(participant) == "eval_s1_pre"
    status_url = reverse("study:chat_status", args=[study.slug, "eval_s1_pre"])
    polling = client.get(status_url, HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 3s"' in polling and "disabled" in polling
    conversation = Conversation.objects.get(learner=participant.learner)
    # An evaluation chat cannot be ended early: the post is refused and leads back to the step.
    refused = client.post(reverse("simulations:end", args=[conversation.pk]), follow=True)
    assert refused.redirect_chain[-1][0] == step_url(study, "eval_s1_pre")
    assert "ends when they agree" in " ".join(flashes(refused))
    assert Conversation.objects.get(pk=conversation.pk).is_open
    run_out(conversation)
    ready = client.get(status_url, HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in ready and "disabled" not in ready
    client.post(step_url(study, "eval_s1_pre"), {"step": "eval_s1_pre"})
    participant.refresh_from_db()
    assert participant.step == "train_s1" and participant.arm is not None


def test_an_ended_chat_step_leads_on_to_its_continue_button_not_the_practice_pages(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "eval_s1_pre")
    html = client.get(step_url(study, "eval_s1_pre")).content.decode()
    assert "End the conversation" not in html
    conversation = Conversation.objects.get(learner=participant.learner)
    run_out(conversation)
    html = client.get(step_url(study, "eval_s1_pre")).content.decode()
    summary = html[html.index('id="summary"') : html.index('id="study-continue"')]
    assert f'href="{step_url(study, "eval_s1_pre")}#study-continue"' in summary
    assert services.CHAT_RETURN_LABEL in summary
    assert "Back to your practice" not in summary and "start again" not in summary


@pytest.mark.django_db(transaction=True)  # the reply is written on another thread's connection
def test_without_javascript_the_chats_forms_come_back_to_the_step(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "eval_s1_pre")
    client.get(step_url(study, "eval_s1_pre"))
    conversation = Conversation.objects.get(learner=participant.learner)
    sent = client.post(
        reverse("simulations:send", args=[conversation.pk]),
        {"text": "Please wash up tonight.", "strategies": ["assert"]},
    )
    assert sent.url == step_url(study, "eval_s1_pre") + "#composer"
    refused = client.post(
        reverse("simulations:send", args=[conversation.pk]),
        {"text": "Hi.", "strategies": []},
        follow=True,
    )
    assert refused.redirect_chain[-1][0] == step_url(study, "eval_s1_pre")
    assert "Pick at least one skill" in " ".join(flashes(refused))
    assert 'class="messages"' in refused.content.decode()


@pytest.mark.django_db(transaction=True)  # the reply is written on another thread's connection
def test_without_javascript_a_refused_message_comes_back_into_the_steps_message_box(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "eval_s1_pre")
    client.get(step_url(study, "eval_s1_pre"))
    conversation = Conversation.objects.get(learner=participant.learner)
    send = reverse("simulations:send", args=[conversation.pk])
    words = "You left the dishes <again> on four nights; please wash up tonight."
    # No skill ticked: refused, and the words typed must not be lost on the way back.
    refused = client.post(send, {"text": words, "strategies": []}, follow=True)
    page = refused.content.decode()
    assert "Pick at least one skill" in " ".join(flashes(refused))
    box = re.search(r'<textarea id="message-text"[^>]*>([^<]*)</textarea>', page)
    assert (
        box
        and box.group(1)
        == "You left the dishes &lt;again&gt; on four nights; please wash up tonight."
    )
    # Too long: the words and the skills ticked both come back.
    long_words = "Please. " * 300
    refused = client.post(
        send, {"text": long_words, "strategies": ["describe", "assert"]}, follow=True
    )
    page = refused.content.decode()
    assert "the limit is 2,000" in " ".join(flashes(refused))
    assert long_words.strip() in page
    assert re.search(r'value="describe" id="strategy-describe"[^>]* checked', page)
    assert re.search(r'value="assert" id="strategy-assert"[^>]* checked', page)
    assert not re.search(r'value="express" id="strategy-express"[^>]* checked', page)
    # Once: the next visit shows an empty box, and nothing was stored.
    again = client.get(step_url(study, "eval_s1_pre")).content.decode()
    assert re.search(r'<textarea id="message-text"[^>]*></textarea>', again)
    assert not conversation.messages.filter(role="learner").exists()


def test_the_training_chat_shows_feedback_only_in_the_feedback_arm(study: Study) -> None:
    pages: dict[str, str] = {}
    for index in range(4):  # a permuted block of 4 holds two of each arm
        client = Client()
        participant = walk_to(join(client, study, pid=f"{index:024x}"), "train_s1")
        pages[participant.arm.key] = client.get(step_url(study, "train_s1")).content.decode()
    assert set(pages) == {"simulation", "feedback"}
    assert 'id="feedback-panel"' in pages["feedback"] and "Suggest a skill" in pages["feedback"]
    assert 'id="feedback-panel"' not in pages["simulation"]
    assert "Get feedback" not in pages["simulation"]
    assert "Suggest a skill" not in pages["simulation"]
    assert "Pick <strong>one</strong> skill" in pages["simulation"]


def test_resuming_returns_to_the_same_step_situation_and_conversation(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "eval_s1_post")
    first = client.get(step_url(study, "eval_s1_post")).content.decode()
    conversation = StudyChat.objects.get(participant=participant, step="eval_s1_post").conversation
    chat_services.record_learner_message(
        conversation=conversation, text="I need you to wash up tonight.", strategies=["assert"]
    )
    later = Client()
    response = later.get(entry_url(study, PROLIFIC_PID=PID, SESSION_ID="x1"), follow=True)
    html = response.content.decode()
    assert response.redirect_chain[-1][0] == step_url(study, "eval_s1_post")
    socket = f"/ws/conversations/{conversation.pk}/"
    assert socket in html and socket in first
    assert "I need you to wash up tonight." in html and S1_TEXT in html
    assert StudyChat.objects.filter(participant=participant).count() == 3


def test_progress_advances_and_every_page_offers_withdrawal(client: Client, study: Study) -> None:
    Study.objects.filter(pk=study.pk).update(
        completion_url="https://app.prolific.com/submissions/complete?cc={code}"
    )
    participant = join(client, study)
    seen: list[int] = []
    while True:
        key = current(participant)
        html = client.get(step_url(study, key)).content.decode()
        number = int(re.search(r"Step (\d+) of 11", html).group(1))
        seen.append(number)
        assert "Withdraw from the study" in html
        if key == "debrief":
            break
        step = flow.step_for(key)
        if step.kind == flow.CONSENT:
            client.post(step_url(study, key), {"step": key, "decision": "agree"})
        elif step.kind == flow.SITUATIONS:
            client.post(step_url(study, key), situation_data())
        elif step.kind == flow.SURVEY:
            client.post(step_url(study, key), survey_data(key))
        else:
            conversation = StudyChat.objects.get(participant=participant, step=key).conversation
            run_out(conversation)
            client.post(step_url(study, key), {"step": key})
    assert seen == list(range(1, 12))
    participant.refresh_from_db()
    assert participant.status == Participant.Status.COMPLETED
    assert 'id="completion-code">TRIAL-DONE<' in html
    assert 'href="https://app.prolific.com/submissions/complete?cc=TRIAL-DONE"' in html
    finished = client.get(step_url(study, "train_s1"), follow=True)
    assert "already finished" in " ".join(flashes(finished))


def test_a_chat_paused_for_safety_shows_the_studys_support_text_and_can_be_left(
    client: Client, study: Study
) -> None:
    participant = walk_to(join(client, study), "eval_s1_pre")
    client.get(step_url(study, "eval_s1_pre"))
    conversation = Conversation.objects.get(learner=participant.learner)
    chat_services.record_learner_message(
        conversation=conversation, text="I want to kill myself.", strategies=["express"]
    )
    html = client.get(step_url(study, "eval_s1_pre")).content.decode()
    assert "Samaritans 116 123" in html and "findahelpline" not in html  # the study's own text
    assert not re.search(r'<button type="submit" id="continue" disabled', html)
    client.post(step_url(study, "eval_s1_pre"), {"step": "eval_s1_pre"})
    assert current(participant) == "train_s1"


# --------------------------------------------------------------------------- staff


@pytest.fixture
def staff(client: Client, django_user_model) -> Client:
    user = django_user_model.objects.create_superuser("staff", "staff@example.org", "pw-123456")
    client.force_login(user)
    return client


def test_staff_create_a_draft_study_in_the_admin_and_open_it_with_an_action(staff: Client) -> None:
    data = {
        "name": "Pilot",
        "slug": "pilot",
        "target_size": "40",
        "consent_text": "Please read this.",
        "allocation_method": "blocks",
        "block_size": "2",
        "stratify_by": "",
        "completion_code": "P-DONE",
        "screenout_code": "P-OUT",
        "withdrawal_code": "P-WD",
        "min_difficulty_gap": "1",
        "max_messages": "8",
        "training_strategy_mode": "single",
        "evaluation_strategy_mode": "multiple",
        "evaluation_worksheet_shown": "on",
        "evaluation_adaptive_partner": "on",
        "arms-TOTAL_FORMS": "2",
        "arms-INITIAL_FORMS": "0",
        "arms-0-order": "0",
        "arms-0-key": "control",
        "arms-0-name": "Control",
        "arms-0-worksheet_shown": "on",
        "arms-0-weight": "1",
        "arms-1-order": "1",
        "arms-1-key": "treatment",
        "arms-1-name": "Treatment",
        "arms-1-feedback_shown": "on",
        "arms-1-worksheet_shown": "on",
        "arms-1-weight": "1",
        "consent_versions-TOTAL_FORMS": "0",
        "consent_versions-INITIAL_FORMS": "0",
        "staff_grants-TOTAL_FORMS": "0",  # staff access (superusers see it)
        "staff_grants-INITIAL_FORMS": "0",
    }
    response = staff.post(reverse("admin:study_study_add"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    study = Study.objects.get(slug="pilot")
    assert study.status == Study.Status.DRAFT and not study.design_frozen
    assert study.consent_versions.get().version == 1
    staff.post(
        reverse("admin:study_study_changelist"),
        {"action": "open_studies", "_selected_action": [study.pk]},
    )
    study.refresh_from_db()
    assert study.status == Study.Status.OPEN and study.design["arms"] == ["control", "treatment"]
    page = staff.get(reverse("admin:study_study_change", args=[study.pk])).content.decode()
    assert study.sequence_hash in page
    assert 'name="arms-0-key"' not in page  # arms are frozen once the sequence is on record


def test_an_admin_save_with_a_changed_consent_text_records_a_new_version(
    study: Study, rf, admin_user
) -> None:
    from types import SimpleNamespace

    from django.contrib import admin

    request = rf.post("/")
    request.user = admin_user
    study.consent_text = "A clearer consent text."
    admin.site._registry[Study].save_model(
        request, study, SimpleNamespace(changed_data=["consent_text"]), change=True
    )
    study.refresh_from_db()
    assert study.consent_version == 2
    assert study.consent_versions.get(version=2).text == "A clearer consent text."


def test_staff_see_participants_with_their_step_and_arm(staff: Client, study: Study) -> None:
    participant = walk_to(join(Client(), study), "post_s1")
    page = staff.get(reverse("admin:study_participant_changelist")).content.decode()
    assert participant.code in page and "post_s1" in page and participant.arm.name in page
    assert staff.get(reverse("admin:study_surveyitem_changelist")).status_code == 200
    assert staff.get(reverse("admin:study_allocation_changelist")).status_code == 200
    assert staff.get(reverse("admin:study_withdrawalreceipt_changelist")).status_code == 200
