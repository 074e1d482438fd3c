"""The codebook: every column of every export file, with its type, allowed values and meaning.

The CSV columns are built here, per study (the wide file has a column per survey item and per chat
step; arm keys are the study's own), and the field paths of study.json are written out below as an
indented tree, so the codebook and the files are made from the same definitions and tests compare
them. ``exports`` writes the rows in exactly this column order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db.models import Q

from feedback.models import FeedbackRequest
from feedback.skills import LEVELS, SKILL_KEYS, STRATEGIES
from imbue.models import LLMCall
from simulations.models import Conversation, Message, SkillSuggestion
from study import flow
from study.models import Participant, Slot, Study, SurveyAnswer, SurveyItem, Time

LONG = "long.csv"
WIDE = "wide.csv"
MESSAGES = "messages.csv"
CODEBOOK = "codebook.csv"
JSON_FILE = "study.json"
BONUS = "bonus.csv"
CSV_FILES = (LONG, WIDE, MESSAGES, CODEBOOK)
# The bundles (a zip each); bonus.csv is in neither: it is the payment list, a download of its own.
FORMATS: dict[str, tuple[str, ...]] = {"csv": CSV_FILES, "json": (JSON_FILE, CODEBOOK)}
# Every file a download offers, one by one: what a codebook.csv downloaded on its own describes.
OFFERED = (LONG, WIDE, MESSAGES, BONUS, CODEBOOK, JSON_FILE)
FORMAT_VERSION = 1

RECRUITMENT_FIELDS = ("prolific_pid", "prolific_study_id", "prolific_session_id", "label")

# How each type is written, for the codebook (and what pandas/R read it as).
TYPES: dict[str, str] = {
    "integer": "whole number; empty when missing (pandas Int64, R integer)",
    "number": "decimal number; empty when missing (pandas float64, R numeric)",
    "string": "text; empty when missing",
    "boolean": "true or false; empty when missing (pandas boolean, R logical)",
    "datetime": "ISO 8601 date and time in UTC, e.g. 2026-03-01T14:05:09.123456+00:00",
    "record": "JSON object with the fields listed under it",
    "list": "JSON array of objects with the fields listed under it",
    "array": "JSON array of plain values",
    "object": "JSON object, free-form (described in its meaning)",
    "file": "a row about a whole file (column empty): what it holds and how it is written",
}


@dataclass(frozen=True)
class Options:
    """What an export contains beyond the pseudonymous default."""

    include_recruitment_ids: bool = False


PSEUDONYMOUS = Options()


# Ids shorter than this are not redacted from texts: they would match ordinary words.
REDACT_MIN_LENGTH = 6
REDACTED = "[redacted]"

# What each file holds (the codebook's first rows, one per file it describes).
ABOUT: dict[str, str] = {
    LONG: "One row per survey answer (participant x situation x time point x item), in "
    "participant, situation, time (pre first) and item order.",
    WIDE: "One row per participant: their path, every survey answer, and a summary of each chat.",
    MESSAGES: "One row per draft, per sent message and per skill suggestion shown, chat by chat "
    "in transcript order (each turn's drafts and suggestions, then the message, then the reply).",
    BONUS: "The bonus list as the dashboard shows it: the top 30% of completed participants in "
    "each arm by skill mastery after training (all tied with the last place included), best "
    "first within each arm. A download of its own, in no bundle.",
    CODEBOOK: "This file: one row per file it describes (column empty), then one row per column "
    "of each of those files; exactly the files it was downloaded with.",
    JSON_FILE: "The full nested record: the study's design, then one record per participant. "
    "Fields are listed by path ([] marks the elements of a list). null = missing or not "
    "applicable. Texts are exactly as written (no apostrophe added).",
}

CSV_RULES = (
    " Empty cells: missing, or not applicable where the column says so; false and 0 are values, "
    "never a stand-in for 'not applicable'. Formula escape: a text cell whose first non-blank "
    "character is =, +, - or @, or which starts with a tab, a line break, | or an apostrophe, "
    "gets one leading apostrophe (') so that no spreadsheet runs it as a formula; removing that "
    "one apostrophe from a cell that starts with one always gives the text as written. Numbers, "
    "plain numbers written as text (-3, +2.5), dates and empty cells are never changed."
)


def redaction_rule(options: Options) -> str:
    """How texts are cleaned of the participant's own identifiers, with these options."""
    which = (
        "their resume keys (the study's and the practice hub's, never exported)"
        if options.include_recruitment_ids
        else "their Prolific ids (participant, study, session), their link label and their "
        "resume keys (the study's and the practice hub's)"
    )
    return (
        f" Redaction: in the free texts of a participant (what they wrote, the partner's replies, "
        f"suggestions, feedback, situations) every occurrence of {which} reads {REDACTED} "
        f"(whole words, any case; ids shorter than {REDACT_MIN_LENGTH} characters are left as "
        "they are, as they would match ordinary words)."
    )


@dataclass(frozen=True)
class Column:
    """One codebook row: a column of a CSV file, or a field path of the JSON file."""

    file: str
    name: str
    type: str
    allowed: str
    meaning: str


# --------------------------------------------------------------------------- the codebook


def _choices(pairs: Iterable[tuple[str, str]]) -> str:
    return "; ".join(f"{value} = {label}" for value, label in pairs)


def _arms_allowed(study: Study) -> str:
    arms = [(arm.key, arm.name) for arm in study.arms.order_by("order", "key")]
    return _choices(arms) + "; empty = not yet assigned"


def _step_allowed() -> str:
    return (
        "; ".join([*(step.key for step in flow.STEPS), flow.SCREENED_OUT])
        + " (in path order; see study.json steps)"
    )


# When messages.csv's feedback_computed / _delivered / _viewed apply (empty otherwise).
FEEDBACK_APPLIES = (
    " Empty = not applicable: the chat offered no feedback (evaluation chats, arms without "
    "feedback; the draft's request is then withheld), a draft with no feedback request, partner "
    "messages and suggestions. false = feedback was on offer and this did not happen (for a sent "
    "message: none of its turn's requests, also when none was asked for)."
)

LEVEL_ALLOWED = "strong; weak; none (Describe to Negotiate); yes; no (Mindful, Confident)"
STRATEGY_ALLOWED = "; ".join(STRATEGIES) + " (several joined by ;)"


def _identity_columns(file: str, study: Study, options: Options) -> list[Column]:
    columns = [
        Column(
            file,
            "participant",
            "string",
            "16 characters",
            "The participant's study code (pseudonymous; the key that joins every file). Not "
            "the key the participant continues with, which no export holds.",
        ),
    ]
    if options.include_recruitment_ids:
        columns += [
            Column(file, "prolific_pid", "string", "", "Prolific participant id (PROLIFIC_PID)."),
            Column(file, "prolific_study_id", "string", "", "Prolific study id (STUDY_ID)."),
            Column(file, "prolific_session_id", "string", "", "Prolific session (SESSION_ID)."),
            Column(file, "label", "string", "", "Generic ?participant= label from the link."),
        ]
    columns.append(Column(file, "arm", "string", _arms_allowed(study), "Assigned arm (key)."))
    return columns


def _scale_allowed(items: Sequence[SurveyItem]) -> str:
    scales = {(i.scale_low, i.scale_high, tuple(i.scale_labels)) for i in items}
    if len(scales) == 1:
        low, high, labels = scales.pop()
        return f"{low} ({labels[0]}) to {high} ({labels[-1]})"
    return "the item's scale_low to scale_high (see study.json survey_items)"


def survey_items(study: Study) -> list[SurveyItem]:
    """The survey items of this study's data: every item answered, plus the active ones.

    One row per key (its latest version), in the order surveys ask them.
    """
    answered = set(
        SurveyAnswer.objects.filter(participant__study=study)
        .order_by()  # the model's ordering would join the DISTINCT and return every answer
        .values_list("item_key", flat=True)
        .distinct()
    )
    latest: dict[str, SurveyItem] = {}
    for item in SurveyItem.objects.filter(Q(is_active=True) | Q(key__in=answered)).order_by(
        "key", "version"
    ):
        latest[item.key] = item
    return sorted(latest.values(), key=lambda item: (item.order, item.key))


def _long_columns(study: Study, options: Options, items: Sequence[SurveyItem]) -> list[Column]:
    f = LONG
    return [
        *_identity_columns(f, study, options),
        Column(f, "status", "string", _choices(Participant.Status.choices),
               "The participant's status at export time."),
        Column(f, "situation", "string", _choices(Slot.choices), "Which of their situations."),
        Column(f, "difficulty", "integer", "1 to 9", "The participant's difficulty rating of "
               "that situation."),
        Column(f, "time", "string", _choices(Time.choices), "Survey before or after training."),
        Column(f, "item", "string", "; ".join(i.key for i in items), "Survey item key."),
        Column(f, "item_version", "integer", "1 or more", "Version of the item's wording the "
               "participant saw (study.json survey_items)."),
        Column(f, "construct", "string", "self_efficacy; emotion; or a staff-defined construct",
               "What the item measures."),
        Column(f, "reverse_scored", "boolean", "true; false", "True when a lower value is the "
               "better outcome (less worry, anger...). Values are never flipped."),
        Column(f, "value", "integer", _scale_allowed(items), "The answer (raw scale point)."),
        Column(f, "answered_at", "datetime", "", "When the answer was stored."),
    ]  # fmt: skip


def _wide_columns(study: Study, options: Options, items: Sequence[SurveyItem]) -> list[Column]:
    f = WIDE
    columns = [
        *_identity_columns(f, study, options),
        Column(f, "source", "string", _choices(Participant.Source.choices),
               "How the participant arrived."),
        Column(f, "stratum", "string", "", "Allocation stratum (empty when not stratified)."),
        Column(f, "allocation_position", "integer", "0 or more",
               "0-based slot of the stratum's allocation sequence."),
        Column(f, "status", "string", _choices(Participant.Status.choices),
               "Status at export time."),
        Column(f, "step", "string", _step_allowed(), "The step they are on (debrief = done)."),
        Column(f, "consent_version", "integer", "1 or more",
               "Version of the consent text agreed to (study.json study.consent_versions)."),
        Column(f, "started_at", "datetime", "", "When they opened the study link first."),
        Column(f, "consented_at", "datetime", "", "When they consented."),
        Column(f, "assigned_at", "datetime", "", "When their arm was drawn."),
        Column(f, "finished_at", "datetime", "", "When they completed or were screened out."),
        Column(f, "minutes", "number", "0 or more", "finished_at - started_at, in minutes."),
    ]  # fmt: skip
    for slot in Slot.values:
        s = slot.lower()
        columns += [
            Column(f, f"{s}_category", "string", "family; social; work; other",
                   f"Category of situation {slot}."),
            Column(f, f"{s}_difficulty", "integer", "1 to 9",
                   f"The participant's difficulty rating of situation {slot}."),
        ]  # fmt: skip
    for slot in Slot.values:
        for time in Time.values:
            for item in items:
                columns.append(
                    Column(
                        f,
                        f"{slot.lower()}_{time}_{item.key}",
                        "integer",
                        _scale_allowed([item]),
                        f"'{item.label}' about situation {slot}, {Time(time).label.lower()}.",
                    )
                )
    for step in flow.chat_steps():
        columns += [
            Column(f, f"{step.key}_status", "string", _choices(Conversation.Status.choices),
                   f"How the chat '{step.title}' ended (active = still going)."),
            Column(f, f"{step.key}_messages", "integer", "0 or more",
                   f"Learner messages sent in '{step.title}'."),
            Column(f, f"{step.key}_drafts", "integer", "0 or more",
                   f"Drafts saved in '{step.title}' (each 'get feedback' saves one)."),
            Column(f, f"{step.key}_feedback_viewed", "integer", "0 or more; empty = not "
                   "applicable", f"Feedback panels shown to the participant in '{step.title}'. "
                   "Empty when the chat offered no feedback (evaluation chats, arms without "
                   "feedback) or did not take place; 0 = offered, none viewed."),
            Column(f, f"{step.key}_mastery", "number", "0 to 2",
                   f"Mean skill mastery of the messages of '{step.title}' (mean over messages "
                   "of each message's mean 0-2 score)."),
        ]  # fmt: skip
        for skill in SKILL_KEYS:
            columns.append(
                Column(
                    f,
                    f"{step.key}_{skill}",
                    "number",
                    "0 to 2",
                    f"Mean {skill} score (none 0, weak 1, strong 2; yes 2, no 0) over the "
                    f"messages of '{step.title}' where it was rated; empty if never.",
                )
            )
    return columns


def _message_columns(study: Study, options: Options) -> list[Column]:
    f = MESSAGES
    columns = [
        *_identity_columns(f, study, options),
        Column(f, "step", "string", "; ".join(s.key for s in flow.chat_steps()),
               "The chat step."),
        Column(f, "chat_kind", "string", _choices(Conversation.Kind.choices),
               "Evaluation chats never show feedback; the training chat has the arm's switches."),
        Column(f, "situation", "string", _choices(Slot.choices), "The situation of the chat."),
        Column(f, "conversation_id", "integer", "", "Conversation number (joins study.json)."),
        Column(f, "row_type", "string", "draft; message; suggestion",
               "A draft saved when feedback was asked for, a sent message, or a skill suggested "
               "('Suggest a skill')."),
        Column(f, "turn", "integer", "1 or more", "Which learner message of the chat the row "
               "belongs to (a partner reply has the turn it answers; a suggestion the turn it "
               "was asked for, placed among that turn's drafts by time)."),
        Column(f, "revision", "integer", "1 or more", "Drafts: revision within the turn."),
        Column(f, "seq", "integer", "1 or more", "Messages: position in the transcript."),
        Column(f, "role", "string", "learner; partner",
               "Who wrote it (drafts: learner; suggestions: empty)."),
        Column(f, "state", "string", _choices(Message.State.choices),
               "Messages: delivery state (failed = the reply never arrived)."),
        Column(f, "text", "string", "", "What was written (suggestions: the sentence shown "
               "with the skill)."),
        Column(f, "strategies", "string", STRATEGY_ALLOWED, "Strategies the learner chose."),
        Column(f, "used_rewrite", "boolean", "true; false",
               "Drafts: started from a suggested rewrite."),
        Column(f, "suggested_skill", "string", "; ".join(STRATEGIES),
               "Suggestions: the skill suggested for the next message."),
        Column(f, "suggestion_engine", "string", _choices(SkillSuggestion.Engine.choices),
               "Suggestions: what chose it (rule = Describe to open the chat; offline = the "
               "written rules, without a model or after it failed: see llm_outcome)."),
    ]  # fmt: skip
    for skill in SKILL_KEYS:
        columns.append(
            Column(
                f,
                f"rating_{skill}",
                "string",
                "; ".join(LEVELS[skill]),
                f"Rating of {skill}: drafts from their feedback, sent messages from the rater "
                "run at sending. Strategies are rated only when chosen.",
            )
        )
    columns += [
        Column(f, "mastery", "number", "0 to 2",
               "Mean 0-2 score of the rated skills (chosen strategies, mindful, confident)."),
        Column(f, "rating_engine", "string", "llm; offline", "Which rater produced the ratings."),
        Column(f, "resistance", "number", "0 to 1",
               "Learner messages: the partner's resistance after this message (adaptive)."),
        Column(f, "resistance_reasons", "string", "",
               "Why the resistance moved (several joined by '; ')."),
        Column(f, "agreed", "boolean", "true; false", "Partner messages: the partner agreed."),
        Column(f, "feedback_status", "string", _choices(FeedbackRequest.Status.choices),
               "Drafts: the feedback request (withheld = not computed: feedback is off in this "
               "chat, or the draft paused the chat for safety, see feedback_fallback_reason)."),
        Column(f, "feedback_engine", "string", "llm; offline", "Drafts: which rater answered."),
        Column(f, "feedback_fallback_reason", "string", "",
               "Drafts: why the offline rater answered instead of the model."),
        Column(f, "feedback_computed", "boolean", "true; false; empty = not applicable",
               "Feedback was computed: for a draft, its request; for a sent learner message, "
               "any request of its turn." + FEEDBACK_APPLIES),
        Column(f, "feedback_delivered", "boolean", "true; false; empty = not applicable",
               "Feedback reached the participant's browser (draft, or any of the turn)."
               + FEEDBACK_APPLIES),
        Column(f, "feedback_viewed", "boolean", "true; false; empty = not applicable",
               "The browser displayed the feedback (draft, or any of the turn)."
               + FEEDBACK_APPLIES),
        Column(f, "feedback_requested_at", "datetime", "", "Drafts: when feedback was asked."),
        Column(f, "feedback_computed_at", "datetime", "", "Drafts: when it was computed."),
        Column(f, "feedback_delivered_at", "datetime", "", "Drafts: when it was delivered."),
        Column(f, "feedback_viewed_at", "datetime", "", "Drafts: when it was displayed."),
        Column(f, "feedback_latency_ms", "number", "", "Drafts: request to display, in ms."),
        Column(f, "feedback_model_ms", "number", "", "Drafts: time in the model call, in ms."),
        Column(f, "llm_call_id", "integer", "", "The model call behind the row (study.json "
               "model_calls): the partner's reply, the draft's feedback, or the suggestion's."),
        Column(f, "llm_purpose", "string", _choices(LLMCall.Purpose.choices), "Its purpose."),
        Column(f, "llm_model", "string", "", "Model name as configured."),
        Column(f, "llm_prompt_name", "string", "", "Prompt template name."),
        Column(f, "llm_prompt_version", "string", "", "Prompt template version."),
        Column(f, "llm_outcome", "string", _choices(LLMCall.Outcome.choices), "How it went."),
        Column(f, "llm_attempts", "integer", "1 or more", "HTTP requests made (with retries)."),
        Column(f, "llm_retries", "integer", "0 or more", "Retries (attempts - 1)."),
        Column(f, "llm_ttft_ms", "number", "", "Call start to first token, in ms."),
        Column(f, "llm_total_ms", "number", "", "Whole call, in ms."),
        Column(f, "llm_tokens_in", "integer", "", "Prompt tokens."),
        Column(f, "llm_tokens_out", "integer", "", "Completion tokens."),
        Column(f, "error", "string", "", "Messages: what went wrong, if anything."),
        Column(f, "created_at", "datetime", "",
               "When the draft, message or suggestion was stored."),
    ]  # fmt: skip
    return columns


def _bonus_columns(study: Study, options: Options) -> list[Column]:
    f = BONUS
    return [
        *_identity_columns(f, study, options),
        Column(f, "score", "number", "0 to 2", "Mean skill mastery over the evaluation chats "
               "after training (each chat's mean over messages); completed participants only."),
        Column(f, "rank", "integer", "1 or more", "Rank within the arm (1 = best; ties share "
               "a rank and are all paid)."),
    ]  # fmt: skip


def _codebook_columns(files: Sequence[str]) -> list[Column]:
    f = CODEBOOK
    return [
        Column(f, "file", "string", "; ".join(files), "The file described."),
        Column(f, "column", "string", "", "Column name; for study.json a field path where "
               "[] marks the elements of a list; empty on the row about the whole file."),
        Column(f, "type", "string", _choices(TYPES.items()), "How values are written."),
        Column(f, "allowed_values", "string", "", "The values the column can take."),
        Column(f, "meaning", "string", "", "What the column holds."),
    ]  # fmt: skip


# study.json as a tree: "name | type | allowed values | meaning", two spaces of indent per level;
# "name[]" is a list of records (the fields below describe each element); a line without "|"
# continues the meaning above it. Rows whose allowed values are {ids} exist with recruitment ids
# only.
JSON_TREE = """
format | string | imbue-study-export | What this file is.
format_version | integer | 1 | Version of this layout.
exported_at | datetime |  | When the export was made.
options | record |  | How the export was asked for.
  include_recruitment_ids | boolean | true; false | Recruitment ids included.
study | record |  | The study's design and settings.
  slug | string |  | The study's link name (/s/<slug>/).
  name | string |  | The study's name.
  status | string | draft; open; closed | Status at export time.
  target_size | integer |  | Participants planned.
  allocation_method | string | complete; blocks; stratified_blocks | Randomisation method.
  block_size | integer |  | Permuted block size.
  stratify_by | string | source; s1_difficulty; empty | Stratification variable.
  seed | string |  | Seed the allocation sequence was drawn from.
  sequence_hash | string |  | SHA-256 of the sequence, stored before enrolment.
  design | object |  | The allocation design as recorded at opening.
  opened_at | datetime |  | When the study opened.
  closed_at | datetime |  | When it closed (empty while open).
  max_messages | integer |  | Learner messages per chat.
  training_strategy_mode | string | single; multiple | Strategies per message while training.
  evaluation_strategy_mode | string | single; multiple | The same in evaluation chats.
  min_difficulty_gap | integer | 0 to 8 | S2 at least this much harder than S1.
  consent_versions[] | list |  | Every consent text in use.
    version | integer |  | Version number.
    text | string |  | The consent text.
    created_at | datetime |  | When it was written.
  arms[] | list |  | The arms and their switches.
    key | string |  | Arm key (as in every file).
    name | string |  | Arm name.
    feedback_shown | boolean |  | Feedback in the training chat.
    suggestion_shown | boolean |  | Skill suggestions in training.
    worksheet_shown | boolean |  | DEAR MAN worksheet in training.
    adaptive_partner | boolean |  | Adaptive partner in training.
    weight | integer |  | Allocation ratio.
steps[] | list |  | The participant's path, in order.
  key | string |  | Step key (as in wide.csv step and messages.csv step).
  kind | string | consent; situations; survey; chat; assignment; debrief | What happens.
  title | string |  | Title shown to participants.
  situation | string | S1; S2; empty | The situation a survey or chat is on.
  time | string | pre; post; empty | Surveys: before or after training.
  chat | string | evaluation; training; empty | Chats: which kind.
survey_items[] | list |  | Every survey item wording answered or in use.
  key | string |  | Item key.
  version | integer |  | Wording version.
  construct | string |  | What it measures.
  label | string |  | Short name.
  wording | string |  | The statement shown.
  scale_low | integer |  | Lowest scale point.
  scale_high | integer |  | Highest scale point.
  scale_labels | array |  | Label of each point, lowest first.
  reverse_scored | boolean |  | Lower is the better outcome.
participants[] | list |  | One record per participant (withdrawn ones are gone).
  participant | string |  | Study code (pseudonymous).
  recruitment | record | {ids} | Recruitment ids (only when asked).
    prolific_pid | string | {ids} | PROLIFIC_PID.
    prolific_study_id | string | {ids} | STUDY_ID.
    prolific_session_id | string | {ids} | SESSION_ID.
    label | string | {ids} | Generic participant label.
  source | string | prolific; label; direct | How they arrived.
  arm | string |  | Arm key; null before assignment.
  stratum | string |  | Allocation stratum.
  status | string | active; completed; screened_out | Status.
  step | string |  | Current step key.
  consent_version | integer |  | Consent version agreed to.
  started_at | datetime |  | First visit.
  consented_at | datetime |  | Consent.
  finished_at | datetime |  | Completion or screen-out.
  allocation | record |  | The allocation slot; null before assignment.
    position | integer |  | 0-based slot in the sequence.
    stratum | string |  | Stratum of the sequence.
    method | string |  | Randomisation method.
    assigned_at | datetime |  | When it was drawn.
  situations[] | list |  | Their two situations.
    situation | string | S1; S2 | Slot.
    category | string | family; social; work; other |
    difficulty | integer | 1 to 9 | Their rating.
    text | string |  | The situation, in their words.
    goal | string |  | Their goal, in their words.
  steps[] | list |  | Each step reached, with times.
    step | string |  | Step key.
    entered_at | datetime |  | When they reached it.
    completed_at | datetime |  | When they finished it.
  answers[] | list |  | Survey answers (as long.csv).
    situation | string | S1; S2 |
    time | string | pre; post |
    item | string |  | Item key.
    item_version | integer |  | Wording version.
    value | integer |  | Raw scale point.
    answered_at | datetime |  |
  chats[] | list |  | Their chats in path order.
    step | string |  | Chat step key.
    kind | string | evaluation; training |
    situation | string | S1; S2 |
    conversation_id | integer |  | Conversation number.
    status | string | active; agreed; limit; ended; paused | How it ended.
    partner_engine | string | llm; offline | Who played the partner.
    partner_brief_source | string | llm; offline | Where the partner's persona came from.
    resistance_start | number | 0 to 1 | Starting resistance (null: partner not adaptive).
    switches | record |  | The chat's switches.
      max_messages | integer |  |
      strategy_mode | string | single; multiple |
      feedback_enabled | boolean |  | Feedback on offer (false: drafts' requests are withheld).
      suggestion_enabled | boolean |  |
      worksheet_enabled | boolean |  |
      adaptive_enabled | boolean |  |
    created_at | datetime |  | When the chat opened.
    ended_at | datetime |  | When it ended.
    messages[] | list |  | The transcript, in order.
      seq | integer |  | Position, from 1.
      role | string | learner; partner |
      state | string | pending; streaming; complete; failed |
      text | string |  | What was written.
      strategies | array | {strategies} | Chosen.
      ratings | object | {levels} | Learner messages: {skill: level} for all seven skills.
      rating_engine | string | llm; offline |
      mastery | number | 0 to 2 | Mean score of the rated skills.
      resistance | number | 0 to 1 | Partner's resistance after this learner message.
      resistance_reasons | array |  | Why it moved.
      agreed | boolean |  | Partner messages: the partner agreed (null on learner messages).
      error | string |  | What went wrong.
      attempts | integer |  | Partner messages: reply attempts (null on learner messages).
      llm_call_id | integer |  | Model call (model_calls).
      created_at | datetime |  |
      completed_at | datetime |  |
    drafts[] | list |  | Every draft, with its feedback.
      turn | integer |  | Learner message it drafts.
      revision | integer |  | Revision within the turn.
      text | string |  | The draft.
      strategies | array | {strategies} | Chosen.
      used_rewrite | boolean |  | Began from a rewrite.
      sent_message_seq | integer |  | seq of the message the turn became (null if never sent).
      created_at | datetime |  |
      feedback[] | list |  | Feedback requests on the draft.
        status | string | queued; done; failed; withheld | withheld = feedback off in this arm.
        engine | string | llm; offline |
        fallback_reason | string |  |
        result | object |  | The feedback shown: {engine, chosen, call_id, mastery,
          skills: {skill: {level, reasoning, suggestion, rewrite}}}.
        offline_result | object |  | The instant offline rating shown meanwhile (same shape).
        llm_call_id | integer |  |
        requested_at | datetime |  |
        computed_at | datetime |  | null = not computed (status says why).
        delivered_at | datetime |  | null = not delivered.
        viewed_at | datetime |  | null = not displayed.
        latency_ms | number |  | Request to display.
        model_ms | number |  | Time in the model.
    checkins[] | list |  | Emotion check-ins.
      phase | string | before; midway; after |
      after_seq | integer |  | Last message seq when given (0 = before any).
      intensity | integer | 0 to 10 |
      emotion | string |  |
      created_at | datetime |  |
    suggestions[] | list |  | Each skill suggestion shown ("Suggest a skill"), in order.
      turn | integer |  | Learner message it was asked for, from 1.
      after_seq | integer |  | Last message seq when asked (0 = before any).
      skill | string | describe; express; assert; reinforce; negotiate | The skill suggested.
      reason | string |  | The sentence shown with it.
      engine | string | rule; llm; offline | What chose it: rule = Describe to open the chat;
        offline = the written rules (no model, or it failed).
      model | string |  | The model, when llm answered.
      llm_call_id | integer |  | Its model call (model_calls), also one that failed.
      created_at | datetime |  | When it was shown.
    model_calls[] | list |  | Every model call the chat made.
      id | integer |  | Call number.
      purpose | string | partner; persona; suggestion; feedback |
      model | string |  |
      provider | string |  |
      prompt_name | string |  |
      prompt_version | string |  |
      prompt_hash | string |  | SHA-256 of the prompt.
      params | object |  | Temperature, token limit, timeout, stream.
      response_format | string |  |
      stream | boolean |  |
      tokens_in | integer |  |
      tokens_out | integer |  |
      ttft_ms | number |  | To first token.
      total_ms | number |  | Whole call.
      attempts | integer |  | HTTP requests made.
      outcome | string |  | How it went.
      finish_reason | string |  |
      error | string |  |
      message_id | integer |  |
      draft_id | integer |  |
      created_at | datetime |  |
withdrawals[] | list |  | Withdrawn participants: receipts only, no content.
  participant | string |  | Their study code.
  step | string |  | Step they withdrew at.
  arm | string |  | Arm key (empty if not yet assigned).
  withdrawn_at | datetime |  |
"""


def _json_fields() -> list[tuple[str, str, str, str]]:
    fields: list[list[str]] = []
    stack: list[str] = []
    for line in JSON_TREE.strip("\n").splitlines():
        if "|" not in line:
            fields[-1][3] += " " + line.strip()
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name, kind, allowed, meaning = (part.strip() for part in line.split("|"))
        del stack[depth:]
        prefix = "".join(f"{part}." for part in stack)
        fields.append([prefix + name.removesuffix("[]"), kind, allowed, meaning])
        stack.append(name)
    return [
        (
            path,
            kind,
            allowed.format(strategies=STRATEGY_ALLOWED, levels=LEVEL_ALLOWED, ids="{ids}"),
            meaning,
        )
        for path, kind, allowed, meaning in fields
    ]


def _json_columns(options: Options) -> list[Column]:
    return [
        Column(JSON_FILE, path, kind, "" if allowed == "{ids}" else allowed, meaning)
        for path, kind, allowed, meaning in _json_fields()
        if allowed != "{ids}" or options.include_recruitment_ids
    ]


def codebook(
    study: Study, options: Options = PSEUDONYMOUS, files: Sequence[str] = OFFERED
) -> list[Column]:
    """Every column of the given files (all that a download offers, by default), with these
    options, in the order of `files`."""
    unknown = set(files) - set(OFFERED)
    if unknown:
        raise ValueError(f"unknown export files {sorted(unknown)!r}")
    items = survey_items(study) if {LONG, WIDE} & set(files) else []
    made = {
        LONG: lambda: _long_columns(study, options, items),
        WIDE: lambda: _wide_columns(study, options, items),
        MESSAGES: lambda: _message_columns(study, options),
        BONUS: lambda: _bonus_columns(study, options),
        CODEBOOK: lambda: _codebook_columns(files),
        JSON_FILE: lambda: _json_columns(options),
    }
    return [column for file in files for column in made[file]()]


def about(options: Options = PSEUDONYMOUS, files: Sequence[str] = OFFERED) -> list[Column]:
    """The codebook's first rows: one per file, saying what it holds and how it is written
    (empty cells, the formula escape, redaction)."""
    rows = []
    for file in files:
        rules = CSV_RULES if file.endswith(".csv") else ""
        if file in (MESSAGES, JSON_FILE):  # the files with free text
            rules += redaction_rule(options)
        rows.append(Column(file, "", "file", "", ABOUT[file] + rules))
    return rows


def columns(study: Study, file: str, options: Options = PSEUDONYMOUS) -> list[str]:
    """The header of one CSV file (or the field paths of the JSON file)."""
    return [c.name for c in codebook(study, options, files=(file,))]
