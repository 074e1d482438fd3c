"""In the browser: a researcher signs in, watches a seeded study's dashboard (flow, analysis table,
charts), sees it update by itself, and downloads the CSV export."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from imbue.models import AuditEntry
from study import codebook
from study.models import Participant, StudyStaff
from tests.study.factories import seed_study

PASSWORD = "a-researcher-password-1"


@pytest.mark.django_db(transaction=True)
def test_researcher_watches_the_dashboard_and_downloads_the_csv(page, live_server_url) -> None:
    seeded = seed_study(slug="e2e-trial", participants=24, screened_out=2, in_progress=3)
    user = User.objects.create_user("researcher", password=PASSWORD, is_staff=True)
    StudyStaff.objects.create(study=seeded.study, user=user, can_view_data=True, can_export=True)

    page.goto(f"/research/{seeded.study.slug}/")
    assert "/admin/login/" in page.url  # signed out: sent to sign in first
    page.fill("#id_username", "researcher")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**/research/{seeded.study.slug}/")

    funnel = page.locator("#funnel-table")
    assert funnel.locator("#funnel-consent td").first.inner_text() == "29"
    assert funnel.locator("#funnel-debrief td").first.inner_text() == "24"
    table = page.locator("#prepost-table")
    row = table.locator("tr[data-situation=S1][data-item=confident][data-arm=feedback]")
    p_value = row.locator("td[data-stat=p]")
    assert p_value.get_attribute("data-value") != "None" and p_value.inner_text().strip()
    assert table.locator("tbody tr").count() == 2 * 2 * 8
    charts = page.locator("#analysis figure svg[role=img]")
    assert charts.count() == 4 and charts.first.is_visible()
    assert page.locator("#funnel svg[role=img]").is_visible()

    # The flow fragment follows the study on its own (htmx polls every 10 s).
    completed = page.locator("#completed-count")
    assert completed.inner_text() == "24"
    Participant.objects.filter(study=seeded.study, status="active").update(status="completed")
    expect(completed).to_have_text("27", timeout=25_000)

    with page.expect_download() as info:
        page.click("#export-csv")
    download = info.value
    assert download.suggested_filename.startswith("e2e-trial-csv-")
    archive = zipfile.ZipFile(download.path())
    assert archive.namelist() == list(codebook.FORMATS["csv"])
    rows = list(csv.reader(io.StringIO(archive.read(codebook.WIDE).decode())))
    assert rows[0] == codebook.columns(seeded.study, codebook.WIDE)
    assert len(rows) - 1 == 29
    entry = AuditEntry.objects.get(action="study.export")
    assert entry.actor_username == "researcher" and entry.details["what"] == "csv"
