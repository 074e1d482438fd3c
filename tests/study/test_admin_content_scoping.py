"""The admin screens of learners' content (conversations and their messages, learners, their own
situations, drafts, feedback, model calls, adverse events) follow the per-study grants, through
the real /admin/: a superuser sees everything; other staff see, read-only, only the rows of
participants of the studies they hold the view right on, and never a free-practice learner's;
Django model permissions grant nothing more. The audit log is for superusers only.

Two kinds of staff are used: one holding every Django model permission on these screens (without
the scoping they would see every study's and every free learner's rows, and edit them), and one
holding none (without the scoping they would see nothing of the study they were granted)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.db.models import Q, QuerySet
from django.test import Client

from feedback.models import Draft, FeedbackRequest
from imbue.models import AdverseEvent, AuditEntry, LLMCall
from simulations.models import Conversation, Learner, Message, Situation
from study.models import Participant, Study, StudyStaff
from tests.study.factories import Seeded, seed_study

pytestmark = pytest.mark.django_db

FREE_WORDS = "free-practice private words"
ALPHA_WORDS = "alpha participant words"
BETA_WORDS = "beta participant words"


class World:
    """Studies alpha and beta (participants with chats, drafts, feedback, calls), a free-practice
    learner with the same kinds of rows, a library situation, and adverse events of each."""

    def __init__(self) -> None:
        self.alpha: Seeded = seed_study(slug="alpha", participants=2, messages=2, seed=7)
        self.beta: Seeded = seed_study(slug="beta", participants=2, messages=2, seed=8)
        self.free = Learner.objects.create()
        situation = Situation.objects.create(
            learner=self.free, situation=FREE_WORDS, goal="be heard"
        )
        chat = Conversation.objects.create(learner=self.free, situation=situation)
        Message.objects.create(conversation=chat, seq=1, role="learner", text=FREE_WORDS)
        draft = Draft.objects.create(conversation=chat, turn=1, text=FREE_WORDS)
        FeedbackRequest.objects.create(draft=draft)
        call = {"purpose": "partner", "prompt_name": "p", "prompt_version": "1", "outcome": "ok"}
        LLMCall.objects.create(conversation_id=chat.pk, **call)
        LLMCall.objects.create(draft_id=draft.pk, **call)
        self.orphan_call = LLMCall.objects.create(**call)  # tied to no chat at all
        self.library = Situation.objects.create(situation="library words", goal="team goal")
        for seeded, words in ((self.alpha, ALPHA_WORDS), (self.beta, BETA_WORDS)):
            first = self.learners(seeded.study).first()
            chat = Conversation.objects.filter(learner_id=first).order_by("pk").first()
            Message.objects.filter(conversation=chat, seq=1).update(text=words)
            AdverseEvent.objects.create(learner_id=first, level="concern", category="abuse")
            AdverseEvent.objects.create(conversation_id=chat.pk, level="urgent", category="abuse")
        AdverseEvent.objects.create(learner_id=self.free.pk, level="urgent", category="abuse")
        AdverseEvent.objects.create(conversation_id=chat.pk + 10_000, level="concern",
                                    category="abuse")  # fmt: skip

    @staticmethod
    def learners(study: Study) -> QuerySet:
        return Participant.objects.filter(study=study).values_list("learner_id", flat=True)

    def rows(self, owner: Study | Learner) -> dict[str, set[int]]:
        """The pks of each screen's rows that belong to a study's participants or to a learner."""
        learners = set(self.learners(owner)) if isinstance(owner, Study) else {owner.pk}
        chats = set(Conversation.objects.filter(learner__in=learners).values_list("pk", flat=True))
        drafts = set(Draft.objects.filter(conversation__in=chats).values_list("pk", flat=True))
        return {
            "simulations/conversation": chats,
            "simulations/learner": learners,
            "simulations/situation": pks(Situation.objects.filter(learner__in=learners)),
            "feedback/draft": drafts,
            "feedback/feedbackrequest": pks(FeedbackRequest.objects.filter(draft__in=drafts)),
            "imbue/llmcall": pks(
                LLMCall.objects.filter(Q(conversation_id__in=chats) | Q(draft_id__in=drafts))
            ),
            "imbue/adverseevent": pks(
                AdverseEvent.objects.filter(
                    Q(learner_id__in=learners) | Q(conversation_id__in=chats)
                )
            ),
        }


SCREENS = (
    "simulations/conversation",
    "simulations/learner",
    "simulations/situation",
    "feedback/draft",
    "feedback/feedbackrequest",
    "imbue/llmcall",
    "imbue/adverseevent",
)


def pks(queryset: QuerySet) -> set[int]:
    return set(queryset.values_list("pk", flat=True))


@pytest.fixture
def world(no_llm: None) -> World:
    world = World()
    for owner in (world.alpha.study, world.beta.study, world.free):
        for screen, rows in world.rows(owner).items():
            assert rows, (owner, screen)  # every screen has rows of every owner
    return world


def staff(name: str, study: Study | None = None, *, view: bool = True, perms: bool = False) -> User:
    user = User.objects.create_user(name, is_staff=True)
    if study is not None:
        StudyStaff.objects.create(study=study, user=user, can_view_data=view)
    if perms:
        user.user_permissions.set(
            Permission.objects.filter(
                content_type__app_label__in=["simulations", "feedback", "imbue"]
            )
        )
    return user


def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def listed(client: Client, screen: str, **params: str) -> set[int]:
    """Every row the changelist selects (all its pages)."""
    response = client.get(f"/admin/{screen}/", params)
    assert response.status_code == 200, (screen, response.status_code)
    return set(response.context["cl"].queryset.values_list("pk", flat=True))


def change_url(screen: str, pk: int) -> str:
    return f"/admin/{screen}/{pk}/change/"


def unreachable(client: Client, url: str) -> bool:
    """The admin answers as for a row that does not exist (or refuses outright)."""
    response = client.get(url)
    return response.status_code in (302, 403, 404) and (
        response.status_code != 302 or response["Location"] == "/admin/"
    )


def one(rows: set[int]) -> int:
    return min(rows)


@pytest.mark.parametrize("perms", [True, False], ids=["with-model-perms", "grant-only"])
def test_a_view_grant_lists_and_opens_only_that_studys_participants_rows(
    world: World, perms: bool
) -> None:
    client = browser(staff("viewer", world.alpha.study, perms=perms))
    alpha = world.rows(world.alpha.study)
    beta = world.rows(world.beta.study)
    free = world.rows(world.free)
    for screen in SCREENS:
        expected = alpha[screen]
        if screen == "simulations/situation" and perms:
            expected = expected | {world.library.pk}  # the team's library: model permissions
        assert listed(client, screen) == expected, screen
        assert client.get(change_url(screen, one(alpha[screen]))).status_code == 200, screen
        for other in (beta, free):
            assert unreachable(client, change_url(screen, one(other[screen]))), screen
            history = change_url(screen, one(other[screen])).replace("change/", "history/")
            assert unreachable(client, history), screen
    chat = Message.objects.get(text=ALPHA_WORDS).conversation_id
    page = client.get(change_url("simulations/conversation", chat)).content.decode()
    assert ALPHA_WORDS in page  # the messages inline
    assert BETA_WORDS not in client.get("/admin/simulations/conversation/").content.decode()


def test_model_permissions_without_a_view_grant_show_no_learner_content(world: World) -> None:
    no_grant = browser(staff("perms-only", perms=True))
    no_view = browser(staff("export-only", world.alpha.study, view=False, perms=True))
    every = [world.rows(owner) for owner in (world.alpha.study, world.beta.study, world.free)]
    for client in (no_grant, no_view):
        for screen in SCREENS:
            response = client.get(f"/admin/{screen}/")
            if response.status_code == 200:
                shown = set(response.context["cl"].queryset.values_list("pk", flat=True))
                assert shown <= {world.library.pk}, screen
            else:
                assert response.status_code == 403, screen
            for rows in every:
                assert unreachable(client, change_url(screen, one(rows[screen]))), screen
        index = client.get("/admin/").content.decode()
        assert "/admin/simulations/conversation/" not in index
        assert "/admin/imbue/llmcall/" not in index


def test_researchers_read_but_never_change_or_delete_participants_content(world: World) -> None:
    client = browser(staff("viewer", world.alpha.study, perms=True))
    message = Message.objects.get(text=ALPHA_WORDS)
    chat_url = change_url("simulations/conversation", message.conversation_id)
    status = message.conversation.status
    page = client.get(chat_url).content.decode()
    assert 'name="_save"' not in page and "Close" in page  # Django's read-only change page
    assert client.post(chat_url, {"status": "ended"}).status_code == 403
    for screen in SCREENS:
        pk = one(world.rows(world.alpha.study)[screen])
        delete = client.post(change_url(screen, pk).replace("change/", "delete/"), {"post": "yes"})
        assert delete.status_code == 403, screen
        if screen != "simulations/situation":  # adding one adds to the library (no learner)
            assert client.get(f"/admin/{screen}/add/").status_code == 403, screen
    message.refresh_from_db()
    assert message.text == ALPHA_WORDS
    assert Conversation.objects.get(pk=message.conversation_id).status == status
    learner = one(world.rows(world.alpha.study)["simulations/learner"])
    learner_page = client.get(change_url("simulations/learner", learner)).content.decode()
    resume = Learner.objects.get(pk=learner).resume_code
    assert resume not in learner_page  # it would sign in as the participant


def test_library_situations_stay_under_model_permissions(world: World) -> None:
    editor = browser(staff("editor", world.alpha.study, perms=True))
    url = change_url("simulations/situation", world.library.pk)
    assert 'name="_save"' in editor.get(url).content.decode()
    own = one(world.rows(world.alpha.study)["simulations/situation"])
    assert (
        'name="_save"' not in editor.get(change_url("simulations/situation", own)).content.decode()
    )
    grant_only = browser(staff("viewer", world.alpha.study))
    assert unreachable(grant_only, url)


def test_study_filters_offer_only_the_granted_studies(world: World) -> None:
    client = browser(staff("viewer", world.alpha.study))
    for screen in ("simulations/conversation", "feedback/draft", "simulations/learner"):
        html = client.get(f"/admin/{screen}/").content.decode()
        assert "Study alpha" in html and "Study beta" not in html, screen
        assert "No study" not in html
        alpha = world.rows(world.alpha.study)[screen]
        assert listed(client, screen, study=str(world.alpha.study.pk)) == alpha
        assert listed(client, screen, study=str(world.beta.study.pk)) == set()
        assert listed(client, screen, study="free") == set()  # never a free learner's rows
    boss = browser(User.objects.create_superuser("boss", "b@example.org", "pw-for-tests-1"))
    html = boss.get("/admin/simulations/conversation/").content.decode()
    assert "Study alpha" in html and "Study beta" in html and "No study" in html
    free = world.rows(world.free)["simulations/conversation"]
    assert listed(boss, "simulations/conversation", study="free") == free


def test_a_superuser_sees_every_row_and_the_audit_log(world: World) -> None:
    boss = browser(User.objects.create_superuser("boss", "b@example.org", "pw-for-tests-1"))
    owners = (world.alpha.study, world.beta.study, world.free)
    for screen in SCREENS:
        shown = listed(boss, screen)
        for owner in owners:
            assert world.rows(owner)[screen] <= shown, screen
    # (Other tests' worker threads may have left call rows of their own: name this one.)
    assert world.orphan_call.pk in listed(boss, "imbue/llmcall")
    assert boss.get("/admin/imbue/auditentry/").status_code == 200


def test_the_audit_log_is_for_superusers_only(world: World) -> None:
    entry = AuditEntry.objects.create(action="study.export", object_type="study.study")
    client = browser(staff("viewer", world.alpha.study, perms=True))
    assert client.get("/admin/imbue/auditentry/").status_code == 403
    assert client.get(change_url("imbue/auditentry", entry.pk)).status_code in (302, 403)
    assert "/admin/imbue/auditentry/" not in client.get("/admin/").content.decode()


def test_review_action_marks_only_the_events_the_researcher_sees(world: World) -> None:
    client = browser(staff("viewer", world.alpha.study))
    ours = world.rows(world.alpha.study)["imbue/adverseevent"]
    theirs = (
        world.rows(world.beta.study)["imbue/adverseevent"]
        | world.rows(world.free)["imbue/adverseevent"]
    )
    client.post(
        "/admin/imbue/adverseevent/",
        {"action": "mark_reviewed", "_selected_action": [str(pk) for pk in ours | theirs]},
    )
    reviewed = pks(AdverseEvent.objects.exclude(reviewed_at=None))
    assert reviewed == ours
