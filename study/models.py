"""Randomised studies: their design, their participants, and every answer and step on record.

A participant is a `simulations.Learner` with a study record on top: their situations and chats are
the learner's, so the live chat, the feedback and the withdrawal all follow one owner.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from simulations.models import RESUME_ALPHABET, Conversation, Learner, Situation
from study.assignment import Method

SLUG_HELP = "Part of the participants' link: /s/<slug>/."


def new_participant_code() -> str:
    """An unguessable code (about 79 bits) that is easy to read aloud and type on a phone."""
    return "".join(secrets.choice(RESUME_ALPHABET) for _ in range(16))


class Slot(models.TextChoices):
    S1 = "S1", "Situation 1 (trained on)"
    S2 = "S2", "Situation 2 (harder, not trained on)"


class Time(models.TextChoices):
    PRE = "pre", "Before training"
    POST = "post", "After training"


class Study(models.Model):
    """A randomised study: its settings, its arms, and the allocation sequence fixed at opening."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft (not accepting participants)"
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed (no new participants)"

    class StratifyBy(models.TextChoices):
        NONE = "", "No stratification"
        SOURCE = "source", "Recruitment source"
        S1_DIFFICULTY = "s1_difficulty", "Difficulty of situation 1 (1-3, 4-6, 7-9)"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True, help_text=SLUG_HELP)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    target_size = models.PositiveIntegerField(
        default=100,
        validators=[MinValueValidator(1)],
        help_text="Participants planned; sizes the sequence stored at opening (it extends beyond).",
    )
    # Consent: every edit of the text makes a new ConsentVersion; participants record theirs.
    consent_text = models.TextField()
    consent_version = models.PositiveIntegerField(default=1, editable=False)
    debrief_text = models.TextField(blank=True, help_text="Shown with the completion code.")
    support_text = models.TextField(
        blank=True,
        help_text="Support resources shown if a chat is paused for safety (helplines, etc.).",
    )
    # Allocation design (frozen once the study opens).
    allocation_method = models.CharField(
        max_length=20,
        choices=[(m.value, m.value.replace("_", " ").capitalize()) for m in Method],
        default=Method.BLOCKS.value,
    )
    block_size = models.PositiveSmallIntegerField(
        null=True, blank=True, default=4, help_text="Permuted blocks only; a multiple of the arms."
    )
    stratify_by = models.CharField(
        max_length=20, choices=StratifyBy.choices, default=StratifyBy.NONE, blank=True
    )
    # Recorded when the study opens, before the first participant can enrol.
    seed = models.CharField(max_length=64, blank=True, editable=False)
    design = models.JSONField(default=dict, blank=True, editable=False)
    sequence = models.JSONField(default=dict, blank=True, editable=False)
    sequence_hash = models.CharField(max_length=64, blank=True, editable=False)
    opened_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Where participants go at the end; "{code}" in a URL is replaced by the code.
    completion_code = models.CharField(max_length=40)
    completion_url = models.URLField(max_length=500, blank=True)
    screenout_code = models.CharField(max_length=40)
    screenout_url = models.URLField(max_length=500, blank=True)
    withdrawal_code = models.CharField(max_length=40)
    withdrawal_url = models.URLField(max_length=500, blank=True)
    # The situations and chats.
    min_difficulty_gap = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(8)],
        help_text="Situation 2 must be at least this much harder than situation 1 (0 = as hard).",
    )
    max_messages = models.PositiveSmallIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(50)]
    )
    training_strategy_mode = models.CharField(
        max_length=8,
        choices=Conversation.StrategyMode.choices,
        default=Conversation.StrategyMode.SINGLE,
        help_text="The published trial: one skill per message while training.",
    )
    evaluation_strategy_mode = models.CharField(
        max_length=8,
        choices=Conversation.StrategyMode.choices,
        default=Conversation.StrategyMode.MULTIPLE,
    )
    # Evaluation chats measure; they are the same for every arm and never show feedback.
    evaluation_worksheet_shown = models.BooleanField(default=True)
    evaluation_adaptive_partner = models.BooleanField(default=True)
    # Abuse and cost limits for this study's participants; blank keeps the product's default
    # (settings.IMBUE), 0 switches a rate limit off.
    messages_per_minute = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Messages a participant may send per minute (blank: the product's default; "
        "0: no limit).",
    )
    feedback_per_minute = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Feedback requests a participant may make per minute (blank: the product's "
        "default; 0: no limit).",
    )
    max_message_chars = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(50), MaxValueValidator(20000)],
        help_text="Longest message a participant may send, in characters (blank: the "
        "product's default, 2,000).",
    )
    conversation_token_budget = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1000)],
        help_text="Language-model tokens one chat may use before the offline partner and rater "
        "take over (blank: the product's default).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN

    def exit_link(self, which: str) -> dict[str, str]:
        """The code and redirect URL of an exit ("completion", "screenout" or "withdrawal")."""
        code = getattr(self, f"{which}_code")
        url = getattr(self, f"{which}_url")
        return {"code": code, "url": url.replace("{code}", quote(code, safe=""))}

    @property
    def design_frozen(self) -> bool:
        """The allocation design and arms can no longer change (the sequence is on record)."""
        return bool(self.sequence_hash)


class ConsentVersion(models.Model):
    """The exact consent text a version number stands for."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="consent_versions")
    version = models.PositiveIntegerField()
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "version"]
        constraints = [
            models.UniqueConstraint(fields=["study", "version"], name="consent_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.study} consent v{self.version}"


class Arm(models.Model):
    """One condition: the switches the chat obeys during training."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="arms")
    key = models.SlugField(max_length=40, help_text="Stable name used in the data and sequence.")
    name = models.CharField(max_length=100)
    feedback_shown = models.BooleanField(default=False)
    suggestion_shown = models.BooleanField(default=False)
    worksheet_shown = models.BooleanField(default=True)
    adaptive_partner = models.BooleanField(default=True)
    weight = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1)], help_text="Allocation ratio (1:1, 1:2...)."
    )
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["study", "order", "key"]
        constraints = [models.UniqueConstraint(fields=["study", "key"], name="arm_key_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.key})"


class Participant(models.Model):
    """Someone in a study; `learner` owns their situations and conversations."""

    class Source(models.TextChoices):
        PROLIFIC = "prolific", "Prolific"
        LABEL = "label", "Link with a participant label"
        DIRECT = "direct", "Link without recruitment id"

    class Status(models.TextChoices):
        ACTIVE = "active", "In progress"
        COMPLETED = "completed", "Completed"
        SCREENED_OUT = "screened_out", "Screened out (did not consent)"
        # Never stored for long: withdrawal deletes the row and keeps a WithdrawalReceipt.
        WITHDRAWN = "withdrawn", "Withdrawn"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="participants")
    learner = models.OneToOneField(Learner, on_delete=models.CASCADE, related_name="participant")
    # The pseudonym that joins the research records (exports, the dashboard, the admin): staff
    # see it, so it must not open the participant's chats.
    code = models.CharField(max_length=20, unique=True, default=new_participant_code)
    # The participant's own key to continue on another device: shown to them alone, never in an
    # export or to staff other than superusers.
    resume_key = models.CharField(max_length=20, unique=True, default=new_participant_code)
    # Set by study/0007 for those whose key study/0006 replaced after they had written the old
    # one down: the next study page they open shows the new key, once (study.views._page).
    new_key_unseen = models.BooleanField(
        default=False, help_text="Their resume key was replaced and they have not seen it yet."
    )
    prolific_pid = models.CharField(max_length=64, blank=True)
    prolific_study_id = models.CharField(max_length=64, blank=True)
    prolific_session_id = models.CharField(max_length=64, blank=True)
    label = models.CharField(max_length=64, blank=True, help_text="Generic ?participant= label.")
    source = models.CharField(max_length=10, choices=Source.choices)
    stratum = models.CharField(max_length=40, blank=True, help_text="Set at allocation.")
    step = models.CharField(max_length=30)
    arm = models.ForeignKey(Arm, null=True, blank=True, on_delete=models.PROTECT)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    consent_version = models.PositiveIntegerField(null=True, blank=True)
    consented_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["study", "started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "prolific_pid"],
                condition=~Q(prolific_pid=""),
                name="participant_prolific_once",
            ),
            models.UniqueConstraint(
                fields=["study", "label"], condition=~Q(label=""), name="participant_label_once"
            ),
        ]
        indexes = [models.Index(fields=["study", "status", "step"])]

    def __str__(self) -> str:
        return f"participant {self.code}"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class AllocationCounter(models.Model):
    """The next free slot of one stratum's sequence; locked (select_for_update) to take it."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="counters")
    stratum = models.CharField(max_length=40, blank=True)
    next_position = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "stratum"], name="counter_stratum_unique")
        ]

    def __str__(self) -> str:
        return f"{self.study} stratum {self.stratum or '-'}: next {self.next_position}"


class Allocation(models.Model):
    """A slot of the sequence given to one participant, stored once and never re-drawn.

    If the participant withdraws, the row stays (without them) so the sequence has no gaps.
    """

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="allocations")
    participant = models.OneToOneField(
        Participant, null=True, blank=True, on_delete=models.SET_NULL, related_name="allocation"
    )
    stratum = models.CharField(max_length=40, blank=True)
    position = models.PositiveIntegerField(help_text="0-based slot in the stratum's sequence.")
    arm = models.ForeignKey(Arm, on_delete=models.PROTECT, related_name="allocations")
    method = models.CharField(max_length=20)
    sequence_hash = models.CharField(max_length=64)
    assigned_at = models.DateTimeField(auto_now_add=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["study", "stratum", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "stratum", "position"], name="allocation_slot_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.study} slot {self.stratum or '-'}#{self.position} -> {self.arm.key}"


class SurveyItem(models.Model):
    """A statement rated on a labelled scale. A new wording is a new version (a new row)."""

    key = models.SlugField(max_length=50)
    version = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    construct = models.CharField(max_length=40)
    label = models.CharField(max_length=100)
    wording = models.TextField()
    scale_low = models.SmallIntegerField(default=1)
    scale_high = models.SmallIntegerField(default=7)
    scale_labels = models.JSONField(help_text="One label per scale point, lowest first.")
    reverse_scored = models.BooleanField(default=False, help_text="Lower is the better outcome.")
    order = models.PositiveSmallIntegerField(default=0)
    is_active = models.BooleanField(default=True, help_text="Asked to new answers.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["order", "key", "version"]
        constraints = [
            models.UniqueConstraint(fields=["key", "version"], name="survey_item_version_unique"),
            models.UniqueConstraint(
                fields=["key"], condition=Q(is_active=True), name="survey_item_one_active"
            ),
            models.CheckConstraint(
                condition=Q(scale_low__lt=models.F("scale_high")), name="survey_scale_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} v{self.version}"

    def choices(self) -> list[tuple[int, str]]:
        """(value, label) pairs, lowest first."""
        return list(zip(range(self.scale_low, self.scale_high + 1), self.scale_labels, strict=True))


class SurveyAnswer(models.Model):
    """One answer: which situation, before or after, which item wording, and when."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="answers")
    slot = models.CharField(max_length=2, choices=Slot.choices)
    time = models.CharField(max_length=4, choices=Time.choices)
    item = models.ForeignKey(SurveyItem, on_delete=models.PROTECT, related_name="answers")
    item_key = models.SlugField(max_length=50)
    item_version = models.PositiveSmallIntegerField()
    value = models.SmallIntegerField()
    answered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["participant", "slot", "time", "item__order"]
        constraints = [
            models.UniqueConstraint(
                fields=["participant", "slot", "time", "item_key"], name="answer_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.participant} {self.slot} {self.time} {self.item_key}={self.value}"


class ParticipantSituation(models.Model):
    """Which of the learner's situations is S1 (trained on) and which S2."""

    participant = models.ForeignKey(
        Participant, on_delete=models.CASCADE, related_name="situations"
    )
    slot = models.CharField(max_length=2, choices=Slot.choices)
    situation = models.OneToOneField(Situation, on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["participant", "slot"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "slot"], name="situation_slot_once")
        ]

    def __str__(self) -> str:
        return f"{self.participant} {self.slot}"


class StudyChat(models.Model):
    """The conversation a chat step of the flow opened (one per step, never a second)."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="chats")
    step = models.CharField(max_length=30)
    conversation = models.OneToOneField(
        Conversation, on_delete=models.CASCADE, related_name="study_chat"
    )
    kind = models.CharField(max_length=12, choices=Conversation.Kind.choices)
    slot = models.CharField(max_length=2, choices=Slot.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["participant", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "step"], name="study_chat_step_once")
        ]

    def __str__(self) -> str:
        return f"{self.participant} {self.step}"


class StepVisit(models.Model):
    """When a participant reached and finished a step (time per step, drop-off funnel)."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="visits")
    step = models.CharField(max_length=30)
    entered_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["participant", "entered_at"]
        constraints = [
            models.UniqueConstraint(fields=["participant", "step"], name="step_visit_once")
        ]

    def __str__(self) -> str:
        return f"{self.participant} {self.step}"


class WithdrawalReceipt(models.Model):
    """All that remains of a withdrawn participant: their code, when, and where (no content)."""

    code = models.CharField(max_length=20, unique=True)
    study_slug = models.SlugField(max_length=60)
    step = models.CharField(max_length=30, blank=True, help_text="The step they withdrew at.")
    arm_key = models.CharField(max_length=40, blank=True, help_text="Blank if not yet allocated.")
    withdrawn_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-withdrawn_at"]

    def __str__(self) -> str:
        return f"withdrawal {self.code} ({self.study_slug})"


class StudyStaff(models.Model):
    """A staff member's rights on one study; superusers have every right on every study.

    Granted by superusers (on the study's admin page); every change is in the audit log.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="staff_grants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="study_grants"
    )
    can_view_data = models.BooleanField(
        default=True, help_text="Dashboard, analysis, participant pages and transcripts."
    )
    can_export = models.BooleanField(
        default=False, help_text="Download exports (recruitment ids only when asked for)."
    )
    can_edit_settings = models.BooleanField(
        default=False, help_text="Change the study, its arms and texts; open and close it."
    )
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "staff access"
        verbose_name_plural = "staff access"
        constraints = [models.UniqueConstraint(fields=["study", "user"], name="study_staff_once")]

    def __str__(self) -> str:
        return f"{self.user} on {self.study}"
