import time

import pytest

from feedback.raters.bank import DATA_DIR, Example, read_jsonl, train_examples
from feedback.raters.features import extract, normalise
from feedback.raters.offline import (
    TRAINING_PATHS,
    Settings,
    default_model,
    rate_offline,
    rules_only,
    train,
)
from feedback.raters.rating import Rating
from feedback.skills import SKILL_KEYS, SKILLS, STRATEGIES

SITUATION = "My roommate has left the dishes in the sink for most of the last two weeks."
GOAL = "Get my roommate to wash their dishes the same day."

MODELS = {"bank": default_model, "rules": rules_only}


def rate(text: str, model: str = "bank", **context: str) -> Rating:
    context.setdefault("situation", SITUATION)
    context.setdefault("goal", GOAL)
    return rate_offline(text=text, chosen=STRATEGIES, model=MODELS[model](), **context)


def test_every_skill_is_rated_with_a_valid_level_and_reasoning():
    rating = rate("hey can we talk about the dishes")
    assert rating.engine == "offline"
    assert list(rating.skills) == list(SKILL_KEYS)
    for key, skill_rating in rating.skills.items():
        assert skill_rating.level in SKILLS[key].levels
        assert skill_rating.reasoning


def test_rating_is_deterministic():
    text = "You never wash anything. I'm sick of it, honestly."
    first = rate(text).to_dict()
    default_model.cache_clear()
    assert rate(text).to_dict() == first


def test_weak_and_missing_skills_get_a_suggestion_and_a_rewrite_strong_ones_none():
    rating = rate("sorry, maybe if it's ok you could kind of do the dishes sometime?")
    for key, skill_rating in rating.skills.items():
        if skill_rating.level == SKILLS[key].top_level:
            assert skill_rating.suggestion == "" and skill_rating.rewrite == ""
        else:
            assert skill_rating.suggestion.strip(), key
            assert skill_rating.rewrite.strip(), key


@pytest.mark.parametrize("model", ["bank", "rules"])
def test_a_clearly_named_feeling_is_strong_express(model):
    text = "I feel really stressed and frustrated when I come home to a full sink."
    assert rate(text, model).skills["express"].level == "strong"


@pytest.mark.parametrize("model", ["bank", "rules"])
def test_a_judgment_dressed_as_a_feeling_is_not_strong_express(model):
    text = "I feel like you don't care about anyone but yourself."
    assert rate(text, model).skills["express"].level != "strong"


@pytest.mark.parametrize("model", ["bank", "rules"])
def test_apologies_and_hedges_are_not_confident(model):
    text = "sorry, maybe if it's ok you could possibly do the dishes? no pressure if not"
    assert rate(text, model).skills["confident"].level == "no"


@pytest.mark.parametrize("model", ["bank", "rules"])
def test_an_insult_is_not_mindful(model):
    text = "Wow, you're such a lazy slob. Do your own stupid dishes, idiot."
    rating = rate(text, model, partner_said="Why are you always on my case about this?")
    assert rating.skills["mindful"].level == "no"


@pytest.mark.parametrize("model", ["bank", "rules"])
def test_a_concrete_trade_is_strong_negotiate(model):
    text = "What if I cook on weeknights and you wash up right after dinner, for two weeks?"
    assert rate(text, model).skills["negotiate"].level == "strong"


@pytest.mark.parametrize("model", ["bank", "rules"])
def test_a_direct_request_is_strong_assert(model):
    text = "Please wash your dishes on the same day you use them."
    assert rate(text, model).skills["assert"].level == "strong"


@pytest.mark.parametrize("model", ["bank", "rules"])
def test_specific_facts_are_strong_describe(model):
    text = "Your dishes have been in the sink overnight on 9 of the last 14 days."
    assert rate(text, model).skills["describe"].level == "strong"


def test_confident_rewrite_drops_the_apologies_and_hedges():
    rating = rate("Sorry, I was just wondering if maybe you could wash your dishes tonight?")
    rewrite = rating.skills["confident"].rewrite.lower()
    assert "sorry" not in rewrite and "maybe" not in rewrite and "just" not in rewrite
    assert "dishes tonight" in rewrite


def test_chosen_strategies_decide_what_is_shown_and_scored():
    rating = rate_offline(text="Please wash your dishes tonight.", chosen=["assert"])
    assert list(rating.shown) == ["assert", "mindful", "confident"]
    assert rating.mastery is not None and 0 <= rating.mastery <= 2


def test_rating_round_trips_through_a_dict():
    rating = rate("Please wash up tonight.")
    assert Rating.from_dict(rating.to_dict()) == rating


def test_training_uses_only_what_it_is_given_and_rates_all_skills():
    levels = {k: SKILLS[k].levels for k in SKILL_KEYS}
    examples = [
        Example(
            id=str(i),
            text=text,
            labels={k: levels[k][(i + j) % len(levels[k])] for j, k in enumerate(SKILL_KEYS)},
        )
        for i, text in enumerate(["please stop", "i feel sad", "what if we split it", "fine"] * 3)
    ]
    model = train(examples)
    assert model.n_train == 12
    predicted = model.predict(examples[:2])
    assert all(set(p) == set(SKILL_KEYS) for p in predicted)


def test_texting_forms_are_normalised_before_cues_are_read():
    assert normalise("im so stressed, u never text") == "i'm so stressed, you never text"
    assert extract("im so stressed").values["e_i_feel_feeling"] == 1


def test_rating_a_message_takes_well_under_20_ms_of_cpu():
    rate("warm up")
    text = "I've asked you three times this week. I feel frustrated. Please wash up tonight. " * 5
    # CPU time of this process, so that other jobs on a shared machine do not fail the test.
    timings = []
    for i in range(21):
        start = time.process_time()
        rate(text + str(i))
        timings.append(time.process_time() - start)
    assert sorted(timings)[10] < 0.020


def test_one_draft_is_rated_as_a_batch_rates_it():
    """The per-draft path (the "Get feedback" button's) gives the batch path's levels on every
    example of the bank, with its own context and with none, and for a model without n-grams."""
    examples = read_jsonl(DATA_DIR / "train.jsonl") + read_jsonl(DATA_DIR / "dev.jsonl")
    assert len(examples) > 300
    bare = [Example(id=e.id, text=e.text) for e in examples]
    no_ngrams = train(train_examples(), Settings(ngram_weight=0.0))
    assert no_ngrams.rows is None
    for model in (default_model(), no_ngrams, rules_only()):
        batch = model.predict(examples) + model.predict(bare)
        one = [model.predict_one(e) for e in examples + bare]
        assert one == batch
    # And rate_offline, which the button calls, goes through it.
    calls = []
    model = default_model()
    original = model.predict_one
    model.predict_one = lambda e: calls.append(e) or original(e)
    try:
        rating = rate_offline(text=examples[0].text, model=model)
    finally:
        del model.predict_one
    assert len(calls) == 1
    levels = {k: s.level for k, s in rating.skills.items()}
    assert levels == model.predict([Example(id="", text=examples[0].text)])[0]


# --- cues that carry over to messages written unlike the bank (held-out work, session h4)


@pytest.mark.parametrize(
    ("text", "gives_up"),
    [
        ("Fine, forget it.", True),
        ("ok fine. do what you want", True),
        ("Could I come on Thursday? Or a quick email with the grade is fine.", False),
        ("Tuesday is fine for me.", False),
    ],
)
def test_fine_gives_up_only_at_the_start_of_a_clause(text, gives_up):
    assert (extract(text).values["m_give_up"] > 0) is gives_up


def test_a_chance_to_do_it_is_not_a_gain_for_them():
    hedged = extract("Whenever you get a chance, could you send the form?")
    assert hedged.values["r_you_gain"] == 0
    assert extract("You get a whole weekend free.").values["r_you_gain"] > 0


@pytest.mark.parametrize(
    "text",
    [
        "If you're home by 11 for a month, we can talk about midnight.",
        "If you clear it on Fridays, you won't have people complaining to facilities.",
    ],
)
def test_a_conditional_consequence_is_read_with_contractions_and_negatives(text):
    assert extract(text).values["r_consequence_if"] > 0


def test_a_past_duration_is_a_fact_not_a_trial_on_offer():
    past = extract("I'm furious, we have had no shower for two weeks.")
    assert past.values["n_trial"] == 0 and past.values["d_past_duration"] == 1
    assert "n_trial" not in past.evidence
    offer = extract("Let's try it for two weeks and see how it goes.")
    assert offer.values["n_trial"] > 0 and offer.values["d_past_duration"] == 0


@pytest.mark.parametrize(
    ("text", "trial"),
    [
        ("I know it doesn't feel like a big deal to you.", False),
        ("She works harder than half the kids out there.", False),
        ("Smoking kills like half a million people a year.", False),
        ("Could you send half now and half on the 20th?", True),
        ("Deal? I'll cook and you wash up.", True),
    ],
)
def test_trial_and_trade_words_need_their_negotiating_sense(text, trial):
    assert (extract(text).values["n_trial"] > 0) is trial


def test_a_feeling_is_the_speakers_only_when_no_one_else_holds_it():
    assert extract("I know you're proud of them.").values["e_first_person_feeling"] == 0
    assert extract("I know I'm proud of them.").values["e_first_person_feeling"] == 1
    assert extract("I miss talking to you at dinner.").values["e_first_person_feeling"] == 1


def test_a_judgment_of_the_other_person_is_flagged_without_i_feel():
    cues = extract("It's unfair that everyone got theirs and I'm just ignored.")
    assert cues.values["e_judgment_feeling"] == 1


def test_a_dated_event_needs_the_event_and_the_time_in_one_sentence():
    assert extract("You were 40 minutes late on Monday.").values["d_dated_event"] == 1
    assert extract("I was late. Monday works for me.").values["d_dated_event"] == 0


def test_just_is_its_own_cue_not_a_hedge():
    cues = extract("Just a reminder about the $150. Can you send it by the 30th?")
    assert cues.values["c_just"] == 1 and cues.values["c_hedge"] == 0
    assert extract("maybe, if that's okay").values["c_hedge"] > 0


@pytest.mark.parametrize("model", ["bank", "rules"])
def test_a_past_duration_does_not_make_a_negotiation(model):
    text = "I'm furious and completely stressed out, we have had no shower for two weeks."
    assert rate(text, model).skills["negotiate"].level != "strong"


def test_the_held_out_set_is_never_part_of_the_training_bank():
    """holdout.jsonl measures generalisation: none of its lines may reach the model."""
    holdout = read_jsonl(DATA_DIR / "holdout.jsonl")
    assert len(holdout) >= 80 and all(e.fully_labelled for e in holdout)
    assert all(e.id.startswith("ho-") and e.split == "holdout" for e in holdout)
    bank = train_examples(TRAINING_PATHS)
    assert not {e.id for e in bank} & {e.id for e in holdout}
    assert not {e.text for e in bank} & {e.text for e in holdout}
    assert default_model().n_train == len(bank)
    # Even if someone lists the file among the training paths, its lines are refused.
    assert train_examples([DATA_DIR / "holdout.jsonl", DATA_DIR / "dev.jsonl"]) == []


def test_the_analysis_set_is_trained_on_and_kept_apart_from_dev_and_holdout():
    analysis = read_jsonl(DATA_DIR / "analysis.jsonl")
    assert len(analysis) >= 60 and all(e.split == "train" for e in analysis)
    assert {e.id for e in analysis} <= {e.id for e in train_examples(TRAINING_PATHS)}
    others = read_jsonl(DATA_DIR / "dev.jsonl") + read_jsonl(DATA_DIR / "holdout.jsonl")
    assert not {e.text for e in analysis} & {e.text for e in others}
    assert not {e.situation for e in analysis} & {e.situation for e in others}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Lets meet tmrw bc im frustated", "let's meet tomorrow because i'm frustrated"),
        ("sry cant do it rn, ur car isnt done", "sorry can't do it right now, your car isn't done"),
        ("tbh i was realy embarassed", "to be honest i was really embarrassed"),
        ("he lets me. the u.s. office", "he lets me. the u.s. office"),
    ],
)
def test_texting_forms_and_common_misspellings_are_normalised(text, expected):
    assert normalise(text) == expected


def test_a_misspelled_feeling_still_counts_as_a_feeling():
    assert extract("honestly im so frustated and dissapointed").values["e_i_feel_feeling"] >= 1


@pytest.mark.parametrize(
    "text",
    [
        "Do what you want I guess, not like I can stop you.",
        "you said that in march too. whatever, I'll stop asking",
        "That's fine I guess, I can find someone else.",
    ],
)
def test_giving_up_on_the_goal_in_other_words_is_caught(text):
    assert extract(text).values["m_give_up"] > 0


# --- phone writing (session h3): normalisation undoes what does not change the meaning


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hes sure theyll say no, weve asked", "he's sure they'll say no, we've asked"),
        (
            "its due friday & ur so late w/ it tho",
            "it's due friday and you're so late with it though",
        ),
        ("the dog wagged its tail", "the dog wagged its tail"),
        ("your being unfair. your car is fine", "you're being unfair. your car is fine"),
        ("coud u plese kno teh plan", "could you please know the plan"),
        ("R&D and w/o", "r&d and w/o"),
        ("I apologise, my mum realised the colour", "i apologize, my mom realized the color"),
    ],
)
def test_contractions_text_speak_typos_and_british_spellings_are_normalised(text, expected):
    assert normalise(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # "its" typed for "it's": before "not", "been", a determiner, a pronoun, a preposition,
        # and before a describing word that no noun follows.
        ("its not fair", "it's not fair"),
        ("its been 3 weeks", "it's been 3 weeks"),
        ("its a lot. its my fault", "it's a lot. it's my fault"),
        ("its getting late", "it's getting late"),
        ("its hard to say", "it's hard to say"),
        ("honestly its exhausting", "honestly it's exhausting"),
        ("its broken again", "it's broken again"),
        ("its hard finding someone", "it's hard finding someone"),
        ("its in the fridge", "it's in the fridge"),
        # The possessive: before a noun, or an adjective with its noun, "its" stays.
        ("the team and its goals", "the team and its goals"),
        ("the tent and its poles were fine", "the tent and its poles were fine"),
        ("the council and its limited budget", "the council and its limited budget"),
        ("a club with its broken rules", "a club with its broken rules"),
        ("the first of its kind.", "the first of its kind."),
        ("the firm and its need for speed", "the firm and its need for speed"),
        ("its only child", "its only child"),
    ],
)
def test_its_is_read_as_it_is_only_where_no_possessive_can_be_meant(text, expected):
    assert normalise(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so lets try it. lets say friday", "so let's try it. let's say friday"),
        ("then lets move it", "then let's move it"),
        ("he lets me, she just lets him", "he lets me, she just lets him"),
    ],
)
def test_lets_without_a_subject_is_read_as_lets_proposal(text, expected):
    assert normalise(text) == expected


def test_british_spellings_map_to_american_ones_never_the_other_way():
    from feedback.raters.perturb import BRITISH

    # Every spelling pair the perturbation check uses meets in its American form; words that
    # differ (flat, holiday) are not spellings and are left alone.
    words = {american: british for american, british in BRITISH.items() if " " not in british}
    spelled = {a: b for a, b in words.items() if b not in ("flat", "holiday")}
    assert {normalise(b) for b in spelled.values()} == set(spelled)
    assert all(normalise(a) == a for a in spelled)
    assert normalise("it was cancelled, we travelled") == "it was canceled, we traveled"


def test_a_day_with_its_apostrophe_dropped_is_still_a_time():
    assert extract("in tuesdays meeting you left early").values["d_time"] == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "thanks.\U0001f60a Also tonight\U0001f64f ok",
            "thanks. \U0001f60a also tonight \U0001f64f okay",
        ),
        ("line one\nline two\n\nthree.\nfour", "line one. line two. three. four"),
        ("can you do that ? yes , now", "can you do that? yes, now"),
        ("I\u2019m sure \u201cyes\u201d", 'i\'m sure "yes"'),
    ],
)
def test_emoji_line_breaks_and_stray_spaces_keep_words_and_sentences_apart(text, expected):
    assert normalise(text) == expected


def test_a_line_break_ends_a_sentence_for_the_dated_event_cue():
    assert extract("You were late\nMonday works for me").values["d_dated_event"] == 0
    assert extract("You were late on Monday\nThanks").values["d_dated_event"] == 1


@pytest.mark.parametrize(
    ("text", "questions"),
    [
        ("can i have friday off", 1),
        ("Can I have Friday off?", 1),
        ("ok, can u cover me on friday. thx", 1),
        ("I can cover Friday. You can have Monday.", 0),
    ],
)
def test_a_question_typed_without_its_question_mark_is_still_a_question(text, questions):
    assert extract(text).values["shape_questions"] == questions


@pytest.mark.parametrize(
    ("text", "goal", "offtopic"),
    [
        ("Please refund it to my card.", "Get the $90 fee refunded.", 0),
        ("Next time, a day's notice please.", "She lets me know at least a day ahead.", 0),
        ("Can you check the replies again?", "He checks my reply before sending.", 0),
        ("btw did u see the game last night? crazy ending", "Get the $90 fee refunded.", 1),
    ],
)
def test_a_message_that_names_the_goal_in_another_form_of_its_words_is_on_topic(
    text, goal, offtopic
):
    assert extract(text, goal=goal).values["goal_offtopic"] == offtopic


def test_the_fresh_set_is_never_trained_on():
    fresh = read_jsonl(DATA_DIR / "fresh.jsonl")
    assert len(fresh) >= 40 and all(e.split == "fresh" and e.fully_labelled for e in fresh)
    assert train_examples([DATA_DIR / "fresh.jsonl"]) == []
    assert not {e.text for e in fresh} & {e.text for e in train_examples(TRAINING_PATHS)}


def test_the_second_fresh_set_is_never_trained_on():
    """fresh2.jsonl scores the Assert and Negotiate cues on voices they were not tuned on."""
    fresh2 = read_jsonl(DATA_DIR / "fresh2.jsonl")
    assert len(fresh2) >= 30 and all(e.split == "fresh2" and e.fully_labelled for e in fresh2)
    assert train_examples([DATA_DIR / "fresh2.jsonl"]) == []
    bank = train_examples(TRAINING_PATHS)
    assert not {e.text for e in fresh2} & {e.text for e in bank}
    assert not {e.situation for e in fresh2} & {e.situation for e in bank}


@pytest.mark.parametrize(
    "text",
    [
        "I need cover for that last hour.",  # a want whose object is not on a list
        "I'd like one night a week that's just us.",
        "I want that you tell me two weeks before.",  # non-native
        "Need it by Friday.",  # terse, no "I"
        "hey. need u here at 9",  # texting
        "What I'm asking is that you stop going through my phone.",
        "All I'm asking for is one text on Fridays.",
        "Here's what I need: the report in the folder by Monday.",
        "I would ask that this hour be kept free from next week.",  # formal
        "It needs to stop.",
    ],
)
def test_a_first_person_want_or_need_in_any_voice_is_a_direct_ask(text):
    assert extract(text).values["a_direct"] >= 1


@pytest.mark.parametrize(
    "text",
    [
        "I need to talk to you about the dishes.",
        "I'd like to think we're past this.",
        "I want to say something.",
        "I'd like that.",
        "We need a new plan.",  # "need" after a subject other than I, not the terse form
    ],
)
def test_wanting_to_talk_or_agreeing_is_not_a_direct_ask(text):
    assert extract(text).values["a_direct"] == 0


@pytest.mark.parametrize(
    ("text", "refuses"),
    [
        ("I really can't this week.", True),
        ("I can keep doing Tuesdays, but not every day.", True),
        ("I don't want you texting while driving.", True),
        ("I don't want it.", True),
        ("I don't want to talk about it.", False),
        ("I can't believe it.", False),
    ],
)
def test_a_no_that_names_its_limit_without_a_verb_is_a_refusal(text, refuses):
    assert bool(extract(text).values["a_refusal"]) is refuses


def test_kindly_marks_a_request_as_please_does():
    assert extract("Sir, kindly do not keep meetings at 12:30.").values["a_please"] == 1


@pytest.mark.parametrize("model", ["bank", "rules"])
def test_an_ask_whose_object_is_not_listed_is_strong_assert(model):
    rating = rate("I need the dishes washed the same day.", model)
    assert rating.skills["assert"].level == "strong"
