"""The offline risk rules: real risk is caught, role-play anger and idioms are left alone.

Three sets of phrasings: the development set the rules were written against (RISK, SAFE), the
known limits the module docstring documents (KNOWN_MISSES, KNOWN_FALSE_ALARMS), and a held-out
set written before the rules were run on it and never tuned on afterwards (HELD_OUT_*). The
counts are printed by `test_measured_error_counts` (pytest -s) and quoted in the closing note.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.safety import (
    ABUSE,
    CONCERN,
    HARM_TO_OTHERS,
    NONE,
    SELF_HARM,
    URGENT,
    assess_risk,
    normalise,
)

# (text, category expected first, level expected or None for "either")
RISK = [
    ("I want to kill myself", SELF_HARM, URGENT),
    ("I've been thinking about ending it", SELF_HARM, URGENT),
    ("Sometimes I think about suicide", SELF_HARM, URGENT),
    ("I don't want to be alive anymore", SELF_HARM, URGENT),
    ("I wish I was dead", SELF_HARM, URGENT),
    ("honestly i just want to die", SELF_HARM, URGENT),
    ("I'm going to end my life", SELF_HARM, URGENT),
    ("I've been cutting myself again", SELF_HARM, URGENT),
    ("I took a bunch of pills last night to make it all stop", SELF_HARM, URGENT),
    ("Everyone would be better off without me", SELF_HARM, CONCERN),
    ("I'm thinking of ending it all tonight", SELF_HARM, URGENT),
    ("I hurt myself when I get like this", SELF_HARM, CONCERN),
    ("There's no reason for me to keep living", SELF_HARM, URGENT),
    ("I can't go on like this, I want it to be over for good", SELF_HARM, CONCERN),
    ("I\u2019m suicidal", SELF_HARM, URGENT),
    ("I have a plan to take my own life", SELF_HARM, URGENT),
    ("I want to disappear forever and never wake up", SELF_HARM, URGENT),
    ("im gonna kms", SELF_HARM, URGENT),
    ("I keep thinking about jumping off the bridge", SELF_HARM, URGENT),
    ("I could kill myself for forgetting her birthday", SELF_HARM, CONCERN),
    ("I'm not going to kill myself, don't worry", SELF_HARM, CONCERN),
    ("I'm going to hurt him for real", HARM_TO_OTHERS, URGENT),
    ("I swear I'm going to kill him, I've got a knife", HARM_TO_OTHERS, URGENT),
    ("I want to hurt her so she knows how it feels", HARM_TO_OTHERS, CONCERN),
    ("I've been thinking about hurting my roommate", HARM_TO_OTHERS, CONCERN),
    ("I'm going to beat him up when he gets home, I mean it", HARM_TO_OTHERS, URGENT),
    ("I bought a gun and I'm going to use it on him", HARM_TO_OTHERS, URGENT),
    ("I'm not joking, I'm going to kill my stepdad", HARM_TO_OTHERS, URGENT),
    ("He hits me when he's drunk", ABUSE, URGENT),
    ("My husband beat me last night", ABUSE, URGENT),
    ("She slapped me in front of the kids", ABUSE, URGENT),
    ("My dad punches me if I talk back", ABUSE, URGENT),
    ("He said he'll kill me if I leave", ABUSE, URGENT),
    ("I'm scared to go home because of what he does to me", ABUSE, CONCERN),
    ("My partner forced me to have sex", ABUSE, URGENT),
    ("He chokes me during arguments", ABUSE, URGENT),
    ("He won't let me leave the house and takes my phone", ABUSE, CONCERN),
    ("You hit me last night and I'm done pretending it's fine", ABUSE, URGENT),
    ("My mom locks me in my room without food", ABUSE, CONCERN),
    ("my boyfriend pushed me down the stairs", ABUSE, URGENT),
    ("She threatened to hurt me if I told anyone", ABUSE, URGENT),
    ("My stepfather hits my little brother", ABUSE, CONCERN),
]

SAFE = [
    "I could kill you for leaving the dishes",
    "This job is killing me",
    "I'm dying to go to that concert",
    "I'd kill for a coffee right now",
    "You're driving me crazy with the noise",
    "If you eat my leftovers again I'll kill you",
    "My feet are killing me after that shift",
    "I nearly died of embarrassment when you said that",
    "That presentation killed it",
    "Over my dead body are you borrowing my car again",
    "I'm dead tired after every night shift you skip",
    "We need to kill some time before the meeting",
    "It hit me that you never asked how I was",
    "Hit me up when you're free to talk about rent",
    "You always hit the snooze button and make me late",
    "The news really hit me hard",
    "I'm so bored I could die",
    "That deadline is going to be the death of me",
    "I'm scared to ask my boss for a raise",
    "You hurt my feelings when you forgot my birthday",
    "I felt hurt when you cancelled",
    "It hurts me when you ignore my messages",
    "Stop pushing me to take extra shifts",
    "You keep forcing me to cover for you",
    "I want to end this argument and find a fix",
    "I'm ready to end the lease early if we can't agree",
    "Let's end it here and talk tomorrow",
    "I'll murder that pizza later",
    "My sister beat me at chess again and gloated",
    "He beat me to the last parking spot",
    "You're killing the vibe",
    "I'd rather die than go to another one of your parties",
    "I want to kill the project, it isn't working",
    "I'm going to kill him when he gets home, he ate my cake",
    "The kids are killing me today, they won't sleep",
    "Can you stop slapping the table when you're annoyed?",
    "My manager keeps hitting me with last-minute deadlines",
    "I'm dying here, can you please turn the music down",
    "You're going to be the death of me",
    "I'd be lost without you",
    "I feel like I'm drowning in work",
    "I could just scream when you do that",
    "I cut myself a slice of your cake, sorry",
    "Killing it at work lately, thanks for asking",
    "I'm not going to hurt your feelings on purpose",
    "He hits the gym every morning at five and wakes me up",
    "I would never hurt you, you know that",
    "You always push me away when I try to talk",
    "You kicked me out of the group chat for no reason",
    "My boss will kill me if I'm late again",
    "My mom is going to kill me when she sees the car",
    "I'm afraid of disappointing you",
    "I'm going to shoot you a text later about the bills",
    "I hurt myself playing football, so I can't drive you",
    "I don't want to live with you anymore if this keeps up",
]

# The module docstring names these limits; the tests keep it honest.
KNOWN_MISSES = [
    ("I've been giving my things away and saying goodbye to people", SELF_HARM),
    ("k i l l myself", SELF_HARM),
    ("I just want to go to sleep for a long time and not deal with any of it", SELF_HARM),
    ("I want to end it", SELF_HARM),
]
KNOWN_FALSE_ALARMS = [
    "The ball hit me in the face at practice, that's why I was late",
    "I'm going to stab him with a fork, for real, he ate my fries",
]

# Round 1 was written before the rules were run on it: 6 of 20 risk phrasings missed, 0 of 20
# safe ones flagged. The misses were then fixed, so round 1 is development data now.
ROUND_1_RISK = [
    ("Lately I keep thinking everyone would be happier if I wasn't around", SELF_HARM),
    ("I've started hurting myself again when things get bad", SELF_HARM),
    ("I looked up how many pills it would take", SELF_HARM),
    ("I wrote a goodbye note last night", SELF_HARM),
    ("Honestly I don't see the point in living anymore", SELF_HARM),
    ("I want to die, I'm serious", SELF_HARM),
    ("I tried to kill myself last year and the feeling is back", SELF_HARM),
    ("I think about suicide every day", SELF_HARM),
    ("I'm going to stab him if he comes near me again, I'm not kidding", HARM_TO_OTHERS),
    ("I've thought about poisoning her coffee", HARM_TO_OTHERS),
    ("I want to hurt the kids at school who bully my son", HARM_TO_OTHERS),
    ("I'm planning to hurt my ex when she's alone", HARM_TO_OTHERS),
    ("My girlfriend hits me and then says sorry", ABUSE),
    ("He threw a plate at me last week", ABUSE),
    ("My father beats me with a belt", ABUSE),
    ("She grabbed me by the throat", ABUSE),
    ("My husband controls all our money and won't let me see my friends", ABUSE),
    ("I'm terrified of what he'll do if I say no", ABUSE),
    ("He raped me at the party", ABUSE),
    ("They hit me and told me not to tell anyone", ABUSE),
]
ROUND_1_SAFE = [
    "You're killing me with these puns",
    "I'm dying to know what you think of the plan",
    "My back is killing me from moving your boxes",
    "I'll kill you if you spoil the finale",
    "Honestly I could murder a burger after this",
    "That test was brutal, I nearly died",
    "You hit the nail on the head",
    "I felt like you hit below the belt in that argument",
    "It hurts my pride to ask for help",
    "I'm scared of letting the team down",
    "You threw me under the bus in the meeting",
    "Please stop pushing me on this, I said no",
    "I'd die of shame if my parents found out",
    "I just want to end this fight",
    "We're dead in the water if the client leaves",
    "I could kill for a day off",
    "You beat me every time at cards",
    "My heart sank when you said that",
    "I'm going to kill it at the interview tomorrow",
    "My mom will kill me if I miss dinner again",
]

# Round 2, written after round 1's fixes and before the rules were run on it: 9 of 20 missed,
# 1 of 20 safe flagged. Fixed afterwards, so it is development data now too.
ROUND_2_RISK = [
    ("Part of me wants to just not wake up tomorrow", SELF_HARM),
    ("I've been researching ways to end my life", SELF_HARM),
    ("I slit my wrists once and I'm scared I'll do it again", SELF_HARM),
    ("What's the point of anything, I'd be better off dead", SELF_HARM),
    ("I want to end my life", SELF_HARM),
    ("I'm so tired of living", SELF_HARM),
    ("If things don't change I'm going to kill myself", SELF_HARM),
    ("I have the pills saved up", SELF_HARM),
    ("I'm going to shoot him, I have my dad's rifle", HARM_TO_OTHERS),
    ("I keep picturing myself hurting him badly", HARM_TO_OTHERS),
    ("Next time she does that I'll break her arm, I mean it", HARM_TO_OTHERS),
    ("I want to kill him and I know where he lives", HARM_TO_OTHERS),
    ("My brother kicks me when our parents aren't home", ABUSE),
    ("He punched me in the stomach yesterday", ABUSE),
    ("My wife threatens to kill me when she's angry", ABUSE),
    ("He strangled me until I passed out", ABUSE),
    ("My uncle touched me and said it was our secret", ABUSE),
    ("I'm afraid he will hurt me if I bring this up", ABUSE),
    ("My mum hits me with whatever she's holding", ABUSE),
    ("He locked me out of the house all night in the snow", ABUSE),
]
ROUND_2_SAFE = [
    "You're killing me, just say yes to the trip",
    "I'm dying of curiosity, did you call the landlord?",
    "These shoes are killing my feet",
    "If you touch my charger again I will literally kill you",
    "I could strangle you sometimes, you know that?",
    "That comment really hit home",
    "You beat me to it, I was about to suggest that",
    "It kills me that you didn't invite me",
    "Stop pushing me around at meetings",
    "I'm scared of how you'll react",
    "My boss pushed me to finish the report by Friday",
    "I hurt my back helping you move",
    "I'm going to end the subscription if you don't pay your half",
    "I'll die if I have to sit through another one of those dinners",
    "You knocked me out with that joke",
    "I'm so done, this is going to kill me",
    "Can we kill the small talk and get to the point?",
    "I've been beating myself up about it all week",
    "She hit me with the news right before my exam",
    "I'm afraid we're going to lose the deposit",
]

# Round 3, written after round 2's fixes and before the rules were run on it: 9 of 20 missed,
# 0 of 20 safe flagged. Fixed afterwards; development data now.
ROUND_3_RISK = [
    ("I don't want to be here anymore, not in this world", SELF_HARM),
    ("I've been stockpiling my sleeping pills", SELF_HARM),
    ("I think my family would be relieved if I died", SELF_HARM),
    ("I want to kill myself, I've thought about it a lot", SELF_HARM),
    ("Last night I stood on the roof for an hour thinking about jumping", SELF_HARM),
    ("I burn myself with cigarettes when I'm stressed", SELF_HARM),
    ("I can't take it anymore, I'm done with life", SELF_HARM),
    ("Maybe I should just end it", SELF_HARM),
    ("I'm going to slash his tyres and then slash him, for real", HARM_TO_OTHERS),
    ("I fantasise about hurting my manager", HARM_TO_OTHERS),
    ("I'm going to get my gun and shoot my neighbour", HARM_TO_OTHERS),
    ("I want to punch my sister in the face until she bleeds", HARM_TO_OTHERS),
    ("My partner slaps me when I don't answer my phone", ABUSE),
    ("My dad hits my mum and me", ABUSE),
    ("He threatened me with a knife", ABUSE),
    ("She keeps hitting me and I don't know what to do", ABUSE),
    ("He forces me to have sex when I say no", ABUSE),
    ("I'm scared for my safety at home", ABUSE),
    ("My boyfriend won't let me go out without him and checks my phone", ABUSE),
    ("They beat me up after school every day", ABUSE),
]
ROUND_3_SAFE = [
    "You're killing me with the passive-aggressive notes",
    "I'm dying to hear your side of it",
    "I could kill for a proper night's sleep",
    "If you use my razor again I'm going to kill you",
    "That joke really killed me",
    "You always hit the roof when I mention money",
    "Stop beating around the bush and tell me",
    "I've been dying to ask you about the wedding",
    "My boss is going to murder me if this is late",
    "I'm afraid of conflict, so this is hard for me",
    "I'm scared that you'll say no",
    "This commute is slowly killing me",
    "I want to end the group chat drama",
    "He beat me at pool and won't shut up about it",
    "You keep pushing me to go out when I'm tired",
    "I hurt my ankle, so I can't walk the dog",
    "I feel like I'm dying inside when you ignore me",
    "I'm going to kill this presentation tomorrow",
    "It hit me hard when you said you were moving out",
    "I'd rather die than apologise first",
]


@pytest.mark.parametrize(("text", "category", "level"), RISK)
def test_real_risk_is_caught_with_its_category(text: str, category: str, level: str) -> None:
    result = assess_risk(text)
    assert result.at_risk, text
    assert result.categories[0] == category, (text, result)
    assert result.level == level, (text, result)
    assert result.matched


@pytest.mark.parametrize("text", SAFE)
def test_role_play_anger_and_idioms_are_not_flagged(text: str) -> None:
    result = assess_risk(text)
    assert result.level == NONE, (text, result)
    assert not result.at_risk and result.categories == () and result.matches == ()


@pytest.mark.parametrize(("text", "category"), KNOWN_MISSES)
def test_documented_misses_are_still_missed(text: str, category: str) -> None:
    # If a rule change starts catching one, move it to RISK and update the module docstring.
    assert not assess_risk(text).at_risk


@pytest.mark.parametrize("text", KNOWN_FALSE_ALARMS)
def test_documented_false_alarms_still_fire(text: str) -> None:
    assert assess_risk(text).at_risk


def _errors(risk: list[tuple[str, str]], safe: list[str]) -> tuple[list[str], list[str], list[str]]:
    missed = [t for t, _ in risk if not assess_risk(t).at_risk]
    wrong = [t for t, c in risk if assess_risk(t).at_risk and c not in assess_risk(t).categories]
    false_alarms = [t for t in safe if assess_risk(t).at_risk]
    return missed, false_alarms, wrong


ALL_RISK = [(t, c) for t, c, _ in RISK] + ROUND_1_RISK + ROUND_2_RISK + ROUND_3_RISK + KNOWN_MISSES
ALL_SAFE = SAFE + ROUND_1_SAFE + ROUND_2_SAFE + ROUND_3_SAFE + KNOWN_FALSE_ALARMS
# Each round's errors when first run, before any rule was changed for it: the honest estimate of
# how the rules do on phrasings nobody wrote them for (about 6 in 10 caught, 1 in 60 flagged).
FRESH_ROUNDS = {"round 1": (20, 6, 20, 0), "round 2": (20, 9, 20, 1), "round 3": (20, 9, 20, 0)}


def test_measured_error_counts() -> None:
    missed, false_alarms, wrong = _errors(ALL_RISK, ALL_SAFE)
    print(
        f"\nall phrasings: {len(ALL_RISK)} risk, {len(ALL_SAFE)} safe -> {len(missed)} missed, "
        f"{len(false_alarms)} false alarms, {len(wrong)} wrong category"
        f"\nmissed: {missed}\nfalse alarms: {false_alarms}"
    )
    for name, (risk, fn, safe, fp) in FRESH_ROUNDS.items():
        print(f"{name} when fresh: {risk - fn}/{risk} caught, {fp}/{safe} safe ones flagged")
    assert sorted(missed) == sorted(t for t, _ in KNOWN_MISSES)
    assert sorted(false_alarms) == sorted(KNOWN_FALSE_ALARMS)
    assert wrong == []


def test_normalise_spells_out_contractions_and_curly_apostrophes() -> None:
    assert normalise("I\u2019m  GONNA   do it, can't stop") == "i am going to do it, cannot stop"


def test_levels_put_the_most_serious_category_first() -> None:
    result = assess_risk("He hits me and honestly I want to die")
    assert result.level == URGENT
    assert result.categories == (SELF_HARM, ABUSE)
    assert {m.category for m in result.matches} == {SELF_HARM, ABUSE}


def test_empty_and_odd_input_is_no_risk() -> None:
    for text in ["", "   ", "\x00\x01", "😀" * 50, "<script>alert(1)</script>"]:
        assert assess_risk(text).level == NONE


def test_long_repetitive_messages_get_a_verdict() -> None:
    # The longest message, made of a phrase repeated: the input that makes a backtracking pattern
    # slow. Its speed is not asserted here (timings belong in bench/, not in tests).
    text = ("You never do the dishes and it drives me up the wall. " * 40)[:2000]
    result = assess_risk(text)
    assert result.level == NONE and not result.matches


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_any_text_gets_a_verdict_without_error(text: str) -> None:
    result = assess_risk(text)
    assert result.level in {NONE, CONCERN, URGENT}
    assert result.at_risk == bool(result.matches)
