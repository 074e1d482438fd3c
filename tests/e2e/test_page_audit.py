"""Every page a learner, a study participant and a researcher sees, audited in Chromium at a
phone's width (360 x 740) and a laptop's (1280 x 800): the layout, the keyboard, the accessibility
tree, text contrast and plain language (tests/e2e/audit.py says what each check is)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from study import services
from study.models import Participant, StudyStaff
from tests.e2e.audit import PAGE_CHECKS, audit
from tests.e2e.test_study import _fresh_rate_limits, open_study  # noqa: F401 (autouse fixture)
from tests.study.factories import seed_study

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}
PASSWORD = "a-researcher-password-1"


class Auditor:
    """Audits the page it is on at both sizes and keeps what it finds, by page."""

    def __init__(self, page, *, plain: bool = True) -> None:
        self.page = page
        self.plain = plain
        self.found: dict[str, list[str]] = {}
        self.external: list[str] = []
        origin = page.context._impl_obj._options.get("baseURL", "")
        page.on(
            "request",
            lambda request: (
                None
                if request.url.startswith((origin, "data:", "ws://127.0.0.1", "blob:"))
                else self.external.append(request.url)
            ),
        )

    def check(self, label: str, *, keyboard: bool = True, allow: tuple[str, ...] = ()) -> None:
        page = self.page
        page.set_viewport_size(DESKTOP)
        problems = audit(page, plain=self.plain, keyboard=keyboard)
        page.set_viewport_size(PHONE)
        problems += [f"phone: {p}" for p in page.evaluate(PAGE_CHECKS)]
        page.set_viewport_size(DESKTOP)
        problems = [p for p in problems if not any(a in p for a in allow)]
        if problems:
            self.found[label] = sorted(set(problems))

    def visit(self, label: str, url: str, **options) -> None:
        self.page.goto(url)
        self.check(label, **options)

    def assert_clean(self) -> None:
        found = self.problems()
        assert not found, "\n".join(f"{page}: {p}" for page, ps in found.items() for p in ps)

    def problems(self) -> dict[str, list[str]]:
        found = dict(self.found)
        if self.external:
            found["external resources"] = sorted(set(self.external))
        return found


def test_every_learner_page_passes_the_audit(page, fake_llm_server) -> None:
    fake_llm_server.reset()
    auditor = Auditor(page)
    for label, url in (
        ("home", "/"),
        ("hub, empty", "/practice/"),
        ("new situation", "/practice/situations/new/"),
        ("library", "/practice/library/"),
        ("progress, empty", "/practice/progress/"),
        ("resume", "/practice/resume/"),
        ("not found", "/practice/c/999999/"),
    ):
        auditor.visit(label, url)

    page.goto("/practice/resume/")
    page.fill("#id_code", "NOT-A-CODE")
    page.click("button[type=submit]")
    page.wait_for_selector("#code-error")
    auditor.check("resume, wrong code")

    page.goto("/practice/situations/new/")
    page.click("button[type=submit]:has-text('Start practising')")
    page.wait_for_selector("#form-errors")
    auditor.check("new situation, errors")

    # A long word that cannot wrap at a space (learners paste file names and addresses).
    page.fill(
        "#id_situation",
        "My boss Sarah Jones phones me on 07700 900123 every Sunday about"
        " weekly_report_spreadsheet_template_final_version_two_copy.",
    )
    page.fill("#id_goal", "Get my boss to stop phoning me at the weekend.")
    page.check("#id_category_work")
    page.check("#id_difficulty_5")
    page.click("button[type=submit]:has-text('Start practising')")
    page.wait_for_selector("#privacy-warning")
    auditor.check("new situation, privacy warning")
    page.click("button[value=remove]")
    page.wait_for_url("**/practice/c/*/")
    page.wait_for_selector("#chat[data-socket=open]")
    auditor.check("conversation, new")

    page.check("#strategy-assert")
    page.fill("#message-text", "Please do not phone me on Sundays.")
    page.click("#feedback-button")
    page.wait_for_selector("#feedback-panel-body[data-state=final]", timeout=20_000)
    page.click("#send-button")
    expect(page.locator("#transcript .msg-partner.msg-complete")).to_have_count(1, timeout=20_000)
    auditor.check("conversation, one turn and feedback")

    page.click(".end-form button")
    page.wait_for_selector("#summary-heading")
    auditor.check("conversation, ended")

    for label, url in (("hub", "/practice/"), ("progress", "/practice/progress/")):
        auditor.visit(label, url)

    # A message that says the learner may not be safe pauses the practice, with support shown.
    page.goto("/practice/")
    page.click("button:has-text('Practise this again')")
    page.wait_for_url("**/practice/c/*/")
    page.wait_for_selector("#chat[data-socket=open]")
    page.check("#strategy-express")
    page.fill("#message-text", "Honestly I just want to die.")
    page.click("#send-button")
    page.wait_for_selector("#summary-heading:has-text('paused')", timeout=20_000)
    auditor.check("conversation, paused")
    page.goto("/practice/c/1/send/")
    auditor.check("method not allowed")

    # A form that comes back refused: characters that cannot be stored, then an expired page.
    page.goto("/practice/situations/new/")
    page.evaluate("document.getElementById('id_situation').value = 'My boss\\u0000 calls.'")
    page.click("button[type=submit]:has-text('Start practising')")
    page.wait_for_selector("textarea[readonly]")
    auditor.check("form refused")
    page.goto("/practice/resume/")
    page.evaluate("document.querySelector('[name=csrfmiddlewaretoken]').remove()")
    page.fill("#id_code", "ABC")
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('expired')")
    auditor.check("page expired")
    auditor.assert_clean()


def _join(page, study) -> None:
    page.goto(f"/s/{study.slug}/?PROLIFIC_PID=audit-{study.slug}&STUDY_ID=s&SESSION_ID=s")


def test_every_participant_page_passes_the_audit(page, live_server_url, fake_llm_server) -> None:
    fake_llm_server.reset()
    auditor = Auditor(page)
    study = open_study("audit-feedback", "feedback", live_server_url)
    auditor.visit("entry", f"/s/{study.slug}/")
    page.fill("#id_code", "NOT-A-CODE")
    page.click("button:has-text('Continue where I stopped')")
    page.wait_for_selector("#code-error")
    auditor.check("entry, wrong code")

    _join(page, study)
    page.wait_for_selector("#agree")
    auditor.check("consent")
    page.click("#agree")
    page.wait_for_url("**/step/situations/")
    auditor.check("situations")
    page.click("#continue")
    page.wait_for_selector("#form-errors")
    auditor.check("situations, errors")
    for prefix, difficulty in (("s1", 3), ("s2", 7)):
        page.fill(f"#id_{prefix}-situation", "My flatmate leaves their dishes in the sink.")
        page.fill(f"#id_{prefix}-goal", "Get my flatmate to wash up the same evening.")
        page.check(f"#id_{prefix}-category_social")
        page.check(f"#id_{prefix}-difficulty_{difficulty}")
    page.click("#continue")
    page.wait_for_url("**/step/pre_s1/")
    auditor.check("survey")
    page.click("#continue")
    page.wait_for_selector("#form-errors")
    auditor.check("survey, errors")
    for step in ("pre_s1", "pre_s2"):
        page.wait_for_url(f"**/step/{step}/")
        for item in services.active_items():
            page.check(f"#item_{item.key}_4")
        page.click("#continue")
    page.wait_for_url("**/step/eval_s1_pre/")
    page.wait_for_selector("#chat[data-socket=open]")
    auditor.check("evaluation chat")
    page.check("#strategy-describe")
    page.fill("#message-text", "The dishes have been in the sink for two weeks. #agree")
    page.click("#send-button")
    page.wait_for_selector("#summary")
    expect(page.locator("#continue")).to_be_enabled(timeout=15_000)
    auditor.check("evaluation chat, ended")
    page.click("#continue")
    page.wait_for_url("**/step/train_s1/")
    page.wait_for_selector("#chat[data-socket=open]")
    auditor.check("training chat with feedback")

    page.click("#withdraw-link")
    page.wait_for_selector("#confirm-withdraw")
    auditor.check("withdraw")
    page.click("#confirm-withdraw")
    page.wait_for_selector("#withdrawal-receipt")
    auditor.check("withdrawn")

    other = open_study("audit-decline", "simulation", live_server_url)
    _join(page, other)
    page.click("#decline")
    page.wait_for_selector("#screenout")
    auditor.check("screened out")

    done = open_study("audit-done", "simulation", live_server_url)
    _join(page, done)
    page.click("#agree")
    participant = Participant.objects.get(study=done)
    Participant.objects.filter(pk=participant.pk).update(step="debrief", status="completed")
    page.goto(f"/s/{done.slug}/step/debrief/")
    page.wait_for_selector("#completion-code")
    auditor.check("debrief")
    auditor.assert_clean()


def test_every_researcher_page_passes_the_audit(page) -> None:
    seeded = seed_study(slug="audit-trial", participants=6, screened_out=1, in_progress=2)
    user = User.objects.create_user("auditor", password=PASSWORD, is_staff=True)
    StudyStaff.objects.create(study=seeded.study, user=user, can_view_data=True, can_export=True)
    auditor = Auditor(page, plain=False)
    slug = seeded.study.slug
    page.goto(f"/research/{slug}/")
    auditor.check("sign in")
    page.fill("#id_username", "auditor")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**/research/{slug}/")
    auditor.check("dashboard")
    auditor.visit("studies", "/research/")
    auditor.visit("participants", f"/research/{slug}/participants/")
    code = Participant.objects.filter(study=seeded.study, status="completed").first().code
    auditor.visit("participant", f"/research/{slug}/participants/{code}/")
    participant = Participant.objects.get(study=seeded.study, code=code)
    # Django's inline tables have no caption; each sits in a fieldset its heading names.
    inline_tables = ("a table without a name",)
    auditor.visit(
        "admin: study", f"/admin/study/study/{seeded.study.pk}/change/", allow=inline_tables
    )
    auditor.visit("admin: participant", f"/admin/study/participant/{participant.pk}/change/")
    auditor.visit("admin: home", "/admin/")
    # Django's column-sort arrows are 14 px icons beside the 24 px column heading links.
    auditor.visit(
        "admin: participants",
        "/admin/study/participant/",
        allow=(*inline_tables, "a.toggle.ascending", "a.toggle.descending"),
    )
    auditor.assert_clean()


FAULTY = """<!doctype html><html><head><title>Faulty</title></head><body>
<main><h1>One</h1><h3>A skipped level</h3><h1>Two</h1>
<p style="color:#aaa; background:#fff">Faint text</p>
<input id="nameless" type="text">
<button id="speck" style="width:10px; height:10px; padding:0"></button>
<div aria-live="assertive">Shouted</div>
<p>Error 429: the CSRF token is missing.</p>
<div style="width:2000px">Wide</div>
<a href="/elsewhere" id="ringless" style="outline:none">A link without a ring</a>
<input id="trap" aria-label="Trap" onkeydown="if (event.key === 'Tab') event.preventDefault()">
</main></body></html>"""

SOUND = """<!doctype html><html lang="en"><head><title>Sound</title></head><body>
<a href="#main" style="display:inline-block; padding:.5rem">Skip to content</a>
<main id="main"><h1>Fine</h1><h2>Also fine</h2><p>Plain words, dark on light.</p>
<label for="name">Your name</label><input id="name" type="text" style="height:30px">
<button style="padding:.6rem 1rem">Save</button></main></body></html>"""


def test_the_audit_finds_each_kind_of_problem_it_claims_to(page) -> None:
    page.set_content(FAULTY)
    found = "\n".join(audit(page))
    for expected in (
        "no lang attribute",
        "2 h1 elements",
        "heading h3 after h1 skips a level",
        "contrast 2.32:1 (4.5:1 wanted)",
        "a textbox without a name",
        "button#speck",
        "target 10x10 px",
        "assertive live region",
        "the page says 'CSRF'",
        "the page says '429'",
        "scrolls sideways at 1280 px",
        "no visible focus ring on a#ringless",
        "not the skip link",
        "no skip link",
        "focus is caught: Tab goes back to input#trap",
    ):
        assert expected in found, (expected, found)
    page.set_content(SOUND)
    assert audit(page) == []
