"""Rubric cues found in a learner message: the lexical evidence behind each DEAR MAN rating.

Every cue is a named count (or ratio) so that the offline classifier can weigh it and the
offline rater can explain a rating by pointing at the cues that fired. The patterns follow the
rubric in feedback/skills.py; they are deliberately general (word classes, not phrases from
the example bank) so that they carry over to messages the bank never saw.
"""

import bisect
import math
import re
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from functools import cache, lru_cache

# Texting forms, missing apostrophes and common misspellings that would otherwise hide a cue
# ("im so stressed", "u never", "dont", "tmrw", "frustated"): whole words, replaced in one pass.
_WORD_FORMS: dict[str, str] = {
    "im": "i'm",
    "u": "you",
    "ur": "your",
    "r": "are",
    "ya": "you",
    "pls": "please",
    "plz": "please",
    "plse": "please",
    "ive": "i've",
    "id": "i'd",
    "dont": "don't",
    "cant": "can't",
    "wont": "won't",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "isnt": "isn't",
    "wasnt": "wasn't",
    "werent": "weren't",
    "arent": "aren't",
    "havent": "haven't",
    "hasnt": "hasn't",
    "hadnt": "hadn't",
    "couldnt": "couldn't",
    "wouldnt": "wouldn't",
    "shouldnt": "shouldn't",
    "youre": "you're",
    "youd": "you'd",
    "youll": "you'll",
    "youve": "you've",
    "theyre": "they're",
    "thats": "that's",
    "whats": "what's",
    "theres": "there's",
    "wed": "we'd",
    "idk": "i don't know",
    "kinda": "kind of",
    "sorta": "sort of",
    "gonna": "going to",
    "wanna": "want to",
    "gotta": "got to",
    "lemme": "let me",
    "imma": "i'm going to",
    "ima": "i'm going to",
    "thx": "thanks",
    "ty": "thanks",
    "ok": "okay",
    "k": "okay",
    "kk": "okay",
    "sry": "sorry",
    "soz": "sorry",
    "bc": "because",
    "cuz": "because",
    "coz": "because",
    "cos": "because",
    "becuase": "because",
    "becasue": "because",
    "rn": "right now",
    "tbh": "to be honest",
    "ngl": "not going to lie",
    "tmrw": "tomorrow",
    "tmr": "tomorrow",
    "tomorow": "tomorrow",
    "tommorow": "tomorrow",
    "tommorrow": "tomorrow",
    "tonite": "tonight",
    "2nite": "tonight",
    "b4": "before",
    "wknd": "weekend",
    "abt": "about",
    "ppl": "people",
    "msg": "message",
    "alot": "a lot",
    "untill": "until",
    "realy": "really",
    "definately": "definitely",
    "wensday": "wednesday",
    "wednsday": "wednesday",
    "thier": "their",
    "frustated": "frustrated",
    "frustating": "frustrating",
    "stresed": "stressed",
    "embarassed": "embarrassed",
    "embarrased": "embarrassed",
    "dissapointed": "disappointed",
    "disapointed": "disappointed",
    "anxous": "anxious",
    "worryed": "worried",
    "scarred": "scared",
    "exausted": "exhausted",
    "overwhelmd": "overwhelmed",
    "apologise": "apologize",
    # Contractions typed without the apostrophe that no other word spells ("were", "well",
    # "hell", "shell" are words: left alone).
    "hes": "he's",
    "shes": "she's",
    "itll": "it'll",
    "thatll": "that'll",
    "theyll": "they'll",
    "theyve": "they've",
    "theyd": "they'd",
    "weve": "we've",
    "wouldve": "would've",
    "couldve": "could've",
    "shouldve": "should've",
    "whos": "who's",
    "wheres": "where's",
    "hows": "how's",
    "heres": "here's",
    "mustnt": "mustn't",
    "neednt": "needn't",
    "aint": "ain't",
    "yall": "y'all",
    # More texting forms.
    "&": "and",
    "w/": "with",
    "smth": "something",
    "sth": "something",
    "prob": "probably",
    "tho": "though",
    "rly": "really",
    "srsly": "seriously",
    "wat": "what",
    "mins": "minutes",
    "hrs": "hours",
    "2moro": "tomorrow",
    "2day": "today",
    "gr8": "great",
    "nvm": "never mind",
    "ofc": "of course",
    # Common misspellings (non-words only: a slip that spells another word is left alone).
    "becaus": "because",
    "bcause": "because",
    "definatly": "definitely",
    "seperate": "separate",
    "recieve": "receive",
    "recieved": "received",
    "beleive": "believe",
    "freind": "friend",
    "freinds": "friends",
    "wierd": "weird",
    "probly": "probably",
    "literaly": "literally",
    "agian": "again",
    "actualy": "actually",
    "basicly": "basically",
    "wether": "whether",
    "schedual": "schedule",
    "appriciate": "appreciate",
    "responsable": "responsible",
    "neccessary": "necessary",
    "appartment": "apartment",
    "plese": "please",
    "pleae": "please",
    "coud": "could",
    "woud": "would",
    "shoud": "should",
    "jsut": "just",
    "teh": "the",
    "waht": "what",
    "wiht": "with",
    "kno": "know",
    "fel": "feel",
    "sory": "sorry",
    "wory": "worry",
    "wek": "week",
    "weeknd": "weekend",
    "goin": "going",
    "nothin": "nothing",
    "somethin": "something",
    "feelin": "feeling",
    # British spellings to American ones (every pair one way), so that both spellings of a word
    # share one n-gram.
    "apologised": "apologized",
    "apologising": "apologizing",
    "organise": "organize",
    "organised": "organized",
    "organising": "organizing",
    "realise": "realize",
    "realised": "realized",
    "prioritise": "prioritize",
    "recognise": "recognize",
    "criticise": "criticize",
    "emphasise": "emphasize",
    "analyse": "analyze",
    "colour": "color",
    "favour": "favor",
    "favourite": "favorite",
    "behaviour": "behavior",
    "neighbour": "neighbor",
    "neighbours": "neighbors",
    "honour": "honor",
    "humour": "humor",
    "labour": "labor",
    "centre": "center",
    "theatre": "theater",
    "cancelled": "canceled",
    "cancelling": "canceling",
    "travelled": "traveled",
    "travelling": "traveling",
    "fulfil": "fulfill",
    "practise": "practice",
    "practised": "practiced",
    "offence": "offense",
    "judgement": "judgment",
    "sceptical": "skeptical",
    "apologises": "apologizes",
    "realising": "realizing",
    "recognised": "recognized",
    "prioritised": "prioritized",
    "criticised": "criticized",
    "organisation": "organization",
    "minimise": "minimize",
    "finalise": "finalize",
    "summarise": "summarize",
    "programme": "program",
    "defence": "defense",
    "licence": "license",
    "grey": "gray",
    "mum": "mom",
    "mums": "moms",
    "maths": "math",
}
_WORD_FORMS_RE = re.compile(
    r"(?<!['\w&/])(?:"
    + "|".join(re.escape(w) for w in sorted(_WORD_FORMS, key=len, reverse=True))
    + r")(?!['\w&/]|\.\w)"
)
# Words that never follow the possessive "its" (a determiner, "not", "been", a pronoun, an
# adverb, a preposition, a day), so "its" before them is "it's" ("its not", "its been", "its
# my fault", "its on friday").
_AFTER_IT_IS = (
    "a an the not no been being gonna going getting got just so too very really still already "
    "always never also all about like kinda sorta my your our his her their me you him us them "
    "this that these those what how because when why where who which nothing everything "
    "something anything probably definitely honestly literally actually totally basically "
    "obviously clearly seriously pretty quite super ok okay alright over done gone due now "
    "here there on off up out in for at to with from down back enough almost nearly such "
    "monday tuesday wednesday thursday friday saturday sunday today tonight tomorrow"
)
# Words that describe what "it" is ("hard", "broken", "exhausting", "killing me") and, as
# adjectives, also stand before a noun ("its broken pole"): "it's" only when no noun follows.
_IT_IS_ADJECTIVES = (
    "hard easy tough rough fine good bad great nice awful terrible horrible ridiculous "
    "unacceptable annoying exhausting frustrating stressful upsetting hurtful disappointing "
    "embarrassing scary weird crazy cold hot freezing loud late early important urgent obvious "
    "clear possible impossible fair unfair true wrong right normal safe dangerous open ready "
    "free expensive tricky worse better easier harder serious difficult dark messy dirty gross "
    "disgusting sad funny broken taken stolen frozen forgotten written given hidden eaten"
)
_ITS_VERBS_ING = (
    "killing driving making taking costing starting happening raining hurting ruining becoming "
    "bothering stressing doing coming looking sounding turning affecting eating"
)
# A word that cannot start the noun phrase of a possessive: punctuation, the end, or a
# function word ("its broken again", "its hard to", "its late and").
_NO_NOUN_NEXT = (
    r"(?=\s*(?:[.,!?;:)]|$)|\s(?:to|for|that|and|but|or|so|because|if|when|i|you|we|he|she|"
    r"they|me|him|us|them|now|again|already|too|enough|at|in|on|by|with|of|from|since|"
    r"anymore|though|tho|tbh|honestly|lol|really|right|twice|once|every|all|yet|still|last|"
    r"this|\w{3,}ing)\b)"
)
_ITS_IS = (
    rf"\bits\b(?= (?:{'|'.join(_AFTER_IT_IS.split())}|kind of|sort of|"
    rf"(?:{'|'.join(_ITS_VERBS_ING.split())})\b|"
    rf"(?:{'|'.join(_IT_IS_ADJECTIVES.split())}|(?!(?:need|speed|hundred|hatred|breed|greed|"
    rf"seed|feed|shed|creed)\b)\w{{2,}}ed)\b{_NO_NOUN_NEXT})\b(?!-))"
)
# What may stand before a proposing "lets": the start, a stop or comma, or a word that opens a
# proposal. Checked on the few characters before it (a lookbehind per word on every position
# of every draft cost 20 us a call).
_LETS_BEFORE_RE = re.compile(r"(?:^|[.!?,] |(?:^|[^\w'])(?:so|then|okay|now|maybe|yeah) )$")


def _proposes(m: re.Match[str]) -> bool:
    start = m.start()
    return start == 0 or bool(_LETS_BEFORE_RE.search(m.string[max(0, start - 8) : start]))


# Forms that depend on their neighbours ("ill" before a verb, "its" before an adjective).
_TEXTING: tuple[tuple[str, str | Callable[[re.Match[str]], str]], ...] = (
    (r"\bi'?m\b", "i'm"),
    (r"\bill\b(?= \w+)", "i'll"),
    # "its" for "it's" only where the possessive cannot be meant (_ITS_IS): never before a
    # noun, so "the team and its goals" keeps its possessive.
    (_ITS_IS, "it's"),
    # "your" for "you're" where no possession can follow ("your being", "your so").
    (
        r"\byour\b(?= (?:being|so|not|always|never|right|wrong|welcome|kidding|joking|lying)\b)",
        "you're",
    ),
    # "lets" with no subject before it proposes ("so lets try"); "he lets me" is left alone.
    (r"\blets\b", lambda m: "let's" if _proposes(m) else "lets"),
)
_TEXTING_RE = [(re.compile(p), r) for p, r in _TEXTING]


# Emoji (and the joiners and variation selectors that build them) as their own words, so that
# one typed against a word or a stop hides neither ("tonight🙏", "thanks.😊 Also").
_EMOJI_RE = re.compile(
    "[\u2600-\u27bf\U0001f000-\U0001faff][\u200d\ufe0f\U0001f3fb-\U0001f3ff"
    "\u2600-\u27bf\U0001f000-\U0001faff]*"
)
# A line break after a word ends a sentence, as a stop would (phones send lines, not stops).
_LINE_END_RE = re.compile(r"(?<![.!?;:,\s])[ \t]*(?:\r?\n)+\s*")
_SPACE_BEFORE_MARK_RE = re.compile(r"\s+(?=[?!.,;:](?:\s|$))")


def normalise(text: str) -> str:
    """Lowercase, straight quotes, texting forms expanded, whitespace collapsed."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    if not text.isascii():
        text = _EMOJI_RE.sub(r" \g<0> ", text)
    if "\n" in text:
        text = _LINE_END_RE.sub(". ", text)
    text = _SPACE_BEFORE_MARK_RE.sub("", text.lower())
    text = re.sub(r"\s+", " ", text).strip()
    text = _WORD_FORMS_RE.sub(lambda m: _WORD_FORMS[m.group(0)], text)
    for pattern, replacement in _TEXTING_RE:
        text = pattern.sub(replacement, text)
    return text


def _alt(words: str | Iterable[str], phrases: Iterable[str] = ()) -> str:
    """A regex alternation, longest first; a string is split on whitespace into single words."""
    items = [*(words.split() if isinstance(words, str) else words), *phrases]
    return "(?:" + "|".join(re.escape(w) for w in sorted(items, key=len, reverse=True)) + ")"


FEELINGS = _alt(
    """worried worry worrying anxious anxiety nervous scared afraid frightened terrified fear
    stressed stress stressful overwhelmed overwhelming panicked panicky uneasy tense
    sad sadness upset hurt hurts heartbroken depressed lonely isolated
    frustrated frustrating frustration angry anger mad furious annoyed irritated resentful
    bitter disappointed disappointing discouraged hopeless helpless powerless
    embarrassed ashamed guilty humiliated insecure jealous uncomfortable awkward confused
    exhausted drained tired happy glad relieved excited grateful thankful hopeful proud calm
    comfortable appreciated unappreciated invisible dismissed unheard unimportant
    disrespected ignored torn shocked devastated crushed miserable gutted dread dreading
    trapped""",
    [
        "on edge",
        "left out",
        "worn out",
        "burnt out",
        "burned out",
        "fed up",
        "taken for granted",
        "let down",
        "heavy",
        "alone",
    ],
)
# Words that name a judgment of the other person rather than a feeling of the speaker.
JUDGMENT_FEELINGS = _alt(
    "ignored disrespected unappreciated dismissed invisible unheard unimportant used "
    "manipulated betrayed attacked judged controlled"
)
LABELS = _alt(
    """lazy selfish rude inconsiderate irresponsible ridiculous childish immature useless
    pathetic stupid dumb idiot idiotic jerk careless disrespectful thoughtless clueless
    unreliable flaky insane crazy ungrateful entitled petty dramatic hypocrite hypocritical
    controlling toxic awful terrible horrible disgusting unacceptable unbelievable unfair
    incompetent sloppy mean cheap"""
)
INSULTS = _alt(
    """idiot stupid dumb moron jerk pathetic loser useless asshole ass bitch crap shit
    damn hell wtf stfu ffs pig slob"""
)
ABSOLUTES = _alt(
    [
        "always",
        "never",
        "every single time",
        "every time",
        "constantly",
        "all the time",
        "each and every",
        "nothing",
        "everything",
        "no one",
        "nobody",
        "forever",
        "literally",
        "100 times",
        "a million times",
        "a hundred times",
        "a thousand times",
    ]
)
NUMBER_WORDS = _alt(
    """one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty
    forty fifty hundred twice once half first second third fourth fifth"""
)
TIME_WORDS = _alt(
    """yesterday today tonight tomorrow monday tuesday wednesday thursday friday saturday sunday
    mondays tuesdays wednesdays thursdays fridays saturdays sundays
    weekend weekends morning mornings evening evenings night nights noon midnight week weeks
    month months year years day days hour hours minute minutes times o'clock am pm
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec
    lately recently since ago until last past"""
)
VAGUE = _alt(
    [
        "stuff",
        "things",
        "this whole thing",
        "the whole thing",
        "whatever",
        "some issues",
        "some things",
        "lately",
        "sometimes",
        "a lot",
        "you know what i mean",
        "you know what",
        "and everything",
        "or something",
        "this situation",
        "the situation",
    ]
)
HEDGES = _alt(
    [
        "maybe",
        "perhaps",
        "possibly",
        "i guess",
        "i suppose",
        "i think maybe",
        "kind of",
        "sort of",
        "a little",
        "a bit",
        "i'm not sure",
        "not sure",
        "i don't know",
        "if that's okay",
        "if it's okay",
        "if that's alright",
        "if it's alright",
        "if that's fine",
        "if you don't mind",
        "if you want",
        "if possible",
        "if you can",
        "only if",
        "no pressure",
        "no worries if not",
        "it's fine if not",
        "it's okay if not",
        "totally fine if not",
        "no big deal",
        "or not",
        "i mean",
        "um",
        "uh",
        "umm",
        "hmm",
        "like,",
        "probably",
        "might",
        "any chance",
        "would it be possible",
        "i was wondering",
        "i hate to",
        "i hate asking",
        "i know it's a lot",
        "i know this is a lot",
        "i don't want to be a bother",
        "i don't mean to",
    ]
)
APOLOGIES = _alt(
    ["sorry", "i apologize", "i apologise", "apologies", "my bad", "forgive me", "my fault"]
)
SELF_DOWN = _alt(
    [
        "i'm bad at",
        "i'm terrible at",
        "i'm probably wrong",
        "i'm probably overreacting",
        "i might be overreacting",
        "i'm overreacting",
        "i know i'm being",
        "this is dumb",
        "this is stupid",
        "i'm being silly",
        "i'm being dramatic",
        "i'm being annoying",
        "i'm such a",
        "i feel bad asking",
        "i feel bad even",
        "i'm begging",
        "please please",
        "i beg you",
    ]
)
GIVE_UP = _alt(
    [
        "forget it",
        "never mind",
        "nevermind",
        "forget i said",
        "forget i asked",
        "doesn't matter",
        "it doesn't matter",
        "don't worry about it",
        "i give up",
        "whatever you want",
        "you're right",
        "you're probably right",
        "i guess you're right",
        "fine then",
        "okay fine",
        "ok fine",
        "let it go",
        "i'll just do it myself",
        "i'll deal with it",
        "i'll manage",
        "forget about it",
        "whatever you think",
        "you know best",
        "you know your",
        "anyway whatever",
        "no worries",
        "i guess i'll just",
        "i'll just do it all",
        "that's totally ok",
        "that's totally okay",
        "that's totally fine",
        "totally fine if",
        "totally okay if",
        "if it's not possible",
        "if you can't, that's",
        "not a big deal",
        "not important",
        "do what you want",
        "do whatever you want",
        "whatever makes you happy",
        "i'll stop asking",
        "i'll stop bringing it up",
        "i'll drop it",
        "i'll find someone else",
        "i can find someone else",
        "i'll ask someone else",
        "not like i can",
        "it's fine i guess",
        "that's fine i guess",
        "i guess it's fine",
        "never mind then",
        "forget i mentioned",
        "just leave it",
    ]
)
SARCASM = _alt(
    [
        "oh sure",
        "oh yeah",
        "yeah right",
        "sure you",
        "oh really",
        "oh great",
        "oh wow",
        "wow,",
        "wow.",
        "must be nice",
        "thanks a lot",
        "thanks for nothing",
        "great job",
        "nice job",
        "good for you",
        "how nice",
        "how convenient",
        "of course you",
        "clearly you",
        "obviously you",
        "nice try",
        "big surprise",
        "what a surprise",
        "congrats",
        "so your",
        "so now",
        "an excuse now",
        "sure, jan",
        "real mature",
        "very mature",
        "so mature",
        "shocker",
        "🙄",
    ]
)
COUNTER = _alt(
    [
        "you're one to talk",
        "look who's talking",
        "what about you",
        "what about when you",
        "at least i",
        "you do it too",
        "you did it too",
        "you're the one who",
        "you're the one that",
        "you're the one",
        "like you ever",
        "you people",
        "what is wrong with you",
        "what's wrong with you",
        "you lied",
        "you're lying",
        "you just have",
        "everyone can see",
        "everybody knows",
        "the worst",
        "a scam",
        "a joke",
        "as if you",
        "you have no right",
        "how dare you",
        "who are you to",
        "you can talk",
        "don't you dare",
        "shut up",
        "excuse me?",
        "seriously?",
        "are you kidding",
        "are you serious",
        "you always do this",
        "that's rich",
        "you of all people",
        "typical",
        "you're such a",
        "come on",
        "don't give me",
        "you are such a",
        "you're so",
        "you are so",
        "that's not true",
        "that's a lie",
        "i never said",
        "i didn't say",
        "that's not what",
        "stop twisting",
    ]
)
PAST = _alt(
    [
        "remember when",
        "remember how",
        "remember that",
        "back when",
        "back in",
        "this is just like",
        "just like when",
        "same thing you did",
        "you did the same",
        "like last time",
        "since we were",
        "since i was",
        "when i was a kid",
        "growing up",
        "you've always been",
        "you were always",
    ]
)
BROKEN_RECORD = _alt(
    [
        "i hear you",
        "i hear that",
        "i understand",
        "i get that",
        "i get it",
        "i know that",
        "i know you",
        "i see that",
        "i see why",
        "that may be",
        "that might be",
        "that's fair",
        "fair enough",
        "either way",
        "regardless",
        "even so",
        "still",
        "that's a separate",
        "that's a different",
        "we can talk about that",
        "we can talk about that later",
        "back to",
        "right now i'm",
        "what i'm asking",
        "what i'm asking for",
        "my point is",
        "the point is",
        "i'm not trying to",
        "that's not what this is about",
        "i'm talking about",
        "i'm asking about",
    ]
)

# What a first-person "I want / I need / I'd like" may not be followed by to make an ask:
# wanting to talk about it, to say or know something, or a feeling ("I'd like to think").
_NOT_AN_ASK = (
    r"to (?:talk|give|mention|discuss|bring|say|ask|know|share|vent|think|believe|point|"
    r"explain|understand|apologi[sz]e|check in)\b|that\.|that,|that too|it too"
)
_ASKED_OBJECT = r"\w+"

_P = re.compile
# Each entry: (feature name, compiled pattern). Counted as number of matches.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # --- describe
    ("d_digit", _P(r"\$?\b\d[\d,.:]*(?:st|nd|rd|th|am|pm|%)?")),
    ("d_number_word", _P(rf"\b{NUMBER_WORDS}\b")),
    ("d_time", _P(rf"\b{TIME_WORDS}\b")),
    (
        "d_count",
        _P(
            rf"\b(?:\d+|{NUMBER_WORDS}|several|a few|few|many|multiple) (?:times|days|"
            r"nights|weeks|months|hours|minutes|mornings|evenings|weekends|shifts|"
            r"meetings|texts|calls|messages|emails|bills|payments|dollars|bucks)\b"
        ),
    ),
    (
        "d_last_n",
        _P(
            rf"\b(?:(?:the|our|my|your|his|her|their) (?:last|past|first) (?:\d+|{NUMBER_WORDS}|"
            rf"few|couple)|(?:\d+|{NUMBER_WORDS}) (?:of|out of) (?:the|our|my|your) "
            r"(?:last|past))\b"
        ),
    ),
    (
        "d_past_verb",
        _P(
            r"\b(?:was|were|had|has been|have been|did|came|went|left|got|said|told|took|"
            r"ended|missed|spent|paid|sent|brought|forgot|broke|lost|kept|ate|drove|"
            r"is still|are still|still (?:has|have|had|hasn't|haven't|isn't|aren't)|"
            r"(?!need|feel|seem|tired|worried|scared|stressed|frustrated|upset|excited|"
            r"interested|bored|annoyed|embarrassed|overwhelmed|exhausted)\w{2,}ed)\b"
        ),
    ),
    (
        "d_past_event",
        _P(
            r"\b(?:you|he|she|they|we|i|it|that|this)(?: (?:have|had|has|'ve|just|"
            r"already))? (?:\w+ed|said|told|came|went|left|forgot|took|made|got|"
            r"didn't|haven't|hasn't|weren't|wasn't|missed|skipped|paid|spent|"
            r"brought|gave|did|kept|ate|drove|sent|showed up|showed)\b"
        ),
    ),
    (
        "d_negated_fact",
        _P(
            r"\b(?:didn't|haven't|hasn't|wasn't|weren't|hadn't|never got|"
            r"hasn't been|still hasn't|still haven't|still not)\b"
        ),
    ),
    (
        "d_since_ago",
        _P(
            r"\b(?:since|ago|last (?:week|month|night|year|time|\w+day)|"
            r"this (?:week|month|morning|year|weekend)|for (?:the )?(?:past|last))\b"
        ),
    ),
    (
        "d_past_duration",
        _P(
            rf"\b(?:had|has been|have been|was|were|took|been|haven't|hasn't|didn't|hadn't|"
            rf"wasn't|weren't)\b[^.?!]{{0,60}}?\bfor (?:a|one|two|three|the past|the last|"
            rf"a couple of|a few|over a|{NUMBER_WORDS}|\d+) (?:week|weeks|month|months|days|day|"
            rf"years|year|hours|nights)\b"
        ),
    ),
    ("d_absolute", _P(rf"\b{ABSOLUTES}\b")),
    ("d_label", _P(rf"\b{LABELS}\b")),
    (
        "d_you_are_label",
        _P(
            rf"\byou(?:'re| are| were| always| just| seem| act)(?: so| being| just| honestly|"
            rf" literally| actually| seriously| always| really| such an?| acting| totally|"
            rf" completely)* {LABELS}\b"
        ),
    ),
    (
        "d_motive",
        _P(
            r"\b(?:you don't care|you do(?:n't|) even care|you just want|you only care|"
            r"you obviously|you clearly|you're trying to|you think you|you want me to|"
            r"on purpose|you don't respect|you don't value|you don't listen|"
            r"you never listen|you don't think|you just don't)\b"
        ),
    ),
    ("d_vague", _P(rf"\b{VAGUE}\b")),
    # --- express
    ("e_feel_word", _P(rf"\b{FEELINGS}\b")),
    (
        "e_i_feel_feeling",
        _P(
            rf"\bi(?:'m| am| feel| felt| get| got| have been| 've been|'ve been|"
            rf" was| been| keep feeling|'m feeling| am feeling|'ve been feeling)"
            rf"(?: (?:so|really|very|pretty|quite|a bit|a little|kind of|"
            rf"sort of|incredibly|super|honestly|genuinely|just|getting|starting to"
            rf" feel|feeling|more and more|also|too|kind of|extremely|totally))*"
            rf" {FEELINGS}\b"
        ),
    ),
    (
        "e_makes_me",
        _P(
            rf"\b(?:it|this|that|it's|that's|this is|which)(?: (?:really|just|honestly|"
            rf"kind of))? (?:makes|made|is making|leaves|left|gets|has me|has made|"
            rf"keeps me) me(?: (?:feel|so|really|very|pretty|a bit|kind of|feeling))*"
            rf" {FEELINGS}\b"
        ),
    ),
    (
        "e_first_person_feeling",
        _P(
            rf"\b(?:i|i'm|i've|i'd|i'll|i was|me|my)\b"
            rf"(?:(?!\b(?:you|you're|he|she|they|he's|she's|they're)\b)[^.?!,;]){{0,40}}?"
            rf"\b{FEELINGS}\b"
            r"|\bi (?:really |just |do |still )?miss (?:you|us|talking|seeing|spending|having|"
            r"our|hanging|when|the way|being)\b"
            r"|\bi (?:feel|felt|'m feeling|am feeling)(?: so| really| very| pretty| a bit|"
            r" a little| kind of| just| honestly| quite)* (?:bad|terrible|awful|horrible|"
            r"sick|good|great|guilty|stuck|lost|small|stupid|alone)\b"
            r"|\b(?:it|this|that|which)(?: really| honestly| just| kind of)? (?:hurts|"
            r"hurt me|scares me|scared me|stresses me|stressed me|upsets me|upset me|"
            r"worries me|worried me|frightens me|saddens me|terrifies me|embarrassed me|"
            r"embarrasses me)\b"
        ),
    ),
    (
        "e_feeling_noun",
        _P(
            r"\b(?:my (?:anxiety|stress|feelings)|i'm scared|i'm worried|"
            r"i'm afraid|i'm hurt|i'm sad|i'm upset|i'm frustrated|i'm nervous|"
            r"i'm stressed|i'm anxious|i'm angry|i'm disappointed|i'm lonely|"
            r"i'm exhausted|i'm overwhelmed)\b"
        ),
    ),
    (
        "e_feel_like",
        _P(
            r"\bi (?:feel|felt|kind of feel|just feel|really feel|honestly feel)"
            r" (?:like|that|as if|as though|you|it's|it is|this is|that's|we)\b"
        ),
    ),
    (
        "e_judgment_feeling",
        _P(
            rf"\bi(?: feel| felt|'m feeling|'m| am| was| get| got)(?: so| really| very| kind of|"
            rf" just| always| being| getting)*"
            rf" {JUDGMENT_FEELINGS}\b"
        ),
    ),
    (
        "e_you_make_me",
        _P(
            rf"\byou(?: really| always| just)? (?:make|made|are making|drive|"
            rf"drove)(?: me)(?: (?:so|really|feel|crazy|insane|mad|furious|sick))*"
            rf"(?: {FEELINGS})?\b"
        ),
    ),
    (
        "e_vague",
        _P(
            r"\b(?:not (?:great|good|ok|okay|cool|fun|easy|fair) for me|hard for me|"
            r"bothers me|bugging me|gets to me|it's a lot|been a lot|not okay with me|"
            r"doesn't feel (?:good|great|right)|i don't love|i don't like|i hate|"
            r"kind of sucks|it sucks|this sucks|not fun|i'm not happy|i'm not okay|"
            r"it's been hard|it's hard|been rough|it's rough|weighing on me|on my mind|"
            r"it's annoying|so annoying|it's frustrating|it's stressful|it's upsetting|"
            r"it's hurtful|it's disappointing)\b"
        ),
    ),
    ("e_feel_any", _P(r"\bfeel(?:s|ing|ings)?\b|\bfelt\b")),
    # --- assert
    (
        "a_direct",
        _P(
            # A first-person want or need says what the speaker is after, whatever its object
            # ("I need cover for the last hour", "I'd like one night a week", "I want that you
            # tell me"); only wanting to talk, say or ask about it stops short of asking.
            r"\b(?:i(?:'d| would)(?: really| still| just| only| also)? (?:like|prefer) "
            rf"(?!{_NOT_AN_ASK}){_ASKED_OBJECT}|"
            r"i(?: really| still| just| do| absolutely| definitely| only| also)? (?:want|need) "
            rf"(?!{_NOT_AN_ASK}){_ASKED_OBJECT}|"
            # Terse and texting asks drop the "I": "Need it by Friday." "need u here at 9"
            r"(?:(?<=^)|(?<=[.!?;:] ))(?:still |really |and )?need (?!to\b)\w+|"
            # The ask named as such: "what I'm asking is...", "all I'm asking for",
            # "here's what I need", "my request is", "I would ask that" (formal)
            r"(?:what|all|the (?:one|only) thing) i(?:'m| am)(?: really| just| only)? asking|"
            r"here's what i(?:'m asking| am asking| need| want|'d like| would like)|"
            r"my (?:request|ask) (?:is|would be)|i (?:would |must |have to |'d )?ask "
            r"(?:that|you to)|i require|we require|i insist|"
            r"(?:it|this|that) (?:needs|has) to (?:stop|change|end|be done|happen)|"
            r"i'm (?:still |really |just |only |simply )?asking (?:you|for|that)|i am asking|"
            r"i'm requesting|i request|i expect|i'm going to need|"
            r"i will need|i'll need|let's|let us|i'm telling you|from now on|"
            r"going forward|from today|starting (?:today|tonight|tomorrow|now|next|this|"
            r"on|monday|tuesday|wednesday|thursday|friday|saturday|sunday)|"
            r"(?:can|could) we (?!talk|chat)\w+)\b"
        ),
    ),
    # "Kindly" is the request marker of formal and Indian English, as "please" is elsewhere.
    ("a_please", _P(r"\b(?:please|kindly)\b")),
    (
        "a_modal_q",
        _P(
            r"\b(?:can|could|will|would) you(?: please)? (?!be\b|imagine\b|believe\b|want\b|"
            r"not\b|even\b|maybe\b|possibly\b|perhaps\b|just\b)\w+"
        ),
    ),
    (
        "a_imperative",
        _P(
            r"(?:^|[.!?]\s+|[,;:]\s*(?:so |and |then |just )?)(?:please |just )?(?:stop|start|"
            r"call|text|send|pay|give|tell|let me|come|clean|do(?! you| we| i| they)|put|"
            r"take|bring|return|move|"
            r"pick|check|show|make sure|keep|leave|knock|ask|respond|reply|answer|"
            r"transfer|venmo|wash|turn|help|decide|sign|book|cancel|choose|talk to)"
            r"\b"
        ),
    ),
    (
        "a_refusal",
        _P(
            r"\b(?:no[,.]? i (?:can't|won't|'m not|am not|will not|cannot|don't)|"
            r"i(?:'m| am)(?: still| just| really| definitely)? not (?:going to|able to|"
            r"willing to|comfortable|\w+ing)|i won't|i will not|i can't(?:[.!]|$)|"
            r"but i can't|i can't (?:take|do|give|"
            r"lend|cover|make|come|pay|help|work|switch|host|keep|say yes)|i cannot|"
            r"my answer is no|the answer is no|i'm saying no|i have to say no|"
            r"i need to say no|i'm going to say no|i'll pass|i'm out|not this time|"
            r"(?:that|this|it) (?:doesn't|won't|isn't going to|is not going to) work "
            r"for me|no more|"
            # A no that names its limit without a verb: "I really can't this week", "I can
            # do Tuesdays, but not every day", and a want said in the negative: "I don't
            # want you texting while driving" (wanting not to talk about it is no refusal).
            r"i (?:really |just |still |honestly |simply )?(?:can't|cannot|won't) (?:this|"
            r"that|today|tonight|tomorrow|on|next|any ?more|\w+day)|"
            r"but not (?:every|this|on|today|tonight|again|any ?more|\w+days?)|"
            r"i (?:really |just |still |do )?(?:don't|do not) want (?!to\b)(?:you|it|this|that|"
            r"them|him|her|any|anyone|my|your|\w+ing))\b"
        ),
    ),
    (
        "a_deadline",
        _P(
            r"\bby (?:tonight|tomorrow|friday|monday|tuesday|wednesday|thursday|"
            r"saturday|sunday|the end|end of|next|this|\d)"
        ),
    ),
    (
        "a_hint",
        _P(
            r"\b(?:it would be (?:nice|great|good|helpful|cool)|it'd be (?:nice|great|good|"
            r"helpful|cool)|would be (?:nice|great|good|helpful) if|i was (?:wondering|"
            r"hoping|thinking)|just wondering|i wish|i'd love it if|if (?:only|someone|"
            r"somebody)|(?:wish|hoping|hope|could|would|if) (?:someone|somebody)|"
            r"do you think (?:you|maybe|we|it|there)|any chance|"
            r"is there any way|would it be possible|would you (?:mind|consider|maybe)|"
            r"could you maybe|can you maybe|maybe you could|maybe we could|you could maybe|"
            r"it might be (?:good|nice|better)|it'd help if|it would help if|"
            r"if you (?:could|can(?!')|get a chance|have time|don't mind)|"
            r"i don't know if you|not sure if you|might be nice|one of these days|"
            r"at some point|sometime|some time|when you get a chance|eventually)\b"
        ),
    ),
    # --- reinforce
    (
        "r_you_gain",
        _P(
            r"\b(?:you get (?:to|your|a (?!chance|minute|sec|moment)|an|the|more|some|back)|"
            r"you(?:'d| would| will|'ll| could|"
            r" can|'re going to| get to)"
            r"(?: (?:also|then|finally|actually|still|both|never|not|even))?"
            r" (?:have|get|be able|save|gain|keep|feel|enjoy|free up|avoid|know|follow|"
            r"sleep|relax|not have to|never have to|be free|be done|look|make|earn|"
            r"spend|see|hear|stop|skip|win)|you won't (?:have to|need to|be|get)|"
            r"you wouldn't have to|you don't have to|that way you|so you(?:'d| would|"
            r" can| could| won't| don't| get| have)|your (?:time|evenings|"
            r"weekends|mornings|money|sleep|stress|life|job|team|kids|health) "
            r"(?:would|will)|it (?:would|will|'ll|'d) (?:save|help|give|free|make "
            r"(?:it|things|your life|life) easier for) you|it'd (?:save|help|give|"
            r"free) you|which (?:means|gives|saves|frees) you|in return)\b"
        ),
    ),
    (
        "r_we_gain",
        _P(
            r"\b(?:we(?:'d| would| will|'ll| could| can)(?: (?:both|all|finally|"
            r"actually|also|then|each))? (?:have|get|be|enjoy|spend|save|avoid|stop|"
            r"argue|fight|feel|know|keep|not have to|never have to|do|go|finally)|"
            r"both of us|for both of us|for us both|for the two of us|our "
            r"(?:relationship|friendship|evenings|weekends|time)|the kids (?:would|"
            r"will|get)|the team (?:would|will|gets)|less (?:arguing|fighting|tension|"
            r"stress|nagging)|fewer (?:arguments|fights)|i'll (?:stop|quit|never|"
            r"happily|gladly|be happy to|be able to|have more|be less|be more|"
            r"be in a better|be way|be much|also)|i won't (?:have to|need to|nag|"
            r"bring|ask|bug|keep))\b"
        ),
    ),
    (
        "r_so_that",
        _P(
            r"(?:\b(?:that way|so that|which means|that means|it (?:also )?means|this means|"
            r"then|once [^.?!,]{3,40}),? (?:you|we|it|nothing|nobody|no one|everyone|the team|"
            r"the kids|"
            r"they|your|there's|there'd|there will)\b|\bso (?:nothing|everyone|the team|"
            r"the kids|your|we|you)\b|\binstead of (?:my|your|the|having|waiting|"
            r"\w+ing)\b|\bhanging over)"
        ),
    ),
    (
        "r_vague_benefit",
        _P(
            r"\b(?:it(?:'d| would| will|'ll) be (?:better|easier|good|nice|"
            r"great|best|helpful)|it would help|it'd help|things (?:would|will|"
            r"'d) (?:be|go|get)|everyone would|everybody would|better for "
            r"everyone|for everyone|good for everyone|it just makes sense|"
            r"makes (?:more )?sense|win[- ]win)\b"
        ),
    ),
    (
        "r_self_benefit",
        _P(
            r"\b(?:so i (?:can|could|don't|won't|would|'d|'m)|i(?:'d| would|'ll|"
            r" will) (?:feel|be) (?:so |much |a lot |way )?(?:better|happier|"
            r"less|more relaxed|relieved|calmer)|it would help me|it'd help me|"
            r"it (?:would|will) make me|for me\b|my (?:stress|anxiety|sleep|"
            r"sanity|life) would)\b"
        ),
    ),
    (
        "r_threat",
        _P(
            r"\b(?:or else|otherwise i(?:'ll| will| am|'m)|if you don't[^.?!]{0,60}"
            r"(?:i'll|i will|i'm going to|i am going to|i'm gonna)|i'll have to "
            r"(?:tell|report|move|leave|go to|call|take|involve|find)|i'm going to "
            r"(?:report|tell|move out|leave|quit|call|take this)|last chance|"
            r"or i(?:'ll| will|'m)|you'll regret|you'll be sorry|final warning|"
            r"that's it|we're done|i'm done)\b"
        ),
    ),
    (
        "r_consequence_if",
        _P(
            r"\bif (?:you|we)(?: can| could| do| did| would|'d|'re| are)?(?: just| "
            r"please| start| stop| agree| help| pay| let| keep)? [^.?!]{0,60}"
            r"(?:then|,) (?:you|we|i|it|that|things|everyone)(?:'d|'ll| would|"
            r" will| can| could| won't| wouldn't| don't have to| never have to)\b"
        ),
    ),
    # --- negotiate
    (
        "n_what_if",
        _P(
            r"\b(?:what if|how about|what about|how would you feel about|would you be (?:okay|"
            r"ok|open|willing|up for|fine)|are you (?:okay|open|willing|up for)|"
            r"could we (?:try|switch|alternate|split|trade|take turns|meet|"
            r"each|compromise)|can we (?:try|"
            r"switch|alternate|split|trade|take turns|meet|"
            r"each|compromise)|we could (?:try|do|switch|alternate|split|"
            r"trade|take turns|each|say|set|start|meet|pick)|let's (?:try|do|split|"
            r"alternate|take turns|say|meet|compromise|agree|set|trial|start|pick)|"
            r"i (?:suggest|propose)|my suggestion|one option|another option|"
            r"here's (?:an idea|my offer|what i can do|a thought|what i propose))\b"
        ),
    ),
    (
        "n_give_to_get",
        _P(
            r"\b(?:i(?:'ll|'d| will| would| can| could|'m happy to|'m willing to| "
            r"am willing to| am happy to|'d be happy to|'d be willing to|'m fine "
            r"with|'m okay with| don't mind)(?: (?:be|also|gladly|happily|even|"
            r"totally|definitely|then|still))? (?:happy to |willing to |glad to )?"
            r"(?:do|take|cover|pay|handle|give|cook|clean|drive|pick|help|split|"
            r"switch|trade|swap|make|host|watch|buy|work|stay|come|call|text|"
            r"check|wait|lend|bring|send|start|cut|go|meet|chip in|throw in|"
            r"put in|make up|swing by|pop in|throw|set up|sort|plan|book|organi[sz]e|"
            r"drop|pick up|keep|take care of|look after|babysit|have your|give you|"
            r"let you|make sure|handle)|i(?:'m| am) happy for (?:us|you) to|"
            r"i won't say|i'll also|in exchange|in return|as long as|on (?:the )?"
            r"condition|if you[^.?!]{0,50}i(?:'ll| will| can| could|'d)|"
            r"(?:or|and|also|instead,?) (?:i|we) (?:can|could|'ll|will|'d)|(?:or )?you could "
            r"(?:also |always )?\w+|i(?:'ll| will) have [^.?!]{0,40} (?:done|ready|finished)|"
            r"you (?:do|take|handle|pick)[^.?!]{0,40}and i(?:'ll| will| can| do|"
            r"'d)|i \w+[^.?!]{0,40}and you(?:'ll| will| can| could| take| do| handle| pick| "
            r"cover| get))\b"
        ),
    ),
    (
        "n_trial",
        _P(
            rf"\b(?:for (?:a|one|two|three|the next|the first|a couple of|a few|{NUMBER_WORDS}|"
            rf"\d+) (?:week|weeks|month|months|days|day|weekends|shifts|times)|"
            rf"trial|try it|give it a try|try this|as a test|check in after|"
            rf"see how it goes|revisit|every other|alternate|take turns|switch off|"
            rf"half (?:now|each|and half|up front|later|of (?:it|the (?:cost|bill|rent|price|"
            rf"money|amount|fee)))|halves|50/50|fifty[- ]fifty|"
            rf"split|halfway|meet (?:you )?in the middle|middle ground|"
            rf"instead|rather than|swap|trade|(?<!big )(?<!good )deal)\b"
        ),
    ),
    (
        "n_their_option",
        _P(
            r"\b(?:either [^.?!]{3,80} or |(?:\d+|\w+day) or (?:\d+|\w+day)\b[^.?!]{0,20}"
            r"(?:work|better|suit)|what (?:would|could|can|will|might) (?:work|be better|be "
            r"easier|make (?:it|this) (?:work|easier)) for you|what do you "
            r"(?:suggest|propose|think would work|need|want in return|"
            r"need from me)|what would you need|what would it take|what can "
            r"you (?:do|offer|manage)|which (?:works|would work|is better|"
            r"day|one|option)|which (?:would|do) you prefer|would you prefer|"
            r"would (?:that|this|it|\w+ing[^.?!]{0,40}) work|does (?:that|this) work|"
            r"(?:\w+day|morning|evening|week|weekend|option)"
            r" or (?:\w+day|morning|evening|week|weekend|option)|"
            r"when (?:would|could|can) you|how much (?:can|could) you|"
            r"what time (?:works|would work)|is there a (?:time|day|way) "
            r"that works)\b"
        ),
    ),
    (
        "n_vague",
        _P(
            r"\b(?:figure (?:something|this|it) out|work (?:something|this|it) out|"
            r"find (?:a|some) (?:way|solution|middle ground|compromise)|come up with "
            r"something|some kind of (?:compromise|arrangement|deal|agreement)|"
            r"compromise|meet halfway|open to (?:ideas|suggestions|options|"
            r"anything)|talk about it|we can talk|work together|sort (?:it|this) out|"
            r"find a (?:fix|middle)|some sort of|something that works|"
            r"something fair|maybe we can|maybe we could|i'm flexible|flexible)\b"
        ),
    ),
    # --- mindful
    ("m_insult", _P(rf"\b{INSULTS}\b")),
    ("m_sarcasm", _P(rf"(?:^|\b|\s){SARCASM}")),
    ("m_counter", _P(rf"\b{COUNTER}")),
    ("m_past", _P(rf"\b{PAST}\b")),
    # "Fine," gives up at the start of a clause; "an email is fine." does not.
    ("m_give_up", _P(rf"(?:^|\b|\s){GIVE_UP}|(?:^|[.!?;]\s*)(?:okay,? )?(?:fine|whatever)[,.!]")),
    ("m_broken_record", _P(rf"\b{BROKEN_RECORD}\b")),
    (
        "m_defend",
        _P(
            r"\b(?:i did(?:n't| not)|i never|that's not (?:true|fair|what)|i was not|"
            r"i wasn't|i do (?:so|too)|i have too|not my fault|it's not my fault|"
            r"how is (?:that|this|it) my|why is it always me|why do i always|"
            r"why are you|why do you|why would you|why can't you|why don't you)\b"
        ),
    ),
    ("m_exclaim", _P(r"!{2,}|\?{2,}|[!?]{3,}|\?!|!\?")),
    (
        "m_accuse",
        _P(
            r"\b(?:you(?:'re| are)(?: just| probably| clearly| obviously)? (?:lying|"
            r"trying to|making excuses|doing this on purpose|not listening)|you just "
            r"(?:want|don't|can't|have)|you clearly|you obviously|you always have to|"
            r"who does that|what kind of|do you even|are you even|how hard is it|"
            r"is it that hard|how many times)\b"
        ),
    ),
    # --- confident
    ("c_hedge", _P(rf"(?:^|\b|\s){HEDGES}(?:\b|\s|$)")),
    # "just" softens ("just wondering") as often as it insists ("just ask me first"): its own
    # cue, so that the classifier weighs it apart from the plain hedges.
    ("c_just", _P(r"\bjust\b")),
    ("c_apology", _P(rf"\b{APOLOGIES}\b")),
    ("c_self_down", _P(rf"\b{SELF_DOWN}")),
    ("c_trail", _P(r"\.\.\.|…|\blol\b|\bhaha\b")),
    (
        "c_permission",
        _P(
            r"\b(?:is that okay|is that alright|would that be okay|if that's "
            r"okay|if that's alright|if it's okay|is it okay if|do you mind|"
            r"would you mind|if you don't mind|if you're okay with|hope that's "
            r"okay|hope that's fine|hope it's okay|right\?|does that make sense)"
            r"\b"
        ),
    ),
    (
        "c_firm",
        _P(
            r"\b(?:i need|i want|i'd like|i will|i won't|i'm not|i expect|i've decided|"
            r"i am asking|i'm asking|please|by (?:\w+day|tonight|tomorrow)|my answer)\b"
        ),
    ),
)

# Which features each skill's classifier reads: its own cue family plus shared shape cues.
# The states also read the cues that most often break them (attacks and hedges cut across).
# Message length is left out on purpose: in a bank longer messages use more skills, but a
# short, clear request is still strong, and length would teach the opposite.
GROUPS: dict[str, tuple[str, ...]] = {
    "describe": ("d_", "e_feel_like", "e_you_make_me", "m_insult", "shape_"),
    "express": ("e_", "d_label", "d_motive", "shape_"),
    "assert": ("a_", "c_hedge", "c_permission", "m_give_up", "shape_"),
    "reinforce": ("r_", "n_give_to_get", "shape_"),
    "negotiate": ("n_", "r_consequence_if", "a_modal_q", "shape_"),
    "mindful": (
        "m_",
        "d_label",
        "d_you_are_label",
        "d_motive",
        "d_absolute",
        "e_you_make_me",
        "r_threat",
        "partner_",
        "goal_",
        "shape_",
    ),
    "confident": (
        "c_",
        "m_give_up",
        "m_insult",
        "m_exclaim",
        "m_sarcasm",
        "m_caps_words",
        "a_",
        "shape_",
        "partner_",
    ),
}

_WORD_RE = re.compile(r"[a-z']+")
_ACRONYMS = frozenset(
    re.findall(
        r"\S+",
        """ASAP OK OKAY TV HR PTO CEO ETA FYI ID ER GP DM IT PM AM USA UK EU NYC BBQ DIY
        RSVP IOU PhD MBA SUV ATM PIN GPS ADHD OCD PTSD IBS MRI ICU""",
    )
)
_STOP = frozenset(
    re.findall(
        r"\S+",
        """a an the i you me my your we our us to of and or but so if in on at for with it it's is
    are was were be been this that these those do does did don't not no yes just i'm you're
    can could would will i'd i'll have has had about from up out what when how why who get
    got go going want need like really very okay""",
    )
)


_SUFFIXES = (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""))


@cache
def _stem(word: str) -> str:
    """A rough stem, so that a goal's and a message's forms of a word meet ("refunded" and
    "refund", "day's" and "day", "replies" and "reply", "dates" and "date")."""
    word = word.removesuffix("'s")
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + repl
            break
    return word.removesuffix("e")[:7]


def _content_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD_RE.findall(text) if w not in _STOP and len(w) > 2}


def _overlap(a: set[str], b: Set[str]) -> float:
    return len(a & b) / len(a) if a else 0.0


_PARTNER_ATTACK_RE = re.compile(
    rf"\b(?:{LABELS}|{INSULTS}|{ABSOLUTES})\b|you(?:'re| are) (?:so|always|such)|"
    r"why (?:do|are|can't) you"
)


# The context's cues, the same for every draft of a turn (the partner's last words) and of a
# conversation (its goal and situation): worked out once, not for each draft.
@lru_cache(maxsize=1024)
def _partner_cues(partner_said: str) -> tuple[frozenset[str], bool]:
    """The partner's content words, and whether their words attack (labels, insults...)."""
    said = normalise(partner_said)
    attack = bool(partner_said) and bool(_PARTNER_ATTACK_RE.search(said))
    return frozenset(_content_words(said)), attack


@lru_cache(maxsize=1024)
def _aim_words(goal: str, situation: str) -> frozenset[str]:
    return frozenset(_content_words(normalise(goal + " " + situation)))


@dataclass(frozen=True)
class Cues:
    """The normalised message, the value of every named cue and the first text each matched."""

    text: str
    values: dict[str, float]
    evidence: dict[str, str]

    def quote(self, *names: str) -> str:
        """The first matched text among the given cues, or ''."""
        for name in names:
            if self.evidence.get(name):
                return self.evidence[name].strip(" ,.")
        return ""

    def fired(self, prefix: str) -> list[str]:
        """Names of the cues with this prefix that are present, strongest first."""
        hits = [(v, k) for k, v in self.values.items() if k.startswith(prefix) and v > 0]
        return [k for _, k in sorted(hits, reverse=True)]


def extract(text: str, *, partner_said: str = "", goal: str = "", situation: str = "") -> Cues:
    """Compute every rubric cue for a message in its context."""
    return _extract(text, partner_said, goal, situation)


_SENTENCE_END_RE = re.compile(r"[.!?;]+(?:\s|$)")
# A question typed without its question mark ("can u cover friday"): a clause that opens with
# an auxiliary and a subject and ends in a stop or the end of the message.
_BARE_QUESTION_RE = re.compile(
    r"(?:^|[.!;,]\s+)(?:(?:hey|so|ok|okay|and|but|also|then)\s+)?"
    r"(?:can|could|would|will|do|does|did|is|are|should|may) "
    r"(?:you|we|i|it|that|this|they|he|she|someone|anyone)\b[^.?!;]*(?=[.!;]|$)"
)
_EVENT_CUES = frozenset({"d_past_event", "d_negated_fact", "d_past_verb", "d_past_duration"})
_WHEN_CUES = frozenset(
    {"d_digit", "d_number_word", "d_time", "d_count", "d_last_n", "d_since_ago", "d_past_duration"}
)


@lru_cache(maxsize=4096)
def _extract(text: str, partner_said: str, goal: str, situation: str) -> Cues:
    norm = normalise(text)
    values: dict[str, float] = {}
    evidence: dict[str, str] = {}
    # Sentence numbers of the event and when cues, to tell a dated fact ("you were late on
    # Monday") from an event and a time word that merely share a message.
    bounds = [m.end() for m in _SENTENCE_END_RE.finditer(norm)]
    events: set[int] = set()
    whens: set[int] = set()
    for name, pattern in PATTERNS:
        found = [m for m in pattern.finditer(norm)]
        values[name] = float(len(found))
        if found:
            evidence[name] = found[0].group(0)
            if name in _EVENT_CUES or name in _WHEN_CUES:
                into = events if name in _EVENT_CUES else whens
                into.update(bisect.bisect_right(bounds, m.start()) for m in found)
    values["d_dated_event"] = float(len(events & whens))
    raw_words = re.findall(r"[A-Za-z']+", text)
    words = _WORD_RE.findall(norm)
    n_words = max(len(words), 1)
    sentences = max(len(re.findall(r"[.!?]+(?:\s|$)", text.strip() + " ")), 1)
    # Shouting: an all-caps word of three letters or more that is not a common acronym.
    caps = [
        w
        for w in (re.sub(r"'\w*$", "", w) for w in raw_words)
        if len(w) > 2 and w.isupper() and w not in _ACRONYMS
    ]
    values.update(
        {
            "shape_log_words": math.log1p(len(words)),
            "shape_sentences": float(min(sentences, 8)),
            "shape_questions": float(text.count("?") + len(_BARE_QUESTION_RE.findall(norm))),
            "shape_exclaims": float(text.count("!")),
            # Shouting is tone: read by Mindful and Confident only (GROUPS), not as evidence
            # for or against the facts, the ask, the gain or the offer.
            "m_caps_words": float(len(caps)),
            "shape_lowercase_start": float(bool(text[:1]) and text[:1].islower()),
            "shape_you_ratio": sum(w in ("you", "you're", "your", "you've") for w in words)
            / n_words,
            "shape_i_ratio": sum(
                w in ("i", "i'm", "i've", "i'd", "i'll", "me", "my") for w in words
            )
            / n_words,
        }
    )
    # A duration told as a past fact is not a trial period on offer (negotiate).
    if values["d_past_duration"] and values["n_trial"]:
        values["n_trial"] = max(values["n_trial"] - values["d_past_duration"], 0.0)
        if not values["n_trial"]:
            evidence.pop("n_trial", None)
    mine = _content_words(norm)
    partner, attack = _partner_cues(partner_said)
    aim = _aim_words(goal, situation)
    values.update(
        {
            "partner_none": float(not partner_said.strip()),
            "partner_overlap": _overlap(mine, partner),
            "partner_attack": float(attack),
            "goal_overlap": _overlap(mine, aim),
            "goal_offtopic": float(bool(mine) and _overlap(mine, aim) == 0 and bool(aim)),
        }
    )
    return Cues(text=norm, values=values, evidence=evidence)


_LENGTH = frozenset({"shape_log_words", "shape_sentences"})
FEATURE_NAMES: tuple[str, ...] = tuple(extract("x", partner_said="y", goal="z").values)


@cache
def names_for(skill: str) -> tuple[str, ...]:
    """The cue names the given skill's classifier reads."""
    prefixes = GROUPS[skill]
    return tuple(n for n in FEATURE_NAMES if n.startswith(prefixes) and n not in _LENGTH)
