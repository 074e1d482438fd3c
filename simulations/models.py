"""Learners, their situations, and the conversations they practise."""

from __future__ import annotations

import secrets
import uuid

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from imbue.prepared import PreparedQuery

STRATEGY_CHOICES = [
    ("describe", "Describe"),
    ("express", "Express"),
    ("assert", "Assert"),
    ("reinforce", "Reinforce"),
    ("negotiate", "Negotiate"),
]

# No 0/O/1/I/L: resume codes are read aloud and typed on phones.
RESUME_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


def new_resume_code() -> str:
    return "".join(secrets.choice(RESUME_ALPHABET) for _ in range(10))


class Learner(models.Model):
    """Whoever practises. The browser holds the identity (session); a resume code moves it."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    resume_code = models.CharField(max_length=16, unique=True, default=new_resume_code)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"learner {self.public_id.hex[:8]}"


class Category(models.TextChoices):
    FAMILY = "family", "Family"
    SOCIAL = "social", "Social"
    WORK = "work", "Work"
    OTHER = "other", "Other"


class SituationQuerySet(models.QuerySet):
    def library(self) -> SituationQuerySet:
        return self.filter(learner__isnull=True, is_active=True)

    def owned_by(self, learner: Learner) -> SituationQuerySet:
        return self.filter(learner=learner)


class Situation(models.Model):
    """A hard conversation: the learner's own (learner set) or one of the team's library."""

    learner = models.ForeignKey(
        Learner, null=True, blank=True, on_delete=models.CASCADE, related_name="situations"
    )
    slug = models.SlugField(max_length=80, blank=True, help_text="Library situations only.")
    title = models.CharField(max_length=120, blank=True)
    category = models.CharField(max_length=10, choices=Category.choices, default=Category.OTHER)
    situation = models.TextField(help_text="1-2 sentences: the relationship and what happened.")
    goal = models.TextField(help_text="What the learner wants from the conversation.")
    difficulty = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(9)], default=5
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SituationQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["slug"], condition=Q(learner__isnull=True), name="library_slug_unique"
            ),
            models.CheckConstraint(
                condition=Q(difficulty__gte=1) & Q(difficulty__lte=9), name="difficulty_1_to_9"
            ),
        ]

    def __str__(self) -> str:
        return self.title or self.situation[:60]

    @property
    def is_library(self) -> bool:
        return self.learner_id is None


class ConversationQuerySet(models.QuerySet):
    def owned_by(self, learner: Learner) -> ConversationQuerySet:
        return self.filter(learner=learner)

    def open(self) -> ConversationQuerySet:
        return self.filter(status=Conversation.Status.ACTIVE)


class Conversation(models.Model):
    """One practice conversation; its switches are set once at start (a study sets them per arm)."""

    class Kind(models.TextChoices):
        PRACTICE = "practice", "Free practice"
        EVALUATION = "evaluation", "Evaluation chat"
        TRAINING = "training", "Training chat"

    class Status(models.TextChoices):
        ACTIVE = "active", "In progress"
        AGREED = "agreed", "The other person agreed"
        LIMIT = "limit", "Message limit reached"
        ENDED = "ended", "Ended by the learner"
        PAUSED = "paused", "Paused for safety"

    class StrategyMode(models.TextChoices):
        MULTIPLE = "multiple", "One or more strategies per message"
        SINGLE = "single", "Exactly one strategy per message"

    class Engine(models.TextChoices):
        LLM = "llm", "Language model"
        OFFLINE = "offline", "Offline partner"

    learner = models.ForeignKey(Learner, on_delete=models.CASCADE, related_name="conversations")
    situation = models.ForeignKey(Situation, on_delete=models.PROTECT, related_name="conversations")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.PRACTICE)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    # Switches (a study's arm sets them; free practice uses the defaults).
    max_messages = models.PositiveSmallIntegerField(default=10)
    strategy_mode = models.CharField(
        max_length=8, choices=StrategyMode.choices, default=StrategyMode.MULTIPLE
    )
    feedback_enabled = models.BooleanField(default=True)
    suggestion_enabled = models.BooleanField(default=True)
    worksheet_enabled = models.BooleanField(default=True)
    adaptive_enabled = models.BooleanField(default=True)
    max_message_chars = models.PositiveIntegerField(default=2000)
    token_budget = models.PositiveIntegerField(default=60000)
    # A study's own rate limits, copied when the chat opens (None: the product's default; 0: off),
    # so sending and asking for feedback need no look-up of the learner's study.
    messages_per_minute = models.PositiveSmallIntegerField(null=True, blank=True)
    feedback_per_minute = models.PositiveSmallIntegerField(null=True, blank=True)
    end_enabled = models.BooleanField(
        default=True, help_text="The learner may end it early (a study turns this off)."
    )
    # Set when another page embeds the chat (a study step): the summary leads there, and the
    # page without JavaScript comes back there; the support text replaces the product's own.
    return_url = models.CharField(
        max_length=300, blank=True, help_text="A same-site path, e.g. /s/trial/step/eval_s1_pre/."
    )
    return_label = models.CharField(max_length=80, blank=True)
    support_text = models.TextField(blank=True)
    # The partner.
    partner_engine = models.CharField(max_length=8, choices=Engine.choices, default=Engine.OFFLINE)
    partner_brief = models.JSONField(default=dict, blank=True)
    resistance_start = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["learner", "-created_at"])]

    def __str__(self) -> str:
        return f"conversation {self.pk} ({self.get_kind_display()})"

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.ACTIVE


def _locked_for_a_turn(pk: int, learner_id: int) -> ConversationQuerySet:
    from imbue.ratelimit import tokens_used_annotation  # it imports the models

    return (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("situation")
        .annotate(tokens_spent=tokens_used_annotation())
        .filter(pk=pk, learner_id=learner_id)
    )


# The conversation, row-locked, with its situation and the model tokens it has spent: read first
# by every message and every feedback request (the lock serialises their numbering), so it is
# compiled once (imbue/prepared.py). `.get(pk=..., learner_id=...)`, inside a transaction.
LOCKED_FOR_A_TURN = PreparedQuery(_locked_for_a_turn, pk=int, learner_id=int)

# The pages of a learner's arrival (library, "Practise", the conversation page) read these on
# every request, so they too are compiled once. `.first(pk=..., learner_id=...)`: the row only if
# this learner may have it (None otherwise, as for a row that does not exist).
OWNED_WITH_SITUATION = PreparedQuery(
    lambda pk, learner_id: Conversation.objects.select_related("situation").filter(
        pk=pk, learner_id=learner_id
    ),
    pk=int,
    learner_id=int,
)


class Message(models.Model):
    """One turn of the transcript. A learner message is stored before any model is called."""

    class Role(models.TextChoices):
        LEARNER = "learner", "Learner"
        PARTNER = "partner", "Partner"

    class State(models.TextChoices):
        PENDING = "pending", "Waiting for the partner"
        STREAMING = "streaming", "Being written"
        COMPLETE = "complete", "Complete"
        FAILED = "failed", "Failed; can be retried"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    seq = models.PositiveIntegerField(help_text="Position in the transcript, from 1.")
    role = models.CharField(max_length=8, choices=Role.choices)
    text = models.TextField(blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.COMPLETE)
    strategies = ArrayField(
        models.CharField(max_length=10, choices=STRATEGY_CHOICES), default=list, blank=True
    )
    # The partner's resistance after this learner message (adaptive partner), for the record.
    resistance = models.FloatField(null=True, blank=True)
    resistance_reasons = models.JSONField(default=list, blank=True)
    agreed = models.BooleanField(default=False)
    # Skill ratings of a sent learner message ({skill: level}, all seven) and its 0-2 mastery.
    ratings = models.JSONField(default=dict, blank=True)
    rating_engine = models.CharField(max_length=8, blank=True)
    mastery = models.FloatField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    llm_call_id = models.BigIntegerField(null=True, blank=True)
    # The page's key for one press of Send (a learner message; "" from clients that send none):
    # a frame sent again (a reconnecting socket, a double submit) stores nothing a second time.
    send_key = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_seq_unique"),
            models.UniqueConstraint(
                fields=["conversation", "send_key"],
                condition=~Q(send_key=""),
                name="message_send_key_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.seq} of conversation {self.conversation_id}"


class EmotionCheckin(models.Model):
    """How intense the learner's feelings about the situation are, tied to a point in the chat."""

    class Phase(models.TextChoices):
        BEFORE = "before", "Before the conversation"
        MIDWAY = "midway", "During the conversation"
        AFTER = "after", "After the conversation"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="checkins"
    )
    phase = models.CharField(max_length=8, choices=Phase.choices)
    after_seq = models.PositiveIntegerField(
        default=0, help_text="The last message seq when it was given (0 = before any)."
    )
    intensity = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(0), MaxValueValidator(10)]
    )
    emotion = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(intensity__gte=0) & Q(intensity__lte=10), name="intensity_0_to_10"
            )
        ]

    def __str__(self) -> str:
        return f"{self.phase} check-in {self.intensity}/10 (conversation {self.conversation_id})"


class SkillSuggestion(models.Model):
    """A "suggest a skill" answer as the learner saw it, tied to the point of the chat it was asked
    at (research exports show it next to the messages; it goes with the conversation)."""

    class Engine(models.TextChoices):
        RULE = "rule", "Fixed rule (the first message)"
        LLM = "llm", "Language model"
        OFFLINE = "offline", "Written rules"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="suggestions"
    )
    after_seq = models.PositiveIntegerField(
        default=0, help_text="The last complete message seq when it was asked (0 = before any)."
    )
    turn = models.PositiveIntegerField(
        default=1, help_text="The learner message it was asked for, from 1."
    )
    skill = models.CharField(max_length=10, choices=STRATEGY_CHOICES)
    reason = models.TextField(help_text="The sentence shown with it.")
    engine = models.CharField(max_length=8, choices=Engine.choices)
    model = models.CharField(max_length=200, blank=True, help_text="The model, when one answered.")
    # The model call made for it (imbue.LLMCall; also when it failed and the rules answered).
    llm_call_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "created_at", "pk"]

    def __str__(self) -> str:
        return f"suggested {self.skill} at turn {self.turn} of conversation {self.conversation_id}"


# A situation this learner may practise: the library's active ones and their own active ones.
PRACTISABLE = PreparedQuery(
    lambda pk, learner_id: Situation.objects.filter(
        Q(learner__isnull=True) | Q(learner_id=learner_id), pk=pk, is_active=True
    ),
    pk=int,
    learner_id=int,
)
# The library page's rows, as plain values (the page is rendered from them: see
# simulations/pages.py), in the page's order.
LIBRARY_ROWS = PreparedQuery(
    lambda: (
        Situation.objects.library()
        .order_by("category", "difficulty", "title")
        .values_list("pk", "category", "difficulty", "title", "situation", "goal")
    )
)
