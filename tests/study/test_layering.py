"""The apps' dependencies point one way (STYLE): `study` uses `simulations` and `feedback`; neither
of them, nor the shared `imbue`, imports `study`."""

from __future__ import annotations

import ast

import pytest
from django.contrib import admin

from feedback.models import Draft, FeedbackRequest
from simulations.models import Conversation, Learner, Situation
from tests.conftest import BASE_DIR


def _imports(path) -> set[str]:  # type: ignore[no-untyped-def]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("app", ["simulations", "feedback", "imbue"])
def test_no_module_of_the_lower_apps_imports_study(app: str) -> None:
    offenders = [
        f"{path.relative_to(BASE_DIR)}: {name}"
        for path in sorted((BASE_DIR / app).rglob("*.py"))
        for name in _imports(path)
        if name == "study" or name.startswith("study.")
    ]
    assert offenders == []


def test_the_learners_content_screens_are_still_registered_and_scoped() -> None:
    from study.admin_research import ParticipantContentAdmin

    for model in (Draft, FeedbackRequest, Conversation, Learner):
        assert isinstance(admin.site._registry[model], ParticipantContentAdmin), model
    assert Situation in admin.site._registry
