import random

import pytest

from feedback.raters.bank import DATA_DIR, Example, read_jsonl
from feedback.raters.perturb import TRANSFORMS, format_results, main, measure, perturb
from feedback.skills import SKILL_KEYS

TEXT = (
    "I've asked you three times this week, because it's late again. I'd really like you to "
    "text me before 10pm tomorrow, please. Could you do that? Thank you."
)


def test_every_transformation_is_deterministic_for_a_seed():
    example = Example(id="x-1", text=TEXT)
    for name in TRANSFORMS:
        assert perturb(example, name, seed=3) == perturb(example, name, seed=3), name


def test_the_random_choices_follow_the_seed():
    example = Example(id="x-1", text=TEXT * 3)
    texts = {perturb(example, "typos", seed=s).text for s in range(6)}
    assert len(texts) > 1


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("lowercase", lambda t: t == t.lower()),
        ("no_final_punctuation", lambda t: t.endswith("Thank you")),
        ("no_apostrophes", lambda t: "'" not in t and "Ive asked" in t and "its late" in t),
        ("curly_quotes", lambda t: "\u2019" in t and "'" not in t),
        ("text_speak", lambda t: " u " in t or " pls" in t or "tmr" in t),
        ("emoji", lambda t: any(ord(c) > 0x2000 for c in t)),
        ("run_on", lambda t: ". " not in t and "?" in t),
        ("caps_emphasis", lambda t: sum(w.isupper() and len(w) > 1 for w in t.split()) == 1),
        ("spacing", lambda t: "\n" in t),
    ],
)
def test_each_transformation_does_what_its_name_says(name, check):
    text = perturb(Example(id="x-2", text=TEXT), name).text
    assert text != TEXT
    assert check(text), text


def test_repeated_exclamation_marks_are_tone_and_are_kept():
    rng = random.Random(0)
    assert TRANSFORMS["no_final_punctuation"]("Stop it!!!", rng) == "Stop it!!!"
    assert TRANSFORMS["no_final_punctuation"]("Can you stop?", rng) == "Can you stop"


def test_british_spelling_keeps_the_case_of_each_word():
    rng = random.Random(0)
    assert TRANSFORMS["british"]("Apologize to Mom, I realized.", rng) == (
        "Apologise to Mum, I realised."
    )


def test_the_report_gives_each_transformation_each_skills_change_and_a_score():
    examples = read_jsonl(DATA_DIR / "dev.jsonl")[:12]
    base, results = measure(examples, names=("lowercase", "caps_emphasis"))
    assert 0 <= base <= 1
    assert [r.transform for r in results] == ["lowercase", "caps_emphasis"]
    for r in results:
        assert r.n == 12 and r.n_changed > 0
        assert set(r.changed) == set(SKILL_KEYS)
        assert all(0 <= v <= 1 for v in r.changed.values())
        assert 0 <= r.macro_f1 <= 1
    assert "caps_emphasis" in format_results("dev", base, results)


def test_the_command_reports_on_a_given_file(tmp_path, capsys):
    path = tmp_path / "few.jsonl"
    path.write_text((DATA_DIR / "dev.jsonl").read_text().splitlines()[0] + "\n")
    main([str(path)])
    out = capsys.readouterr().out
    assert "few.jsonl: original macro F1" in out
    assert all(name in out for name in TRANSFORMS)


# --- the rater under phone writing (the perturbation report's figures, README "Feedback that
# teaches"): transformations that normalisation undoes must not move a level.

SITUATION = "My roommate has left the dishes in the sink for most of the last two weeks."
GOAL = "Get my roommate to wash their dishes the same day."


def _levels(text: str) -> dict[str, str]:
    from feedback.raters.offline import rate_offline

    return rate_offline(text=text, situation=SITUATION, goal=GOAL).levels


@pytest.mark.parametrize(
    ("tidy", "phone"),
    [
        (
            "Could you please wash your dishes the same day? I would really appreciate it.",
            "Coud you plese wash ur dishes teh same day? i woud realy appriciate it",
        ),
        (
            "I am frustrated because I have asked you three times this week. Please wash them "
            "tonight.",
            "Im frustated becuase ive asked u three times this wek. plese wash them tonite",
        ),
        (
            "You left the pans on Monday. They were still there on Wednesday. Please wash them "
            "the same day.",
            "You left the pans on Monday\U0001f615\nThey were still there on Wednesday\n"
            "Please wash them the same day",
        ),
    ],
)
def test_typos_text_speak_emoji_and_line_breaks_do_not_change_a_rating(tidy, phone):
    assert _levels(phone) == _levels(tidy)


# Share of all levels (7 skills x every dev and holdout message) a transformation may move;
# measured after the normalisation fixes (before them: typos 3.2-3.7%, text-speak 0.3-1.5%,
# emoji up to 0.2%, stray spaces and line breaks up to 0.3%).
STABLE = {
    "curly_quotes": 0.0,
    "typos": 0.005,
    "text_speak": 0.005,
    "emoji": 0.0,
    "spacing": 0.0,
    "british": 0.0,
    "no_apostrophes": 0.005,
    "no_final_punctuation": 0.01,
}


@pytest.mark.parametrize("name", ["dev.jsonl", "holdout.jsonl"])
def test_surface_transformations_that_normalisation_undoes_move_almost_no_level(name):
    examples = read_jsonl(DATA_DIR / name)
    _, results = measure(examples, names=tuple(STABLE))
    moved = {r.transform: round(r.mean_changed, 4) for r in results}
    assert all(moved[k] <= STABLE[k] for k in STABLE), moved


PANS = (
    "The pans were left out on Monday and again on Thursday. What if I cook and you wash up "
    "right after dinner, for two weeks?"
)
ASKED = (
    "I asked you on Monday and on Wednesday. I'd like you to wash your dishes the same day, "
    "then you won't have me reminding you every night."
)


@pytest.mark.parametrize(
    ("text", "word"),
    [(PANS, "again"), (PANS, "wash"), (PANS, "right"), (ASKED, "same"), (ASKED, "won't")],
)
def test_one_word_in_capitals_is_tone_and_moves_no_strategy(text, word):
    """Capitals speak to Mindful and Confident; the facts, the ask, the gain and the offer are
    the same in capitals (the rater had learned otherwise from a bank whose capitals all came
    in angry messages)."""
    loud = _levels(text.replace(word, word.upper(), 1))
    calm = _levels(text)
    for key in ("describe", "express", "assert", "reinforce", "negotiate"):
        assert loud[key] == calm[key], key
