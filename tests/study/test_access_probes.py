"""Access probes found by an outside-in review (session 16): what a researcher could read through
the admin's URL filters, whose chats their screens show, and who a recruitment link makes you."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from feedback.models import Draft
from simulations.learners import SESSION_KEY
from simulations.models import Conversation, Learner, Situation
from study import codebook, exports, services
from study.models import Participant
from tests.fakes.fixtures import no_llm  # noqa: F401
from tests.study.conftest import make_study, walk_to
from tests.study.factories import seed_study
from tests.study.test_permissions import login
from tests.study.test_permissions import staff as staff_user

pytestmark = pytest.mark.django_db

PID = "5f1e2d3c4b5a69788796a5b4"


def staff(name: str, study=None, **rights: bool) -> Client:
    """A signed-in staff member holding `rights` on `study`."""
    return login(staff_user(name, study, **rights))


def superuser() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "b@example.org", "pw-for-tests-1"))
    return client


# ------------------------------------------------------------------------ the admin's URL filters


@pytest.mark.parametrize(
    ("screen", "lookup"),
    [
        # The resume code signs in as the learner: its first letter was enough to start guessing.
        ("simulations/learner", "resume_code__startswith"),
        ("simulations/learner", "resume_code"),
        # Through a related field the screen does filter on (Django allows any of its fields).
        ("simulations/situation", "learner__resume_code__startswith"),
        # Recruitment ids, for exporters only, and the hidden learner behind a participant code.
        ("study/participant", "prolific_pid__startswith"),
        ("study/participant", "label"),
        ("study/participant", "learner"),
        ("study/participant", "study__staff__user__username"),
        ("feedback/draft", "conversation__learner__resume_code__startswith"),
        ("feedback/draft", "text__icontains"),
    ],
)
def test_a_researcher_cannot_filter_on_what_the_screen_does_not_offer(
    no_llm,  # noqa: F811
    screen: str,
    lookup: str,
) -> None:
    alpha = seed_study(slug="alpha", participants=1, messages=1, seed=7).study
    learner = Learner.objects.get(pk=Participant.objects.get(study=alpha).learner_id)
    viewer = staff("viewer", alpha, can_view_data=True)
    response = viewer.get(f"/admin/{screen}/", {lookup: learner.resume_code[:1]})
    assert response.status_code == 400, (screen, lookup)


def test_a_superuser_keeps_djangos_filters(no_llm) -> None:  # noqa: F811
    seed_study(slug="alpha", participants=1, messages=1, seed=7)
    boss = superuser()  # the values are theirs to read anyway
    assert (
        boss.get("/admin/simulations/learner/", {"resume_code__startswith": "A"}).status_code == 200
    )
    assert (
        boss.get("/admin/study/participant/", {"prolific_pid__startswith": "5"}).status_code == 200
    )


def test_the_resume_code_cannot_be_read_letter_by_letter(no_llm) -> None:  # noqa: F811
    alpha = seed_study(slug="alpha", participants=1, messages=1, seed=7).study
    learner = Learner.objects.get(pk=Participant.objects.get(study=alpha).learner_id)
    viewer = staff("viewer", alpha, can_view_data=True)
    response = viewer.get(
        "/admin/simulations/learner/",
        {"pk": learner.pk, "resume_code__startswith": learner.resume_code[:3]},
    )
    assert response.status_code == 400
    assert learner.resume_code.encode() not in response.content


def test_the_filters_a_screen_offers_still_work_for_a_researcher(no_llm) -> None:  # noqa: F811
    alpha = seed_study(slug="alpha", participants=2, messages=1, seed=7).study
    viewer = staff("viewer", alpha, can_view_data=True)
    participant = Participant.objects.filter(study=alpha).first()
    for screen, params in (
        ("study/participant", {"study__id__exact": str(alpha.pk), "status__exact": "active"}),
        ("study/participant", {"step__exact": participant.step}),
        ("simulations/conversation", {"study": str(alpha.pk), "kind__exact": "practice"}),
        ("feedback/draft", {"conversation__kind__exact": "practice", "used_rewrite__exact": "0"}),
        ("feedback/feedbackrequest", {"requested_at__year": "2026", "status__exact": "done"}),
        ("simulations/situation", {"learner__isempty": "0"}),
    ):
        assert viewer.get(f"/admin/{screen}/", params).status_code == 200, (screen, params)


# --------------------------------------------------------------------------- whose chats


def test_a_participants_free_practice_is_not_research_data(no_llm) -> None:  # noqa: F811
    study = make_study(slug="alpha")
    browser = Client()
    browser.get(f"/s/{study.slug}/?participant=p1")
    participant = Participant.objects.get(study=study)
    library = Situation.objects.create(situation="library words", goal="goal")
    browser.post(f"/practice/situations/{library.pk}/practise/")  # free practice, same browser
    free = Conversation.objects.get(learner_id=participant.learner_id, study_chat__isnull=True)
    draft = Draft.objects.create(conversation=free, turn=1, revision=1, text="private words")
    viewer = staff("viewer", study, can_view_data=True)

    listed = viewer.get("/admin/simulations/conversation/").context["cl"].queryset
    assert free.pk not in set(listed.values_list("pk", flat=True))
    page = viewer.get(f"/admin/simulations/conversation/{free.pk}/change/", follow=True)
    assert b"library words" not in page.content
    drafts = viewer.get("/admin/feedback/draft/").context["cl"].queryset
    assert draft.pk not in set(drafts.values_list("pk", flat=True))
    assert viewer.get(f"/admin/feedback/draft/{draft.pk}/change/", follow=True).status_code in (
        200,
        404,
    )
    assert b"private words" not in viewer.get(f"/admin/feedback/draft/{draft.pk}/change/").content
    # The superuser sees it, as before.
    assert superuser().get(f"/admin/simulations/conversation/{free.pk}/change/").status_code == 200


# --------------------------------------------------------------------------- recruitment links


def test_a_known_label_does_not_hand_over_its_participant(no_llm) -> None:  # noqa: F811
    study = make_study()
    owner = Client()
    owner.get(f"/s/{study.slug}/?participant=panel-7")
    participant = walk_to(Participant.objects.get(study=study, label="panel-7"), "pre_s1")

    stranger = Client()
    response = stranger.get(f"/s/{study.slug}/?participant=panel-7", follow=True)
    assert response.status_code == 403
    page = response.content.decode()
    assert "already started" in page and "participant code" in page
    assert "My flatmate has left the dishes" not in page
    assert stranger.session.get(SESSION_KEY) != participant.learner_id
    step = stranger.get(f"/s/{study.slug}/step/{participant.step}/", follow=True)
    assert "My flatmate has left the dishes" not in step.content.decode()

    # The owner's own browser still comes back with the same link; the code works elsewhere.
    again = owner.get(f"/s/{study.slug}/?participant=panel-7")
    assert again.status_code == 302 and participant.step in again["Location"]
    other_device = Client()
    resumed = other_device.post(f"/s/{study.slug}/resume/", {"code": participant.resume_key})
    assert resumed.status_code == 302 and participant.step in resumed["Location"]


def test_the_exported_pseudonym_does_not_continue_as_the_participant(no_llm) -> None:  # noqa: F811
    alpha = seed_study(slug="alpha", participants=1, messages=1, seed=7).study
    participant = Participant.objects.get(study=alpha)
    wide = b"".join(exports.file_chunks(alpha, codebook.WIDE, codebook.PSEUDONYMOUS)).decode()
    assert participant.code in wide and participant.resume_key not in wide
    as_json = b"".join(exports.file_chunks(alpha, codebook.JSON_FILE, codebook.PSEUDONYMOUS))
    assert participant.resume_key.encode() not in as_json
    assert Client().post(f"/s/{alpha.slug}/resume/", {"code": participant.code}).status_code == 400
    viewer = staff("viewer", alpha, can_view_data=True, can_export=True)
    page = viewer.get(f"/admin/study/participant/{participant.pk}/change/")
    assert page.status_code == 200 and participant.resume_key.encode() not in page.content


def test_a_prolific_id_without_its_session_does_not_hand_over_its_participant(
    no_llm,  # noqa: F811
) -> None:
    study = make_study()
    services.enroll(study=study, prolific_pid=PID)  # a link that came without SESSION_ID
    response = Client().get(f"/s/{study.slug}/?PROLIFIC_PID={PID}")
    assert response.status_code == 403


def test_a_link_sent_to_someone_does_not_swap_their_identity(no_llm) -> None:  # noqa: F811
    study = make_study()
    attacker = Client()
    attacker.get(f"/s/{study.slug}/?participant=atk")
    victim = Client()
    victim.get("/practice/")
    own = victim.session.get(SESSION_KEY)
    victim.get(f"/s/{study.slug}/?participant=atk")  # a plain cross-site GET
    assert victim.session.get(SESSION_KEY) == own
    library = Situation.objects.create(situation="library words", goal="goal")
    victim.post(f"/practice/situations/{library.pk}/practise/")
    chat = Conversation.objects.order_by("-pk").first()
    assert attacker.get(f"/practice/c/{chat.pk}/").status_code == 404
