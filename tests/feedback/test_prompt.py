import pytest

from feedback.raters.bank import Example
from feedback.raters.llm import parse_reply, retrieve_pairs
from feedback.raters.prompt import build_messages, reply_schema
from feedback.raters.retrieval import Index
from feedback.skills import SKILLS, STATES, STRATEGIES

STRONG = {
    "describe": "strong",
    "express": "strong",
    "assert": "strong",
    "reinforce": "strong",
    "negotiate": "strong",
    "mindful": "yes",
    "confident": "yes",
}


def example(i: int, text: str, weak: dict[str, str], rewrites: dict[str, str]) -> Example:
    return Example(
        id=f"t-{i}",
        text=text,
        situation="My sister borrows my car and returns it with an empty tank.",
        labels={**STRONG, **weak},
        rewrites=rewrites,
        split="train",
    )


BANK = [
    example(
        1,
        "you always bring my car back empty, so selfish",
        {"describe": "weak", "mindful": "no"},
        {
            "describe": "The last three times you borrowed my car the tank was on empty.",
            "mindful": "The tank was empty again. I need it filled when you bring it back.",
        },
    ),
    example(
        2,
        "it would be nice if the car had gas sometimes",
        {"assert": "weak", "confident": "no"},
        {
            "assert": "Please fill the tank before you return my car.",
            "confident": "Fill the tank before you bring my car back.",
        },
    ),
    example(
        3,
        "the dog needs walking and I'm tired",
        {"negotiate": "none"},
        {"negotiate": "What if I walk him mornings and you take evenings?"},
    ),
]


def messages(chosen):
    index = Index(BANK)
    text = "you bring my car back with no gas every time"
    pairs = retrieve_pairs(text=text, partner_said="", situation="", chosen=chosen, index=index)
    return pairs, build_messages(
        text=text,
        situation="My brother borrows my car.",
        goal="Get him to refill the tank.",
        partner_said="",
        chosen=chosen,
        pairs=pairs,
    )


def test_prompt_holds_the_rubric_of_each_chosen_skill_and_of_both_states():
    _, msgs = messages(["describe", "assert"])
    system = msgs[0]["content"]
    for key in ("describe", "assert", *STATES):
        assert SKILLS[key].definition in system
        for reason in SKILLS[key].weak_reasons:
            assert reason in system
    assert SKILLS["negotiate"].definition not in system
    assert SKILLS["express"].definition not in system


def test_prompt_shows_the_draft_and_its_context():
    _, msgs = messages(["describe"])
    user = msgs[1]["content"]
    assert "you bring my car back with no gas every time" in user
    assert "Get him to refill the tank." in user
    assert "opening message" in user


def test_prompt_carries_retrieved_contrasting_pairs_for_the_rated_skills():
    pairs, msgs = messages(["describe", "assert"])
    user = msgs[1]["content"]
    assert {p.skill for p in pairs} == {"describe", "assert", "mindful", "confident"}
    assert "you always bring my car back empty, so selfish" in user
    assert "The last three times you borrowed my car the tank was on empty." in user
    assert "Please fill the tank before you return my car." in user
    # negotiate was not chosen, so its pair stays out
    assert "What if I walk him mornings" not in user


def test_pairs_are_ordered_by_similarity_to_the_draft():
    index = Index(BANK)
    pairs = index.pairs("mindful", "you always bring the car back empty, selfish", k=1)
    assert pairs[0].before == "you always bring my car back empty, so selfish"


@pytest.mark.parametrize("chosen", [[], ["negotiate"], list(STRATEGIES)])
def test_schema_requires_every_rated_skill_with_reasoning_before_rating(chosen):
    schema = reply_schema(chosen)
    expected = [k for k in STRATEGIES if k in chosen] + list(STATES)
    assert list(schema["properties"]) == expected
    assert schema["required"] == expected
    assert schema["additionalProperties"] is False
    for key in expected:
        item = schema["properties"][key]
        fields = list(item["properties"])
        assert fields.index("reasoning") < fields.index("rating")
        assert item["properties"]["rating"]["enum"] == list(SKILLS[key].levels)
        assert item["required"] == fields
        extra = {"suggestion", "rewrite"} if key in STRATEGIES else {"advice"}
        assert extra <= set(fields)


def test_reply_parses_into_ratings_and_clears_fixes_on_strong_uses():
    reply = {
        "assert": {
            "reasoning": "Clear ask.",
            "rating": "strong",
            "suggestion": "x",
            "rewrite": "y",
        },
        "mindful": {"reasoning": "Sarcastic.", "rating": "no", "advice": "Drop the jab."},
        "confident": {"reasoning": "Firm.", "rating": "yes", "advice": ""},
    }
    ratings = parse_reply(reply, ["assert"])
    assert ratings["assert"].suggestion == "" and ratings["assert"].rewrite == ""
    assert ratings["mindful"].suggestion == "Drop the jab."
    assert ratings["mindful"].level == "no"


def test_reply_missing_a_skill_or_with_a_bad_level_is_rejected():
    with pytest.raises(ValueError):
        parse_reply({"mindful": {"rating": "yes"}}, [])
    with pytest.raises(ValueError):
        parse_reply(
            {"mindful": {"rating": "strong"}, "confident": {"rating": "yes"}},
            [],
        )
