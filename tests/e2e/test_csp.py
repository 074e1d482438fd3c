"""The Content-Security-Policy in a real browser: a learner's whole visit (pages, the live chat
socket, feedback, the progress chart) and the admin raise no CSP violation."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Records every violation the page reports, from the first script on.
LISTEN = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


def _violations(page, console: list[str]) -> list[str]:
    return page.evaluate("window.__cspViolations || []") + [
        m for m in console if "Content Security Policy" in m
    ]


def test_a_learners_visit_and_the_admin_raise_no_csp_violation(page, fake_llm_server) -> None:
    fake_llm_server.reset()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.add_init_script(LISTEN)
    found: dict[str, list[str]] = {}

    for url in ("/", "/practice/", "/practice/library/", "/practice/resume/"):
        page.goto(url)
        found[url] = _violations(page, console)

    page.goto("/practice/situations/new/")
    page.fill("#id_situation", "My flatmate leaves the dishes in the sink for days at a time.")
    page.fill("#id_goal", "Agree that dishes are washed the same evening.")
    page.check("#id_category_social")
    page.check("#id_difficulty_4")
    page.click("button[type=submit]:has-text('Start practising')")
    page.wait_for_url("**/practice/c/*/")
    page.wait_for_selector("#chat[data-socket=open]")
    page.check("#strategy-describe")
    page.fill("#message-text", "The dishes have been in the sink since Sunday.")
    page.click("#send-button")
    page.wait_for_selector("#transcript .msg-partner.msg-complete", timeout=20_000)
    found["conversation"] = _violations(page, console)

    page.goto("/practice/progress/")
    found["progress"] = _violations(page, console)

    User.objects.create_superuser("csp", "csp@example.org", "a-long-test-password-1")
    page.goto("/admin/login/")
    page.fill("#id_username", "csp")
    page.fill("#id_password", "a-long-test-password-1")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    for url in ("/admin/", "/admin/simulations/situation/", "/admin/imbue/auditentry/"):
        page.goto(url)
        found[url] = _violations(page, console)

    assert {k: v for k, v in found.items() if v} == {}
