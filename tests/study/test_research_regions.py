"""Every scroll box around a table (which Chromium makes keyboard-focusable so its overflow can be
scrolled) is a named region: a screen reader says what it holds when it takes focus."""

from __future__ import annotations

from datetime import date
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.template.loader import render_to_string
from django.test import Client

from study.models import Participant
from tests.study.factories import Seeded, seed_study

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(no_llm: None) -> Seeded:
    return seed_study(participants=12, screened_out=1, in_progress=2, withdrawn=1, messages=3)


@pytest.fixture
def boss(db: None) -> Client:
    User.objects.create_superuser("boss", "boss@example.org", "pw-for-tests-1")
    client = Client()
    client.login(username="boss", password="pw-for-tests-1")
    return client


class Page(HTMLParser):
    """Each element's attributes and text, by id; the attributes of every `.table-scroll`."""

    VOID = {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.ids: list[str] = []
        self.boxes: list[dict[str, str]] = []
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if "table-scroll" in found.get("class", "").split():
            self.boxes.append(found)
        if "id" in found:
            self.ids.append(found["id"])
            self.text.setdefault(found["id"], "")
        if tag not in self.VOID:
            self._open.append(found.get("id"))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in self._open:
            if element is not None:
                self.text[element] += data

    def name_of(self, box: dict[str, str]) -> str:
        if box.get("aria-label"):
            return box["aria-label"].strip()
        parts = [self.text.get(i, "").strip() for i in box.get("aria-labelledby", "").split()]
        return " ".join(part for part in parts if part)


def unnamed_boxes(html: str) -> list[dict[str, str]]:
    page = Page(html)
    assert page.boxes, "no scroll box on this page"
    labels = [i for box in page.boxes for i in box.get("aria-labelledby", "").split()]
    duplicated = {i for i in labels if page.ids.count(i) != 1}
    assert not duplicated, duplicated  # a label by id must find exactly one element
    return [
        box
        for box in page.boxes
        if box.get("role") != "region" or box.get("tabindex") != "0" or not page.name_of(box)
    ]


def test_the_dashboards_scroll_boxes_are_named_regions(seeded: Seeded, boss: Client) -> None:
    html = boss.get(f"/research/{seeded.study.slug}/").content.decode()
    page = Page(html)
    assert len(page.boxes) >= 8  # arms, flow, times, calls, four analysis tables
    assert unnamed_boxes(html) == []
    names = {page.name_of(box) for box in page.boxes}
    assert "Participants per step" in names and "Model calls by purpose" in names


def test_the_other_research_pages_scroll_boxes_are_named_regions(
    seeded: Seeded, boss: Client
) -> None:
    person = Participant.objects.filter(study=seeded.study, status="completed").first()
    for url in (
        "/research/",
        f"/research/{seeded.study.slug}/participants/",
        f"/research/{seeded.study.slug}/participants/{person.code}/",
    ):
        assert unnamed_boxes(boss.get(url).content.decode()) == [], url


def test_the_learners_progress_table_is_a_named_region() -> None:
    html = render_to_string(
        "simulations/progress.html",
        {
            "rows": [
                {
                    "conversation_id": 1,
                    "started": date(2026, 1, 5),
                    "title": "My flatmate's dishes",
                    "messages": 3,
                    "mastery": 1.5,
                    "per_skill": {"describe": 2.0, "express": None},
                }
            ],
            "skills": ["describe", "express"],
            "chart": "",
        },
    )
    assert unnamed_boxes(html) == []
