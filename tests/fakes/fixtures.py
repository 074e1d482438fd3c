"""Pytest fixtures for the fake model server (loaded everywhere through tests/conftest.py)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.llm_server import FakeServer, start_fake_server


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeServer]:
    """One real fake server over HTTP for the whole run (a thread of the test process)."""
    server = start_fake_server()
    yield server
    server.stop()


@pytest.fixture
def fake_llm(fake_llm_server: FakeServer, settings: Any) -> Iterator[FakeServer]:
    """The fake server, reset, with `settings.LLM` pointing at it and short test timeouts; reset
    again afterwards, so knobs a test turned (a slow first token) never reach the next one."""
    from imbue import llm

    fake_llm_server.reset()
    llm.forget_server_capabilities()
    conf = copy.deepcopy(settings.LLM)
    conf.update(
        base_url=fake_llm_server.base_url,
        api_key="test-key",
        provider="openai",
        timeout_s=5.0,
        max_retries=2,
        backoff_s=0.01,
    )
    settings.LLM = conf
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture
def no_llm(settings: Any) -> None:
    """No language model configured: the product must run on its offline engines."""
    conf = copy.deepcopy(settings.LLM)
    conf["base_url"] = None
    settings.LLM = conf
