"""How learners on phones write, as surface perturbations, and how far the offline rater moves.

The dev and holdout sets were written by one person in tidy prose; real learners write in lower
case, drop apostrophes and final stops, misspell, use text-speak and emoji, run sentences
together, shout one word in capitals, use curly quotes, stray spaces and line breaks, and
British spellings. Each transformation here rewrites a message in one of those ways without
changing what it says (deterministically: the random choices are seeded by the seed, the
transformation and the message's id), and `measure` rates the original and the perturbed text
with the offline rater and reports, per transformation, how often each skill's level changes
and the score of the perturbed set against the original labels.

    python -m feedback.raters.perturb [--seed 0] [--json] [FILE.jsonl ...]

Very short and very long drafts are not transformations of a message (they change what it
says), so they are not here; tests/feedback/test_perturb.py rates a few of each.
"""

import argparse
import json
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from feedback.evaluation import evaluate
from feedback.raters.bank import DEV_PATH, HOLDOUT_PATH, Example, read_jsonl
from feedback.raters.offline import OfflineModel, default_model
from feedback.skills import SKILL_KEYS

Transform = Callable[[str, random.Random], str]


def _cased(word: str, like: str) -> str:
    """`word` in the case of `like` (ALL CAPS, Title or lower)."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _table(table: dict[str, str | tuple[str, ...]], rate: float) -> Transform:
    """Replace each listed word or phrase (any case, straight or curly apostrophe) with its
    form in the table, each occurrence with probability `rate`."""
    keys = sorted(table, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![\w'\u2019])(?:"
        + "|".join(re.escape(k).replace("'", "['\u2019]") for k in keys)
        + r")(?![\w'\u2019])",
        re.IGNORECASE,
    )

    def apply(text: str, rng: random.Random) -> str:
        def one(m: re.Match[str]) -> str:
            found = m.group(0)
            forms = table[found.lower().replace("\u2019", "'")]
            choice = forms if isinstance(forms, str) else rng.choice(forms)
            return _cased(choice, found) if rng.random() < rate else found

        return pattern.sub(one, text)

    return apply


def lowercase(text: str, rng: random.Random) -> str:
    """all lower case, "i" included."""
    return text.lower()


def no_final_punctuation(text: str, rng: random.Random) -> str:
    """No stop, question mark or single exclamation mark at the end ("!!!" is tone: kept)."""
    return re.sub(r"(?<![.!?])[.!?]\s*$", "", text.rstrip())


def no_apostrophes(text: str, rng: random.Random) -> str:
    """im, dont, youre, its (for it's)."""
    return re.sub(r"(?<=\w)['\u2019](?=\w)", "", text)


def curly_quotes(text: str, rng: random.Random) -> str:
    """What phone keyboards type: curly apostrophes and double quotes (U+2019, U+201C/D)."""
    text = re.sub(r"(?<=\w)'(?=\w)|'", "\u2019", text)
    return re.sub(r'"([^"]*)"', "\u201c\\1\u201d", text)


COMMON_TYPOS: dict[str, str | tuple[str, ...]] = {
    "because": ("becuase", "becasue", "bcause"),
    "tomorrow": ("tommorow", "tomorow", "tommorrow"),
    "won't": "wont",
    "really": "realy",
    "definitely": ("definately", "definatly"),
    "until": "untill",
    "their": "thier",
    "a lot": "alot",
    "frustrated": "frustated",
    "embarrassed": ("embarassed", "embarrased"),
    "disappointed": ("dissapointed", "disapointed"),
    "separate": "seperate",
    "wednesday": "wensday",
    "received": "recieved",
    "receive": "recieve",
    "believe": "beleive",
    "friend": "freind",
    "friends": "freinds",
    "weird": "wierd",
    "probably": "probly",
    "literally": "literaly",
    "again": "agian",
    "anxious": "anxous",
    "worried": "worryed",
    "exhausted": "exausted",
    "tonight": "tonite",
    "schedule": "schedual",
    "appreciate": "appriciate",
    "responsible": "responsable",
    "necessary": "neccessary",
    "apartment": "appartment",
    "stressed": "stresed",
    "overwhelmed": "overwhelmd",
    "scared": "scarred",
    "feel": "fel",
    "there": "their",
    "you're": "your",
    "it's": "its",
    "then": "than",
    "know": "kno",
    "just": "jsut",
    "the": "teh",
    "what": "waht",
    "with": "wiht",
    "please": "plese",
    "could": "coud",
    "would": "woud",
    "weekend": "weeknd",
    "week": "wek",
    "minutes": "mins",
    "honestly": "honesty",
    "actually": "actualy",
    "basically": "basicly",
    "whether": "wether",
    "sorry": "sory",
    "worry": "wory",
    "feeling": "feelin",
    "going": "goin",
    "nothing": "nothin",
    "something": "somethin",
}

TEXT_SPEAK: dict[str, str | tuple[str, ...]] = {
    "you": "u",
    "your": "ur",
    "you're": "ur",
    "are": "r",
    "please": ("pls", "plz"),
    "thanks": "thx",
    "thank you": ("ty", "thx"),
    "going to": "gonna",
    "want to": "wanna",
    "got to": "gotta",
    "because": ("bc", "cuz", "coz"),
    "tomorrow": ("tmrw", "tmr"),
    "tonight": "2nite",
    "to be honest": "tbh",
    "honestly": "tbh",
    "right now": "rn",
    "okay": ("ok", "k"),
    "before": "b4",
    "people": "ppl",
    "about": "abt",
    "i don't know": "idk",
    "message": "msg",
    "sorry": ("sry", "soz"),
    "and": "&",
    "with": "w/",
    "kind of": "kinda",
    "sort of": "sorta",
    "let me": "lemme",
    "i'm going to": "ima",
    "weekend": "wknd",
    "something": "smth",
    "probably": "prob",
    "though": "tho",
    "really": "rly",
    "minutes": "mins",
    "seriously": "srsly",
    "what": "wat",
}

BRITISH: dict[str, str | tuple[str, ...]] = {
    "apologize": "apologise",
    "apologized": "apologised",
    "apologizing": "apologising",
    "organize": "organise",
    "organized": "organised",
    "organizing": "organising",
    "realize": "realise",
    "realized": "realised",
    "prioritize": "prioritise",
    "recognize": "recognise",
    "criticize": "criticise",
    "emphasize": "emphasise",
    "analyze": "analyse",
    "color": "colour",
    "favor": "favour",
    "favorite": "favourite",
    "behavior": "behaviour",
    "neighbor": "neighbour",
    "neighbors": "neighbours",
    "honor": "honour",
    "humor": "humour",
    "labor": "labour",
    "center": "centre",
    "theater": "theatre",
    "canceled": "cancelled",
    "canceling": "cancelling",
    "traveled": "travelled",
    "traveling": "travelling",
    "program": "programme",
    "defense": "defence",
    "license": "licence",
    "gray": "grey",
    "mom": "mum",
    "moms": "mums",
    "fulfill": "fulfil",
    "apartment": "flat",
    "vacation": "holiday",
    "math": "maths",
}

_EMOJI = ("🙏", "😕", "😩", "😭", "😊", "❤️", "👍", "😅", "🥺", "😬")


def typos(text: str, rng: random.Random) -> str:
    """Common misspellings and wrong-word slips, each word with probability 0.7."""
    return _TYPOS(text, rng)


def text_speak(text: str, rng: random.Random) -> str:
    """u, ur, pls, thx, gonna, wanna, bc, tmrw, idk, &... each occurrence with probability 0.8."""
    return _SPEAK(text, rng)


def british(text: str, rng: random.Random) -> str:
    """British spelling and words (apologise, organise, colour, cancelled, mum, flat)."""
    return _BRITISH(text, rng)


_TYPOS = _table(COMMON_TYPOS, 0.7)
_SPEAK = _table(TEXT_SPEAK, 0.8)
_BRITISH = _table(BRITISH, 1.0)


def slips(text: str, rng: random.Random) -> str:
    """Keyboard slips no table lists: two neighbouring letters swapped in one word in ten
    (words of four letters or more), as thumbs do."""

    def swap(m: re.Match[str]) -> str:
        word = m.group(0)
        if rng.random() >= 0.1:
            return word
        i = rng.randrange(1, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]

    return re.sub(r"\b[A-Za-z]{4,}\b", swap, text)


def emoji(text: str, rng: random.Random) -> str:
    """An emoji after a sentence or two, or at the end (with or without a space before it)."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    for i in sorted(rng.sample(range(len(parts)), k=min(len(parts), rng.choice((1, 2))))):
        parts[i] = parts[i] + rng.choice(("", " ")) + rng.choice(_EMOJI)
    return " ".join(parts)


def run_on(text: str, rng: random.Random) -> str:
    """Sentences run together with "and", a comma or nothing, in lower case."""

    def join(m: re.Match[str]) -> str:
        glue = rng.choice((" and ", ", ", " ", " so "))
        return glue + m.group(1).lower()

    return re.sub(r"\.\s+(\w)", join, text)


_EMPHASIS = re.compile(
    r"\b(?:really|need|needs|very|so|not|never|always|please|again|all|every|now|today|"
    r"tonight|only|still|three|twice|whole|before|after|this|that|my|your|you|me|do|did|"
    r"told|asked|can't|won't|don't|didn't)\b",
    re.IGNORECASE,
)


def caps_emphasis(text: str, rng: random.Random) -> str:
    """One word in capitals for emphasis ("i REALLY need this"), not the message shouted."""
    found = list(_EMPHASIS.finditer(text)) or [
        m for m in re.finditer(r"\b[A-Za-z]{4,}\b", text) if m.start() > 0
    ]
    if not found:
        return text
    m = rng.choice(found)
    return text[: m.start()] + m.group(0).upper() + text[m.end() :]


def spacing(text: str, rng: random.Random) -> str:
    """Doubled spaces, a space before a mark, and sentences on new lines, some without stops."""

    def gap(m: re.Match[str]) -> str:
        mark = m.group(1) if m.group(1) != "." or rng.random() < 0.5 else ""
        return mark + rng.choice(("\n", "\n\n", "  \n", " \n"))

    text = re.sub(r"([.!?])\s+(?=\w)", gap, text)
    text = re.sub(r"(?<=\w)([?!])", lambda m: rng.choice(("", " ")) + m.group(1), text)
    return re.sub(r"(?<=\w) (?=\w)", lambda m: "  " if rng.random() < 0.1 else " ", text)


def phone(text: str, rng: random.Random) -> str:
    """Several at once, as a phone learner writes: lower case, no apostrophes or final stop,
    text-speak, typos, and half the time an emoji."""
    for step in (text_speak, typos, no_apostrophes, lowercase, no_final_punctuation):
        text = step(text, rng)
    return emoji(text, rng) if rng.random() < 0.5 else text


TRANSFORMS: dict[str, Transform] = {
    "lowercase": lowercase,
    "no_final_punctuation": no_final_punctuation,
    "no_apostrophes": no_apostrophes,
    "curly_quotes": curly_quotes,
    "typos": typos,
    "text_speak": text_speak,
    "slips": slips,
    "emoji": emoji,
    "run_on": run_on,
    "caps_emphasis": caps_emphasis,
    "spacing": spacing,
    "british": british,
    "phone": phone,
}


def perturb(example: Example, name: str, seed: int = 0) -> Example:
    """The example with its text rewritten by transformation `name` (same labels, context)."""
    rng = random.Random(f"{seed}:{name}:{example.id}")
    return replace(example, text=TRANSFORMS[name](example.text, rng))


@dataclass(frozen=True)
class Result:
    """One transformation's effect on one file."""

    transform: str
    n: int
    n_changed: int
    changed: dict[str, float]  # per skill: share of all messages whose level changed
    mean_changed: float  # mean over the seven skills
    macro_f1: float  # perturbed texts against the original labels


def measure(
    examples: Sequence[Example],
    names: Sequence[str] = tuple(TRANSFORMS),
    seed: int = 0,
    model: OfflineModel | None = None,
) -> tuple[float, list[Result]]:
    """The original score, and for each transformation how the levels move and the score."""
    model = model or default_model()
    labels = [e.labels for e in examples]
    original = model.predict(examples)
    base = evaluate(labels, original).overall_macro_f1
    results = []
    for name in names:
        perturbed = [perturb(e, name, seed) for e in examples]
        levels = model.predict(perturbed)
        changed = {
            k: sum(a[k] != b[k] for a, b in zip(original, levels, strict=True)) / len(examples)
            for k in SKILL_KEYS
        }
        results.append(
            Result(
                transform=name,
                n=len(examples),
                n_changed=sum(p.text != e.text for p, e in zip(perturbed, examples, strict=True)),
                changed=changed,
                mean_changed=sum(changed.values()) / len(changed),
                macro_f1=evaluate(labels, levels).overall_macro_f1,
            )
        )
    return base, results


def format_results(title: str, base: float, results: Sequence[Result]) -> str:
    """A plain-text table: % of messages whose level changed per skill, and the score."""
    head = f"{'transform':<21}{'edited':>7}" + "".join(f"{k[:5]:>7}" for k in SKILL_KEYS)
    lines = [f"{title}: original macro F1 {base:.3f}", head + f"{'mean':>7}{'F1':>7}"]
    for r in results:
        cells = "".join(f"{100 * r.changed[k]:>7.1f}" for k in SKILL_KEYS)
        lines.append(
            f"{r.transform:<21}{r.n_changed:>7}{cells}{100 * r.mean_changed:>7.1f}"
            f"{r.macro_f1:>7.3f}"
        )
    mean = sum(r.mean_changed for r in results) / len(results)
    lines.append(f"{'all transforms':<21}{'':>7}{'':>49}{100 * mean:>7.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the perturbation report for the given files (dev and holdout by default)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", default=[str(DEV_PATH), str(HOLDOUT_PATH)])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = {}
    for path in args.files:
        examples = [e for e in read_jsonl(path) if e.fully_labelled]
        if not examples:
            sys.exit(f"{path}: no fully labelled lines")
        base, results = measure(examples, seed=args.seed)
        report[Path(path).name] = (base, results)
    if args.json:
        out = {
            name: {"original_macro_f1": base, "transforms": [r.__dict__ for r in results]}
            for name, (base, results) in report.items()
        }
        print(json.dumps(out))
        return
    for name, (base, results) in report.items():
        print(format_results(name, base, results), end="\n\n")
    print("columns: messages edited, then % of messages whose level changed per skill")


if __name__ == "__main__":
    main()
