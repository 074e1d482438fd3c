import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from feedback.raters.llm import rate_with_model
from feedback.skills import SKILL_KEYS, SKILLS

LINES = [
    {
        "id": "x-1",
        "situation": "My roommate leaves dishes in the sink for days.",
        "goal": "Get my roommate to wash up the same day.",
        "partner_said": "",
        "text": "The pans from Monday were still in the sink on Thursday. Please wash up today.",
        "labels": {
            "describe": "strong",
            "express": "none",
            "assert": "strong",
            "reinforce": "none",
            "negotiate": "none",
            "mindful": "yes",
            "confident": "yes",
        },
    },
    {
        "id": "x-2",
        "situation": "My boss keeps adding tasks after planning.",
        "goal": "Stop tasks being added mid-sprint.",
        "partner_said": "Everyone is stretched.",
        "text": "sorry, maybe it's fine, forget it",
        "labels": {
            "describe": "none",
            "express": "none",
            "assert": "none",
            "reinforce": "none",
            "negotiate": "none",
            "mindful": "no",
            "confident": "no",
        },
    },
]


@pytest.fixture
def bank_file(tmp_path: Path) -> Path:
    path = tmp_path / "lines.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES), encoding="utf-8")
    return path


def run(*args: str) -> str:
    out = StringIO()
    call_command("evaluate_rater", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_model_rater_makes_one_call_covering_the_chosen_skills_and_both_states(fake_llm: Any):
    rating = rate_with_model(
        text="Please wash your dishes tonight.",
        situation="My roommate leaves dishes out.",
        goal="Dishes washed the same day.",
        chosen=["assert", "negotiate"],
    )
    assert rating.engine == "llm"
    assert list(rating.skills) == ["assert", "negotiate", "mindful", "confident"]
    for key, skill_rating in rating.skills.items():
        assert skill_rating.level in SKILLS[key].levels
    assert rating.call_id is not None
    requests = fake_llm.requests()
    assert len(requests) == 1
    body = requests[0]["body"]
    assert "Assert" in body["messages"][0]["content"]
    assert SKILLS["express"].definition not in body["messages"][0]["content"]


@pytest.mark.django_db
def test_evaluate_rater_with_the_model_rates_every_line_with_one_call_each(
    fake_llm: Any, bank_file: Path
):
    result = json.loads(run(str(bank_file), "--rater", "llm", "--json", "--workers", "1"))
    assert set(result) >= {"overall_macro_f1", "per_skill", "n", "predictions"}
    assert result["n"] == 2
    assert [p["id"] for p in result["predictions"]] == ["x-1", "x-2"]
    for prediction in result["predictions"]:
        assert set(prediction["ratings"]) == set(SKILL_KEYS)
        for key, level in prediction["ratings"].items():
            assert level in SKILLS[key].levels
    assert len(fake_llm.requests()) == 2


@pytest.mark.django_db
def test_evaluate_rater_with_the_model_but_none_configured_says_so(no_llm: None, bank_file: Path):
    with pytest.raises(CommandError, match="No language model is configured"):
        run(str(bank_file), "--rater", "llm")


def test_evaluate_rater_offline_prints_json_with_every_line(bank_file: Path):
    result = json.loads(run(str(bank_file), "--json"))
    assert result["n"] == 2
    assert 0.0 <= result["overall_macro_f1"] <= 1.0
    assert set(result["per_skill"]) == set(SKILL_KEYS)
    assert result["per_skill"]["assert"]["confusion"].keys() == {"tp", "fp", "fn", "tn"}
    assert len(result["predictions"]) == 2


def test_evaluate_rater_offline_prints_a_table(bank_file: Path):
    table = run(str(bank_file))
    for key in SKILL_KEYS:
        assert key in table
    assert "overall" in table


@pytest.mark.django_db(transaction=True)
def test_model_rater_gives_schema_valid_feedback_for_every_dev_line(fake_llm: Any):
    dev = Path(__file__).resolve().parents[2] / "feedback" / "data" / "dev.jsonl"
    if not dev.exists():
        pytest.skip("the bank's dev split is not in the repository")
    n_lines = sum(1 for line in dev.read_text(encoding="utf-8").splitlines() if line.strip())
    err = StringIO()
    out = StringIO()
    call_command("evaluate_rater", str(dev), "--rater", "llm", "--json", stdout=out, stderr=err)
    result = json.loads(out.getvalue())
    assert result["n"] == n_lines == len(result["predictions"])
    assert "fell back" not in err.getvalue()
    for prediction in result["predictions"]:
        for key, level in prediction["ratings"].items():
            assert level in SKILLS[key].levels
    assert len(fake_llm.requests()) == n_lines
