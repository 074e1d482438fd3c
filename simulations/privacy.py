"""Spot identifying details in a learner's situation text and offer to take them out.

Situations should name the relationship ("my boss") and the behaviour, never the person. This
module finds what slips through: personal names, e-mail addresses, phone numbers, social-media
handles, street addresses, postcodes and place names, and rewrites the text with neutral words.
It errs towards silence on ordinary sentences ("My boss", "Mom", "on Monday", "in March"): a
warning that fires on everything teaches learners to ignore it. Pure: no Django, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# How a finding reads once removed. Names get words that keep the sentence readable; contact
# details and places get a bracketed tag so the learner sees something was taken out.
_TAGS = {
    "email": "[email]",
    "phone": "[phone number]",
    "handle": "[username]",
    "address": "[address]",
    "postcode": "[postcode]",
    "place": "[place]",
}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


@dataclass(frozen=True)
class Finding:
    """One identifying detail: its kind, the span `redact` replaces, and the detail itself.

    ``span`` may be wider than ``value`` (" named Sam" for the name "Sam") so that removing it
    leaves a fluent sentence; ``replacement`` is what `redact` puts there.
    """

    kind: str
    span: tuple[int, int]
    value: str
    replacement: str = ""


RELATIONS = _words(
    "mom mum mother mommy mummy dad father daddy stepmom stepmum stepdad stepmother stepfather "
    "parents parent brother sister sibling siblings son daughter kid kids child children "
    "grandma grandmother grandpa grandfather granny nana aunt auntie uncle cousin niece nephew "
    "husband wife partner spouse fiance fiancee boyfriend girlfriend ex "
    "friend friends bff roommate roommates flatmate housemate neighbor neighbour neighbors "
    "neighbours landlord landlady tenant boss manager supervisor lead coworker co-worker "
    "colleague colleagues teammate report assistant intern client customer teacher professor "
    "tutor coach doctor therapist classmate mentor coworkers in-law in-laws sister-in-law "
    "brother-in-law mother-in-law father-in-law"
)
_RELATION_SET = {r.lower() for r in RELATIONS}

# Capitalised words that are ordinary in these texts and must never be flagged as names or places.
COMMON_CAPITALISED = _words(
    "I I'm I've I'll I'd Im Ive OK Ok Okay "
    "Mom Mum Dad Mommy Mummy Daddy Mama Mamma Papa Ma Pa Grandma Grandpa Granny Gran Nana "
    "Nan Grandad Granddad Grandmother Grandfather Mother Father Sister Brother Aunt Auntie "
    "Uncle Cousin Boss Manager Supervisor Husband Wife Partner Son Daughter Sis Bro Babe "
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday Mondays Tuesdays Wednesdays "
    "Thursdays Fridays Saturdays Sundays Mon Tue Tues Wed Thu Thur Thurs Fri Sat Sun "
    "January February March April May June July August September October November December "
    "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec "
    "Christmas Xmas Easter Thanksgiving Halloween Ramadan Eid Diwali Hanukkah Passover Lent "
    "New Year Years Eve Valentine Valentine's Day Mother's Father's "
    "God Lord Jesus Allah Bible Church "
    "English Spanish French German Italian Chinese Japanese Korean Hindi Arabic Portuguese "
    "Russian Polish Dutch Greek Turkish Vietnamese American British Canadian Mexican Indian "
    "Irish Scottish Welsh Australian African European Asian Latino Latina Black White "
    "TV Internet Wi-Fi WiFi Zoom Teams Slack Google Gmail WhatsApp Facebook Instagram TikTok "
    "Snapchat Twitter YouTube Netflix Spotify Uber Lyft Amazon Venmo PayPal iPhone Android "
    "Xbox PlayStation Nintendo Excel Word PowerPoint Outlook Discord Reddit LinkedIn "
    "HR IT PTO CEO CFO DBT DEAR MAN ASAP FYI PS AM PM "
    "Yes No Please Thanks Thank Sorry Hi Hey Hello Dear Also And But So Then When If "
    "Because Maybe Just Well Oh Um Uh Ugh Wow Fine Sure Really Honestly Actually Anyway "
    "Mr Mrs Ms Miss Mx Dr Prof Professor Coach Sir Madam Ma'am Mister Missus "
    "Math Maths Science History Biology Chemistry Physics Art Music PE "
    "The A An This That These Those It Its We You He She They Me Him Us Them My Our Your "
    "His Her Their What Why How Who Where Which Not Never Always Everyone Everybody Nobody"
)

# A small list of common first names from many places, used even at the start of a sentence.
# Names that are also everyday words (Will, May, Hope, Mark, Bill, Rose, Grace...) are left out:
# they are caught only after a cue such as "my friend" or "named".
FIRST_NAMES = _words(
    "James John Robert Michael David William Richard Joseph Thomas Charles Christopher Daniel "
    "Matthew Anthony Steven Paul Andrew Joshua Kenneth Kevin Brian George Timothy Ronald "
    "Jason Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon "
    "Benjamin Samuel Gregory Alexander Patrick Jack Dennis Tyler Aaron Jose Adam Nathan "
    "Henry Zachary Peter Kyle Noah Ethan Jeremy Christian Sean Austin Dylan Jordan Liam "
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy "
    "Betty Sandra Margaret Ashley Kimberly Emily Donna Michelle Carol Amanda Melissa Deborah "
    "Stephanie Rebecca Sharon Laura Cynthia Amy Kathleen Angela Shirley Brenda Emma Anna "
    "Nicole Helen Samantha Katherine Christine Debra Rachel Carolyn Janet Maria Olivia "
    "Heather Catherine Diane Julie Victoria Kelly Christina Lauren Megan Hannah Sophia "
    "Isabella Ava Mia Chloe Zoe Natalie Jasmine Tom Tommy Mike Dave Steve Jim Jimmy Joe "
    "Bob Bobby Tony Chris Matt Nick Dan Danny Ben Sam Alex Josh Andy Jake Luke Kate Katie "
    "Jen Jenny Liz Beth Becky Meg Ellie Sophie Lucy Molly Abby Jess "
    "Mohammed Muhammad Ahmed Ali Omar Hassan Fatima Aisha Layla Yusuf Ibrahim Khalid "
    "Priya Rahul Amit Ravi Anil Sunita Deepak Arjun Ananya Pooja Neha Vikram Raj Sanjay "
    "Wei Li Jing Ming Hui Yan Chen Hiroshi Yuki Kenji Min-jun Ji-woo Seo-yeon "
    "Juan Carlos Luis Miguel Javier Diego Alejandro Sofia Camila Valentina Lucia Carmen "
    "Ana Rosa Pedro Pablo Mateo Santiago Gabriel Rafael Elena Isabel "
    "Kwame Kofi Amara Chidi Ngozi Oluwaseun Tunde Ayodele Zanele Thabo "
    "Olga Ivan Dmitri Sergei Natasha Anastasia Katya Pierre Jean Marie Hans Klaus Giulia "
    "Marco Luca Francesca Lars Sven Ingrid Freya Siobhan Aoife Niamh Connor Declan Callum"
)

_HONORIFIC_ROLES = {
    "dr": "doctor",
    "doctor": "doctor",
    "prof": "professor",
    "professor": "professor",
    "coach": "coach",
    "aunt": "aunt",
    "auntie": "aunt",
    "uncle": "uncle",
    "grandma": "grandma",
    "grandpa": "grandpa",
    "mr": "",
    "mrs": "",
    "ms": "",
    "miss": "",
    "mx": "",
    "sir": "",
    "madam": "",
}

_CAP = r"[A-Z][a-z]+(?:-[A-Z]?[a-z]+|'[A-Z][a-z]+)*"
_NAME = rf"{_CAP}(?:\s+{_CAP})?"

_EMAIL = re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_HANDLE = re.compile(r"(?<![\w@.])@[A-Za-z0-9_][A-Za-z0-9_.]{2,29}\b")
_PHONE = re.compile(
    r"(?<![\w/.,:$£€])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,5}\)[\s.-]?)?\d{2,11}(?:[\s.-]\d{2,8}){0,4}"
    r"(?![\w/:])"
)
_STREET_WORDS = (
    "Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Boulevard|Blvd|Court|Ct|Place|Way|Terrace|"
    "Close|Crescent|Square|Highway|Hwy|Parkway|Pkwy|Gardens|Grove|Row|Walk|Hill"
)
_ADDRESS_NUMBERED = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?\s+(?:{_CAP}\s+){{1,3}}(?:{_STREET_WORDS})\b\.?"
    r"(?:,?\s*(?:Apt|Apartment|Unit|Flat|Suite)\.?\s*#?\w+)?"
)
_ADDRESS_NAMED = re.compile(
    rf"\b(?:{_CAP}\s+){{1,2}}(?:Street|Road|Avenue|Lane|Drive|Boulevard|Terrace|Crescent|"
    r"Highway|Parkway)\b"
)
_POSTCODE = re.compile(
    r"\b(?P<code>[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}"  # UK
    r"|[A-Z]\d[A-Z]\s?\d[A-Z]\d"  # Canada
    r"|[A-Z]{2}\s\d{5}(?:-\d{4})?)\b"  # US state + ZIP
    r"|(?i:\b(?:zip|zip\s?code|post\s?code|postal\s?code)(?:\s+is)?\s*:?\s*)"
    r"(?P<cued>[A-Z0-9](?:[A-Z0-9 -]{1,8}[A-Z0-9])?)\b"
)
_PLACE_CUE = re.compile(
    r"\b(?:in|near|from|at|(?:moved|moving|move|trip|flew|fly|drive|drove|went|go|going|"
    r"walk|walked|travel|travelled|traveled|back|get|got|come|came) to|visit|visiting|"
    rf"lives? in|living in|based in)\s+({_NAME})"
)
_RELATION_CUE = re.compile(
    r"\b(?i:(?:my|our|his|her|their|your)\s+(?:best\s+|older\s+|younger\s+|little\s+|big\s+|"
    r"new\s+|old\s+|ex-?|step-?)?("
    + "|".join(re.escape(r) for r in sorted(RELATIONS, key=len, reverse=True))
    + rf"))\s+({_NAME})"
)
_NAMED_CUE = re.compile(rf"(\s*,?\s*\b(?:named|called)\s+)({_NAME})")
_NAME_IS_CUE = re.compile(rf"\b(?:name is|name's|names are)\s+({_NAME})")
_HONORIFIC = re.compile(
    r"\b(Dr|Doctor|Prof|Professor|Coach|Aunt|Auntie|Uncle|Grandma|Grandpa|Mr|Mrs|Ms|Miss|Mx|"
    rf"Sir|Madam)\.?\s+({_NAME})"
)
_CAPITALISED = re.compile(rf"\b{_CAP}\b")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|[\n\r]+\s*|[\"“(]\s*|-\s+)$")
_SUBJECT_FOLLOWERS = re.compile(
    r"\s+(?:is|was|has|had|does|did|keeps|kept|said|says|told|tells|wants|wanted|thinks|"
    r"never|always|won't|doesn't|didn't|can't|isn't|wasn't|will|would|and I)\b"
)
_PERSON_BEFORE = re.compile(
    r"\b(?:told|tell|tells|asked|ask|asks|with|call|calls|text|texts|texted|met|meet|saw|see|"
    r"thank|thanked|invited|invite|invites|helped|help|helps|trust|trusts|married|dating|dated|"
    r"blame|blamed|remind|reminded|forgive|messaged|message|emailed)\s+$",
    re.IGNORECASE,
)
_POSSESSIVE_AFTER = re.compile(r"^['\u2019]s\b")
_ARTICLE_BEFORE = re.compile(r"\b(?:my|our|his|her|their|your|the)\s+$", re.IGNORECASE)


def _fix_name_words(match_text: str) -> str:
    """Trim trailing common words a two-word name pattern swallowed ("Sam Monday" -> "Sam")."""
    words = match_text.split()
    while len(words) > 1 and words[-1] in COMMON_CAPITALISED:
        words.pop()
    return " ".join(words)


def _is_sentence_start(text: str, start: int) -> bool:
    return bool(_SENTENCE_START.search(text[:start]))


def _person_word(text: str, start: int, end: int) -> tuple[int, str]:
    """A pronoun that fits where a name stood, and the end of the span it replaces."""
    capital = _is_sentence_start(text, start)
    if _POSSESSIVE_AFTER.match(text[end:]):
        return end + 2, "Their" if capital else "their"
    if capital or _SUBJECT_FOLLOWERS.match(text[end:]):
        return end, "This person" if capital else "this person"
    return end, "them"


def _name_finding(text: str, start: int, value: str) -> Finding:
    end = start + len(value)
    span_end, word = _person_word(text, start, end)
    return Finding("name", (start, span_end), value, word)


def find_identifying(text: str) -> list[Finding]:
    """Every identifying detail in `text`, in order, without overlaps."""
    found: list[tuple[int, Finding]] = []  # (priority, finding); lower priority number wins

    def add(priority: int, finding: Finding) -> None:
        found.append((priority, finding))

    for m in _EMAIL.finditer(text):
        add(0, Finding("email", m.span(), m.group(), _TAGS["email"]))
    for m in _HANDLE.finditer(text):
        add(1, Finding("handle", m.span(), m.group(), _TAGS["handle"]))
    for m in _PHONE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        groups = re.findall(r"\d+", m.group())
        looks_like_years = len(groups) == 2 and all(
            re.fullmatch(r"(?:19|20)\d\d", g) for g in groups
        )
        if 7 <= len(digits) <= 15 and not looks_like_years:
            add(1, Finding("phone", m.span(), m.group(), _TAGS["phone"]))
    for m in _ADDRESS_NUMBERED.finditer(text):
        add(2, Finding("address", m.span(), m.group().rstrip("."), _TAGS["address"]))
    for m in _ADDRESS_NAMED.finditer(text):
        if m.group().split()[0] not in COMMON_CAPITALISED:
            add(3, Finding("address", m.span(), m.group(), _TAGS["address"]))
    for m in _POSTCODE.finditer(text):
        group = "code" if m.group("code") else "cued"
        if any(c.isdigit() for c in m.group(group)):
            add(2, Finding("postcode", m.span(group), m.group(group), _TAGS["postcode"]))

    for m in _RELATION_CUE.finditer(text):
        name = _fix_name_words(m.group(2))
        if name.split()[0] in COMMON_CAPITALISED:
            continue
        start = m.start(2)
        # "my friend Sam" -> "my friend": the relationship already says who it is.
        add(4, Finding("name", (m.end(1), start + len(name)), name, ""))
    for m in _NAMED_CUE.finditer(text):
        name = _fix_name_words(m.group(2))
        if name.split()[0] in COMMON_CAPITALISED:
            continue
        add(4, Finding("name", (m.start(1), m.start(2) + len(name)), name, ""))
    for m in _NAME_IS_CUE.finditer(text):
        name = _fix_name_words(m.group(1))
        if name.split()[0] not in COMMON_CAPITALISED:
            add(4, Finding("name", (m.start(1), m.start(1) + len(name)), name, "[name]"))
    for m in _HONORIFIC.finditer(text):
        name = _fix_name_words(m.group(2))
        role = _HONORIFIC_ROLES[m.group(1).lower()]
        start, end = m.start(), m.start(2) + len(name)
        if role:
            article = "my" if role in {"aunt", "uncle", "grandma", "grandpa"} else "the"
            word = role if _ARTICLE_BEFORE.search(text[:start]) else f"{article} {role}"
            if _is_sentence_start(text, start):
                word = word[0].upper() + word[1:]
            add(4, Finding("name", (start, end), f"{m.group(1)} {name}", word))
        else:
            span_end, word = _person_word(text, start, end)
            add(4, Finding("name", (start, span_end), f"{m.group(1)} {name}", word))

    for m in _PLACE_CUE.finditer(text):
        place = _fix_name_words(m.group(1))
        first = place.split()[0]
        if first in COMMON_CAPITALISED or first in FIRST_NAMES:
            continue
        add(5, Finding("place", (m.start(1), m.start(1) + len(place)), place, _TAGS["place"]))

    for m in _CAPITALISED.finditer(text):
        word = m.group()
        if word in COMMON_CAPITALISED:
            continue
        if word in FIRST_NAMES:
            add(6, _name_finding(text, m.start(), word))
        elif not _is_sentence_start(text, m.start()) and _in_person_context(
            text, m.start(), m.end()
        ):
            add(7, _name_finding(text, m.start(), word))

    return _without_overlaps(found)


def _in_person_context(text: str, start: int, end: int) -> bool:
    """True when an unknown capitalised word sits where a person would: "told X", "X said", "X's".

    Without such context a capitalised word is more often a brand, game or show than a person.
    """
    if text[start:end].lower() in _RELATION_SET:
        return False
    after = text[end:]
    return bool(
        _PERSON_BEFORE.search(text[:start])
        or _SUBJECT_FOLLOWERS.match(after)
        or _POSSESSIVE_AFTER.match(after)
    )


def _without_overlaps(found: list[tuple[int, Finding]]) -> list[Finding]:
    chosen: list[Finding] = []
    taken: list[tuple[int, int]] = []
    for _, finding in sorted(found, key=lambda pf: (pf[0], pf[1].span[0])):
        a, b = finding.span
        if any(a < y and x < b for x, y in taken):
            continue
        chosen.append(finding)
        taken.append((a, b))
    return sorted(chosen, key=lambda f: f.span[0])


def redact(text: str, findings: list[Finding]) -> str:
    """`text` with each finding replaced by its neutral wording (names by them/this person)."""
    out: list[str] = []
    cursor = 0
    for finding in sorted(findings, key=lambda f: f.span[0]):
        start, end = finding.span
        if start < cursor:
            continue
        out.append(text[cursor:start])
        out.append(
            finding.replacement or (_TAGS.get(finding.kind, "") if finding.kind != "name" else "")
        )
        cursor = end
    out.append(text[cursor:])
    return re.sub(r"[ \t]{2,}", " ", "".join(out))
