"""The privacy check finds names, contacts and places, and leaves ordinary sentences alone."""

from __future__ import annotations

from itertools import pairwise

import pytest

from simulations.privacy import Finding, find_identifying, redact


def kinds(text: str) -> list[tuple[str, str]]:
    return [(f.kind, f.value) for f in find_identifying(text)]


@pytest.mark.parametrize(
    "text",
    [
        "My boss keeps asking me to stay late on Fridays.",
        "Mom and Dad want me home for Christmas, and I said no in March.",
        "I told my boss on Monday that I can't do the weekend shift.",
        "My Boss keeps emailing me after 9pm.",
        "I've asked my partner three times to call the plumber.",
        "It's been going on since Easter, and my teacher at school gave me a C.",
        "We had a fight about Netflix passwords and the Wi-Fi bill.",
        "My sister-in-law drops her kids off at 7 am without asking.",
        "I paid $450 for the concert tickets and my friend still hasn't paid me back.",
        "My dad has commented on my weight at every Sunday dinner from 2019-2023.",
        "My son (16) plays Fortnite until 3 every night.",
        'He said, "You never listen." I felt hurt.',
        "ok so my bf never texts back and i'm annoyed lol",
        "The rent was due on the 1st; it's the 9th and your half hasn't come through.",
        "In May my roommate promised to clean the bathroom every other week.",
    ],
)
def test_ordinary_sentences_have_no_findings(text: str) -> None:
    assert find_identifying(text) == []


def test_finds_a_name_after_a_relationship_and_removes_it_cleanly() -> None:
    text = "My friend Sarah keeps borrowing my car without asking."
    assert kinds(text) == [("name", "Sarah")]
    assert (
        redact(text, find_identifying(text)) == "My friend keeps borrowing my car without asking."
    )


def test_finds_names_after_named_and_called() -> None:
    text = "A coworker named Tom takes credit for my work. His manager, called Priyanka, agrees."
    assert [v for _, v in kinds(text)] == ["Tom", "Priyanka"]
    assert "Tom" not in redact(text, find_identifying(text))
    assert redact(text, find_identifying(text)).startswith("A coworker takes credit")


def test_finds_names_with_honorifics_and_uses_the_role() -> None:
    text = "Dr. Patel told me to rest, and I asked Mrs Okafor to wait."
    found = find_identifying(text)
    assert [f.value for f in found] == ["Dr Patel", "Mrs Okafor"]
    assert redact(text, found) == "The doctor told me to rest, and I asked them to wait."


def test_finds_common_first_names_anywhere_and_keeps_the_sentence_readable() -> None:
    text = "I told Jessica that I was upset. Jessica's reply was rude."
    assert kinds(text) == [("name", "Jessica"), ("name", "Jessica")]
    assert redact(text, find_identifying(text)) == (
        "I told them that I was upset. Their reply was rude."
    )


def test_unknown_capitalised_names_are_found_where_a_person_would_stand() -> None:
    text = "I told Keisha I was tired but Keisha said I was lazy."
    assert kinds(text) == [("name", "Keisha"), ("name", "Keisha")]
    assert redact(text, find_identifying(text)) == (
        "I told them I was tired but this person said I was lazy."
    )


def test_finds_email_phone_and_handle() -> None:
    text = "Email jo.smith@example.com, call 555-123-4567 or +44 7700 900123, or DM @cool_kid99."
    assert [k for k, _ in kinds(text)] == ["email", "phone", "phone", "handle"]
    assert redact(text, find_identifying(text)) == (
        "Email [email], call [phone number] or [phone number], or DM [username]."
    )


def test_finds_street_addresses_postcodes_and_places() -> None:
    text = "My roommate left dishes at 42 Elm Street in Chicago; my sister lives near Boston."
    assert kinds(text) == [
        ("address", "42 Elm Street"),
        ("place", "Chicago"),
        ("place", "Boston"),
    ]
    assert redact(text, find_identifying(text)) == (
        "My roommate left dishes at [address] in [place]; my sister lives near [place]."
    )
    assert kinds("Our flat is at SW1A 1AA.") == [("postcode", "SW1A 1AA")]
    assert kinds("the zip code is 90210") == [("postcode", "90210")]


def test_years_prices_and_times_are_not_phone_numbers() -> None:
    assert find_identifying("From 2019-2023 I paid $1,200,000 in rent at 10:30 each month.") == []


def test_redact_only_touches_the_findings_it_is_given() -> None:
    text = "My friend Sarah emailed me at sarah@example.org."
    found = find_identifying(text)
    only_email = [f for f in found if f.kind == "email"]
    assert redact(text, only_email) == "My friend Sarah emailed me at [email]."


def test_findings_are_ordered_and_never_overlap() -> None:
    text = "Dr. Patel at 10 Downing Street, email dr.patel@clinic.example, near Leeds."
    spans = [f.span for f in find_identifying(text)]
    assert spans == sorted(spans)
    assert all(a[1] <= b[0] for a, b in pairwise(spans))


def test_a_hand_made_finding_redacts_with_its_kinds_default_word() -> None:
    text = "Meet me in Springfield."
    assert redact(text, [Finding("place", (11, 22), "Springfield")]) == "Meet me in [place]."
