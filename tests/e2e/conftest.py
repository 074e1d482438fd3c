"""Browser tests: uvicorn serving the product on the test database, a real Celery worker, the fake
model server, and Debian's Chromium driven by Playwright (never a downloaded browser).

Fixtures for any browser test:
- `live_server_url` (session): the product at http://127.0.0.1:<free port>, talking to the
  session's fake model server (`fake_llm_server`, steer it with `.configure()` / `.faults()`) and
  with the shared Celery worker running. Tests that read or write the database need
  `@pytest.mark.django_db(transaction=True)`: the server only sees committed rows.
- `browser` (module): a Chromium instance. `page` (function): a fresh context (its own cookies,
  so a new browser identity) and page, with `base_url` set to the live server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from imbue.devservices import web_server_argv
from tests.conftest import BASE_DIR, Worker, free_port, process_env, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # e.g. 503 from /healthz while a service warms up: the server is up
    except OSError:
        return False


@pytest.fixture(scope="session")
def live_server_url(
    django_db_setup: None,
    fake_llm_server,
    _shared_worker: Worker,
    artifacts_dir: Path,
) -> Iterator[str]:
    """The product served by uvicorn (one process, like `make run`), on the test database."""
    port = free_port()
    env = process_env(
        LLM_BASE_URL=fake_llm_server.base_url,
        LLM_API_KEY="test-key",
        LLM_TIMEOUT="10",
        LLM_BACKOFF="0.01",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DEBUG="0",
    )
    log = (artifacts_dir / "e2e-server.log").open("ab")
    process = subprocess.Popen(
        web_server_argv("127.0.0.1", str(port), "1", "--log-level", "warning"),
        cwd=BASE_DIR, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is None and _answers(url + "/healthz"), 30, "uvicorn")
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Chromium for one test module (Playwright's loop must not outlive the browser tests)."""
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; Django's ORM, used by the
    # tests and pytest-django's cleanup meanwhile, would otherwise refuse to run.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server_url: str, artifacts_dir: Path, request: pytest.FixtureRequest):
    """A new browser identity (fresh cookies) on the live server; a screenshot if the test fails."""
    context = browser.new_context(base_url=live_server_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        tab.screenshot(path=str(artifacts_dir / f"e2e-{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
