"""Spot learner text that suggests someone may be at risk, offline and in a few milliseconds.

`assess_risk(text)` returns a `RiskAssessment`: a level ("none", "concern", "urgent"), the
categories found ("self_harm", "harm_to_others", "abuse", most serious first) and the phrases that
matched. Anything above "none" means: pause the practice, show the support resources, record an
adverse event, and keep the text away from the partner model. "urgent" marks an explicit statement
(a wish to die, a plan, a weapon, a disclosed assault); "concern" marks an indirect one that a
researcher should read.

Role-play is full of angry, exaggerated speech, so the rules are written to stay quiet on it:

- Idioms are removed before any rule looks at the text: "this job is killing me", "my feet are
  killing me", "I'm dying to go", "I'd kill for a coffee", "I could kill you for leaving the
  dishes", "bored to death", "over my dead body", "hit me up", "it hit me that...", "he beat me
  to the parking spot", "shoot you an email", "I'd rather die than go", "kill some time".
- Threats of killing someone else count only with a sign that they are meant: "for real", "I mean
  it", "not joking", a weapon, a plan. "I'm going to kill him when he gets home, he ate my cake"
  is left alone; "I swear I'm going to kill him, I've got a knife" is urgent. Threats to hurt,
  stab or beat someone up are a concern even without such a sign, unless negated ("I would
  never hurt you").
- Self-harm is never treated as a figure of speech except "I could kill myself (for ...)", which
  is a concern rather than urgent. A negated statement ("I'm not going to kill myself") is still
  a concern: it is unusual in a practice chat.
- Abuse is a person hitting, beating, choking, forcing or threatening "me" ("he hits me", "you
  pushed me down the stairs", "she said she'd kill me if I left"), being afraid of someone, or
  being controlled ("won't let me leave the house", "locks me in").

What is not caught (tested as known misses): misspellings and spacing tricks ("k i l l myself"),
languages other than English, euphemisms not in the lists ("I want to go to sleep for a long
time", "I've been giving my things away"), risk described in the third person about someone else
("my friend wants to die"), and hints spread over several messages. What may be wrongly flagged:
accidents phrased like self-harm with no activity named ("I hurt myself again"), a work context
for "they'd be better off without me", and threats with a real-sounding cue that were still meant
as jokes ("I'm going to stab him with a fork, for real, he ate my fries").

How well: on phrasings written fresh (three rounds of 20 risky and 20 safe, each measured before
any rule was changed for it) the rules caught 36 of 60 risky ones and flagged 1 of 60 safe ones.
They catch plain statements; they are a net, not a screen, and a researcher still reads the
transcripts. The phrasings and counts are in tests/simulations/test_safety.py.
Pure: no Django, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RULES_VERSION = "1"

NONE, CONCERN, URGENT = "none", "concern", "urgent"
SELF_HARM, HARM_TO_OTHERS, ABUSE = "self_harm", "harm_to_others", "abuse"
_LEVEL_RANK = {NONE: 0, CONCERN: 1, URGENT: 2}
_CATEGORY_RANK = {SELF_HARM: 0, ABUSE: 1, HARM_TO_OTHERS: 2}


@dataclass(frozen=True)
class Match:
    """One rule that fired: its category, level and the (normalised) words it matched."""

    category: str
    level: str
    phrase: str


@dataclass(frozen=True)
class RiskAssessment:
    """The verdict on one text; `at_risk` is what callers act on."""

    level: str
    categories: tuple[str, ...]
    matches: tuple[Match, ...]
    rules_version: str = RULES_VERSION

    @property
    def at_risk(self) -> bool:
        return self.level != NONE

    @property
    def matched(self) -> tuple[str, ...]:
        return tuple(m.phrase for m in self.matches)


# --- normalising ------------------------------------------------------------------------------

_CONTRACTIONS = [
    (r"\bi'?m\b", "i am"),
    (r"\bi'?ve\b", "i have"),
    (r"\bi'll\b", "i will"),
    (r"\bi'd\b", "i would"),
    (r"\b(he|she|it|that)'s\b", r"\1 is"),
    (r"\b(you|they|we)'re\b", r"\1 are"),
    (r"\b(he|she|they|you|we)'ll\b", r"\1 will"),
    (r"\b(he|she|they|you|we)'d\b", r"\1 would"),
    (r"\bcan'?t\b", "cannot"),
    (r"\bwon'?t\b", "will not"),
    (r"\b(do|does|did|is|are|was|were|would|could|should)n'?t\b", r"\1 not"),
    (r"\bgonna\b", "going to"),
    (r"\bwanna\b", "want to"),
    (r"\bgotta\b", "got to"),
    (r"\bkms\b", "kill myself"),
    (r"\bunalive\b", "kill"),
    (r"\bmy ?self\b", "myself"),
]
_CONTRACTIONS_RE = [(re.compile(p), r) for p, r in _CONTRACTIONS]


def normalise(text: str) -> str:
    """Lower case, straight apostrophes, contractions spelt out, one space between words."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = re.sub(r"[^a-z0-9'\s.,!?;:-]", " ", text)
    for pattern, replacement in _CONTRACTIONS_RE:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


# --- idioms removed before any rule runs ------------------------------------------------------

_PEOPLE = r"(?:you|him|her|them|myself|me|us|everyone|everybody|somebody|someone)"
_IDIOMS = [
    r"\b(?:is|are|was|were|been|be|keeps?|kept) killing (?:me|it|us|the \w+)\b",
    r"\bkilling (?:it|the (?:vibe|mood))\b",
    r"\bkill(?:ed|s)? it\b",
    r"\bkill(?:ing)? (?:some |the )?time\b",
    r"\b(?:kill|die) for (?:a|an|some|one)\b",
    r"\b(?:could|would|might) (?:just |honestly |literally )?kill (?:you|him|her|them)\b",
    r"\bkill (?:you|him|her|them) if (?:you|he|she|they) (?:\w+ ){0,6}again\b",
    r"\bkill (?:the|this|that|my|our) (?:project|idea|plan|deal|lights?|engine|music|vibe|mood|"
    r"joke|app|tab|process|meeting|conversation|buzz|battery)\b",
    r"\b(?:dying|dies|died) (?:to|for|of|laughing|here)\b",
    r"\b(?:nearly|almost) died\b",
    r"\bto die for\b",
    r"\b(?:could|would|might|will) (?:just |literally )?die\b",
    r"\brather die than\b",
    r"\b(?:bored|scared|frightened|worried|tickled|done) to death\b",
    r"\b(?:the )?death of me\b",
    r"\bover my dead body\b",
    r"\bdead (?:tired|serious|wrong|right|on|end|set|weight|last)\b",
    r"\bdrop dead\b",
    r"\bkiller\b",
    r"\bmurder (?:a|an|that|this|the|some) (?!\w*(?:man|woman|guy|girl|person|people))\w+\b",
    r"\bhit(?:s|ting)? me up\b",
    r"\bhit(?:s|ting)? me with (?:[\w'-]+ ){0,3}(?:deadlines?|requests?|questions?|news|bills?|"
    r"tasks?|work|e-?mails?|messages?|demands?|criticism|comments?|surprises?|facts|truth|jokes?|ideas?|"
    r"lines?|attitude|changes|paperwork|guilt|complaints?|chores|the \w+ (?:news|question))\b",
    r"\b(?:it|that|this|reality|the news|news|the truth|something) (?:really |suddenly |finally )?"
    r"hit(?:s)? me\b",
    r"\bbeat(?:s|en)? me (?:to|at|in|by|on)\b",
    r"\bbeats? me (?:\w+ ){1,3}(?:at|in) (?:chess|cards|scrabble|games?|tennis|golf|\w+ball|"
    r"mario|monopoly|poker|everything|arguments?|races?)\b",
    r"\bkick(?:s|ed|ing)? me out of (?:the|our|my|this) (?:group|chat|team|game|meeting|club|"
    r"band|class|call)\b",
    r"\bpush(?:es|ed|ing)? me away\b",
    r"\b(?:push|pushes|pushed|pushing|force|forces|forced|forcing) me to (?!have sex)"
    r"(?!(?:do|touch|watch) (?:sexual|things)\b)",
    r"\bshoot (?:you|him|her|them|me) (?:a|an) (?:text|message|email|e-mail|note|line|call)\b",
    r"\btake a stab\b",
    r"\bcut myself (?:a|an|some|off|short|free|loose|slack)\b",
    r"\bhurt(?:s|ing)? (?:my|your|his|her|their|our) (?:feelings|pride|ego|chances)\b",
    r"\bhurt myself (?:playing|lifting|running|at the|at work|in the gym|skiing|cycling|"
    r"climbing|falling|when i fell|while)\b",
]
_IDIOMS_RE = re.compile("|".join(f"(?:{p})" for p in _IDIOMS))


def _without_idioms(text: str) -> str:
    # A separator that no rule matches keeps the words either side from joining into a phrase.
    return _IDIOMS_RE.sub(" | ", text)


# --- rules -------------------------------------------------------------------------------------

_INTENT = (
    r"(?:going to|will|want to|wanted to|plan to|planning to|planning on|about to|ready to|"
    r"intend to|have to|need to|thinking about|thinking of|thought about|fantasi[sz]e about|"
    r"picturing|imagining|imagine|dream about|dreaming about)"
)
_TARGET = (
    r"(?:him|her|them|you|he|she|my \w+(?:-in-law)?|the \w+|that \w+|this \w+|his \w+|"
    r"her \w+|everyone|everybody|people)"
)
_REAL = re.compile(
    r"\b(?:for real|i mean it|i am (?:dead )?serious|not (?:joking|kidding)|no joke|i swear|"
    r"knife|gun|rifle|pistol|weapon|machete|poison|bought a|have a plan|made a plan|"
    r"planned it|i know where (?:he|she|they) (?:lives?|sleeps?))\b"
)
_VIOLENT = r"(?:kill|killing|murder|murdering|stab|stabbing|shoot|shooting|strangle|strangling)"
_HURT = (
    r"(?:hurt|hurting|harm|harming|beat up|beating up|beat the \w+ out of|attack|attacking|"
    r"punch|punching|smash|smashing|poison|poisoning|run over)"
)

_AGGRESSORS = r"(?:he|she|they|you|my \w+(?:-in-law)?|his \w+|her \w+|the \w+|[a-z]+ and \w+)"
_ASSAULT = (
    r"(?:hits?|hitting|beats?|beaten|beating|slaps?|slapped|slapping|punch(?:es|ed|ing)?|"
    r"kick(?:s|ed|ing)?|chok(?:es|ed|ing)|strangl(?:es|ed|ing)|shov(?:es|ed|ing)|"
    r"push(?:es|ed|ing)?|throws? things at|threw (?:things|a \w+) at|burn(?:s|ed|t)|"
    r"drags?|dragged|bit|bites)"
)


@dataclass(frozen=True)
class _Rule:
    category: str
    level: str
    pattern: re.Pattern[str]
    needs_real: bool = False  # counts only when a "for real" sign is in the same text
    level_if_real: str | None = None  # raised to this level when such a sign is there
    soften: re.Pattern[str] | None = None  # looked for in the few words before the match...
    soft_level: str | None = None  # ...and if found, this level (None: the match is dropped)


def _rule(
    category: str,
    level: str,
    pattern: str,
    *,
    needs_real: bool = False,
    level_if_real: str | None = None,
    soften: str | None = None,
    soft_level: str | None = None,
) -> _Rule:
    return _Rule(
        category,
        level,
        re.compile(pattern),
        needs_real,
        level_if_real,
        re.compile(soften) if soften else None,
        soft_level,
    )


_NEGATION = r"\b(?:not|never|no|nobody|no one)\b"
_MODAL_OR_NEGATION = r"\b(?:could|might|not|never)\b"

_RULES = [
    # -- self-harm and suicide ----------------------------------------------------------------
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:kill|killing|hang|hanging|poison|poisoning|drown|drowning|shoot|shooting) myself\b",
        soften=_MODAL_OR_NEGATION,
        soft_level=CONCERN,
    ),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:cut|cutting|burn|burning|slit|slitting|slash|slashing) "
        r"(?:myself|my (?:arms?|wrists?|legs?|skin|thighs?))\b",
        soften=_NEGATION,
        soft_level=CONCERN,
    ),
    _rule(SELF_HARM, CONCERN, r"\b(?:hurt|hurting|harm|harming) myself\b"),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:want|going|plan|planning|trying|tried|decided|ready|keep wanting|need|urge) to "
        r"(?:hurt|harm) myself\b",
        soften=_NEGATION,
        soft_level=CONCERN,
    ),
    _rule(SELF_HARM, URGENT, r"\bself[- ]?harm(?:ing|ed)?\b"),
    _rule(SELF_HARM, URGENT, r"\bsuicid(?:e|al)\b"),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:end|ending|take|taking|took) my (?:own )?life\b",
        soften=_NEGATION,
        soft_level=CONCERN,
    ),
    _rule(SELF_HARM, URGENT, r"\bend(?:ing)? it all\b", soften=_NEGATION, soft_level=CONCERN),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:thinking|thought|think|thoughts) (?:about|of) (?:just )?(?:ending|end) "
        r"(?:it|everything|things)\b(?! (?:with|between|off)\b)",
    ),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:want|wanted|wish|going|ready|plan|planning|trying|tried) to "
        r"(?:die|be dead|not exist|not be (?:alive|here)|disappear forever|never wake up)\b",
        soften=_NEGATION,
        soft_level=CONCERN,
    ),
    _rule(
        SELF_HARM,
        URGENT,
        r"\bwish (?:i|that i) (?:was|were|had) (?:dead|never been born|not been born|not born)\b",
    ),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:do not|does not|did not|no longer) want to (?:be alive|exist|wake up|be here|"
        r"live(?! (?:with|in|at|here|there|near|together|like|next|on|under|through)\b))\b",
    ),
    _rule(SELF_HARM, CONCERN, r"\b(?:do not|no longer) want to live like this\b"),
    _rule(SELF_HARM, URGENT, r"\bnever wake up\b"),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:wants?|wish|wishing|hope|hoping|pray|praying) (?:\w+ ){0,2}not (?:to )?wake up\b",
    ),
    _rule(SELF_HARM, URGENT, r"\bbetter off dead\b"),
    _rule(SELF_HARM, CONCERN, r"\b(?:done|finished) with (?:life|living|being alive)\b"),
    _rule(SELF_HARM, CONCERN, r"\bshould (?:just )?end it\b(?! (?:with|between|off|now with)\b)"),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:roof|bridge|ledge|balcony|cliff|platform)\b(?:[^.!?]{0,60})\bjump(?:ing)?\b|"
        r"\bjump(?:ing)?\b(?:[^.!?]{0,30})\b(?:roof|bridge|ledge|balcony|cliff)\b",
    ),
    _rule(
        SELF_HARM,
        CONCERN,
        r"\b(?:tired|sick|weary) of (?:living|being alive|life|existing|being here)\b",
    ),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:pills|tablets|meds) (?:\w+ )?(?:saved|stockpiled|hoarded|stashed)\b|"
        r"\b(?:saving|stockpiling|hoarding|stashing) (?:up )?(?:my |the )?(?:sleeping )?"
        r"(?:pills|tablets|meds)\b",
    ),
    _rule(
        SELF_HARM,
        URGENT,
        r"\bno (?:reason|point) (?:for me )?(?:to|in) (?:keep )?(?:live|living|go on|going on|"
        r"be alive|being alive|stay alive|staying alive)\b",
    ),
    _rule(SELF_HARM, CONCERN, r"\bcannot go on (?:living|any ?more|any longer)\b"),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:do not|cannot|no longer) see (?:the|any) point (?:in|of) (?:living|life|going on|"
        r"being alive|staying alive|being here)\b",
    ),
    _rule(
        SELF_HARM,
        CONCERN,
        r"\b(?:better|happier|easier|relieved|glad) (?:off )?(?:if|when) i (?:was|were|am|died|"
        r"disappeared)(?: (?:not (?:around|here|alive)|gone|dead))?\b",
    ),
    _rule(SELF_HARM, URGENT, r"\b(?:goodbye|farewell|suicide) (?:note|letter)s?\b"),
    _rule(SELF_HARM, URGENT, r"\bhow many (?:pills|tablets|sleeping pills)\b"),
    _rule(
        SELF_HARM,
        CONCERN,
        r"\bwant (?:it|everything|this|all of this|it all) to (?:be over|end|stop) "
        r"(?:for good|forever|permanently)\b",
    ),
    _rule(
        SELF_HARM,
        CONCERN,
        r"\b(?:everyone|everybody|they|you|people|the world|my family|you all) "
        r"(?:would|will|is|are) (?:be )?better off without me\b",
    ),
    _rule(SELF_HARM, URGENT, r"\b(?:overdose|overdosed|overdosing)\b"),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:took|taken|take|swallowed|swallow) (?:all|a bunch of|a lot of|too many|loads of|"
        r"a handful of|all of) (?:my |the |those |these )?(?:pills|tablets|meds|medication)\b",
    ),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:jump|jumping) (?:off|from) (?:a|the|my) (?:bridge|roof|building|balcony|cliff|"
        r"window|tower)\b",
    ),
    _rule(
        SELF_HARM,
        URGENT,
        r"\b(?:step|stepping|jump|jumping) in front of (?:a|the) (?:train|bus|car|truck)\b",
    ),
    # -- harm to others -----------------------------------------------------------------------
    _rule(
        HARM_TO_OTHERS,
        URGENT,
        r"\b" + _INTENT + r" (?:\w+ ){0,2}" + _VIOLENT + r" " + _TARGET + r"\b",
        needs_real=True,
        soften=_NEGATION,
    ),
    _rule(
        HARM_TO_OTHERS,
        CONCERN,
        r"\b"
        + _INTENT
        + r" (?:\w+ ){0,2}(?:"
        + _HURT
        + r" "
        + _TARGET
        + r"|(?:beat|beating) "
        + _TARGET
        + r" up"
        + r"|(?:break|breaking) (?:his|her|their|your) (?:arms?|legs?|nose|jaw|neck|face|fingers|"
        + r"bones|ribs|skull))\b(?! feelings)",
        level_if_real=URGENT,
        soften=_NEGATION,
    ),
    _rule(
        HARM_TO_OTHERS,
        CONCERN,
        r"\b(?:stab|shoot|strangle|poison|slash) (?:him|her|them|you|my \w+)\b",
        level_if_real=URGENT,
        soften=r"\b(?:could|would|not|never|no)\b",
    ),
    _rule(
        HARM_TO_OTHERS,
        URGENT,
        r"\buse (?:it|the gun|the knife|a knife|a gun|my gun|my knife) on "
        r"(?:him|her|them|you|my \w+)\b",
    ),
    # -- abuse of the learner -----------------------------------------------------------------
    _rule(
        ABUSE,
        URGENT,
        r"\b"
        + _AGGRESSORS
        + r" (?:\w+ ){0,2}"
        + _ASSAULT
        + r" (?:my \w+ and )?me\b(?! (?:to|at|away)\b)",
        soften=_NEGATION,
        soft_level=CONCERN,
    ),
    _rule(
        ABUSE,
        URGENT,
        r"\b" + _AGGRESSORS + r" (?:\w+ ){0,2}(?:pushed|shoved|threw) me "
        r"(?:down|into|against|out of a|off|across)\b",
    ),
    _rule(
        ABUSE,
        URGENT,
        r"\b(?:he|she|they|you) (?:said|says|told me|threatened|threatens|threaten) "
        r"(?:that )?(?:he|she|they|you) (?:would|will|is going to|was going to|are going to|"
        r"might|could) (?:kill|hurt|beat|hit) me\b",
    ),
    _rule(
        ABUSE,
        URGENT,
        r"\b" + _AGGRESSORS + r" (?:\w+ ){0,2}grab(?:s|bed)? me by (?:the|my) "
        r"(?:throat|neck|hair|arm|arms|wrist|wrists)\b",
    ),
    _rule(
        ABUSE, URGENT, r"\b(?:kill|hurt|beat|hit) me if i (?:leave|left|tell|told|go|call|ever)\b"
    ),
    _rule(ABUSE, URGENT, r"\bthreat(?:en|ens|ened|ening) to (?:kill|hurt|beat|hit) me\b"),
    _rule(
        ABUSE,
        URGENT,
        r"\b(?:threat(?:en|ens|ened|ening)|attacked|came at) me with (?:a|an|his|her|their|the) "
        r"(?:knife|gun|bat|hammer|bottle|belt|weapon|blade)\b",
    ),
    _rule(
        ABUSE,
        URGENT,
        r"\b(?:raped|rapes|rape|molested|molests|molesting) me\b|"
        r"\bsexually (?:assaulted|abused)\b|"
        r"\bforc(?:ed|es|ing) me (?:to have sex|into sex|to (?:do|touch|watch) (?:sexual|things))"
        r"\b|"
        r"\btouch(?:es|ed)? me when i (?:do not|did not) want\b|"
        r"\btouch(?:es|ed|ing)? me (?:\w+ ){0,6}(?:our secret|a secret|inappropriately|down there|"
        r"private parts|where i did not want)\b",
    ),
    _rule(
        ABUSE,
        CONCERN,
        r"\b(?:afraid|scared|terrified|frightened) (?:of what (?:he|she|they) (?:might|will|would|"
        r"could) do|to go home|(?:that )?(?:he|she|they) (?:will|would|might|is going to) hurt me|"
        r"for my (?:life|safety))\b",
    ),
    _rule(
        ABUSE,
        CONCERN,
        r"\b(?:will not|does not|would not|never) let me (?:leave|go out|see my|have (?:my|any) "
        r"money|use my phone|out of)\b|"
        r"\b(?:takes|took|hides|hid) my (?:phone|keys|passport|money)\b|"
        r"\block(?:s|ed)? me (?:in|out)\b",
    ),
    _rule(ABUSE, CONCERN, r"\b(?:abuses|abused|abusing) me\b|\b(?:is|was|being) abusive\b"),
    _rule(
        ABUSE,
        CONCERN,
        r"\b(?:hits|hit|beats|beat|hurts|slaps|slapped|kicks|kicked) (?:my|the|our) "
        r"(?:kids|children|son|daughter|baby|little \w+)\b(?! (?:at|in|to)\b)",
    ),
]

_CLAUSE_END = re.compile(r"[.!?;,]")


def _before(text: str, start: int, words: int = 4) -> str:
    """The few words before a match, within its clause."""
    head = _CLAUSE_END.split(text[:start])[-1]
    return " ".join(head.split()[-words:])


def assess_risk(text: str) -> RiskAssessment:
    """Whether this text suggests the writer, or someone they mention, may be at risk."""
    clean = _without_idioms(normalise(text or ""))
    real = bool(_REAL.search(clean))
    matches: list[Match] = []
    for rule in _RULES:
        for found in rule.pattern.finditer(clean):
            if rule.needs_real and not real:
                continue
            level = rule.level_if_real if (rule.level_if_real and real) else rule.level
            if rule.soften is not None and rule.soften.search(_before(clean, found.start())):
                if rule.soft_level is None:
                    continue
                level = rule.soft_level
            matches.append(Match(rule.category, level, found.group(0).strip()))
    if not matches:
        return RiskAssessment(NONE, (), ())
    # One entry per phrase, the most serious reading kept.
    best: dict[tuple[str, str], Match] = {}
    for match in matches:
        key = (match.category, match.phrase)
        if key not in best or _LEVEL_RANK[match.level] > _LEVEL_RANK[best[key].level]:
            best[key] = match
    ordered = sorted(
        best.values(), key=lambda m: (-_LEVEL_RANK[m.level], _CATEGORY_RANK[m.category])
    )
    level = ordered[0].level
    categories = tuple(
        sorted(
            {m.category for m in ordered},
            key=lambda c: (
                -max(_LEVEL_RANK[m.level] for m in ordered if m.category == c),
                _CATEGORY_RANK[c],
            ),
        )
    )
    return RiskAssessment(level, categories, tuple(ordered))
