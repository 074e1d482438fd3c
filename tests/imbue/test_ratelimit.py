"""The Redis sliding-window limiter (sync and async, shared between them), its plain messages,
its behaviour when Redis is away, and the per-conversation token budget."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
import redis

from imbue import ratelimit
from imbue.models import LLMCall


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_allows_up_to_the_limit_then_says_how_long_to_wait(key: str) -> None:
    decisions = [ratelimit.hit(key, 3, 20) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.hits for d in decisions[:3]] == [1, 2, 3]
    refused = decisions[-1]
    assert 19 <= refused.retry_after <= 20
    assert (
        refused.message
        == f"You're doing that very fast. Please wait {refused.retry_after} seconds."
    )
    assert not refused


def test_window_slides_so_old_hits_stop_counting(key: str) -> None:
    assert ratelimit.hit(key, 2, 0.3) and ratelimit.hit(key, 2, 0.3)
    refused = ratelimit.hit(key, 2, 0.3)
    assert not refused.allowed and refused.retry_after == 1  # never "wait 0 seconds"
    time.sleep(0.35)
    assert ratelimit.hit(key, 2, 0.3).allowed


def test_refused_hits_are_not_counted(key: str) -> None:
    ratelimit.hit(key, 1, 0.3)
    for _ in range(5):
        assert not ratelimit.hit(key, 1, 0.3).allowed
    time.sleep(0.35)
    assert ratelimit.hit(key, 1, 0.3).allowed


def test_keys_are_independent(key: str) -> None:
    assert ratelimit.hit(key + "a", 1, 10)
    assert ratelimit.hit(key + "b", 1, 10)
    assert not ratelimit.hit(key + "a", 1, 10)


def test_a_limit_of_zero_switches_limiting_off(key: str) -> None:
    assert all(ratelimit.hit(key, 0, 60).allowed for _ in range(50))


def test_concurrent_hits_from_many_threads_never_exceed_the_limit(key: str) -> None:
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            decision = ratelimit.hit(key, 25, 30)
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 25 and len(allowed) == 80


@pytest.mark.asyncio
async def test_async_and_sync_hits_share_one_count(key: str) -> None:
    assert (await ratelimit.ahit(key, 3, 30)).allowed
    assert ratelimit.hit(key, 3, 30).allowed
    results = await asyncio.gather(*(ratelimit.ahit(key, 3, 30) for _ in range(5)))
    assert [r.allowed for r in results].count(True) == 1


def test_message_limit_uses_the_setting_and_a_study_override(settings) -> None:
    learner = int(uuid.uuid4().int % 10**9)
    settings.IMBUE = {**settings.IMBUE, "messages_per_minute": 2}
    assert ratelimit.check_messages(learner) and ratelimit.check_messages(learner)
    refused = ratelimit.check_messages(learner)
    assert not refused.allowed
    assert refused.message.startswith("You're sending messages very fast. Please wait ")
    assert refused.message.endswith(" seconds.") and 59 <= refused.retry_after <= 60
    # A study that allows more per minute lets the same learner go on.
    assert ratelimit.check_messages(learner, per_minute=5).allowed
    ratelimit.reset(f"messages:{learner}")
    assert ratelimit.check_messages(learner).allowed


@pytest.mark.asyncio
async def test_feedback_limit_is_separate_from_messages(settings) -> None:
    learner = int(uuid.uuid4().int % 10**9)
    settings.IMBUE = {**settings.IMBUE, "messages_per_minute": 1, "feedback_per_minute": 1}
    assert (await ratelimit.acheck_messages(learner)).allowed
    assert (await ratelimit.acheck_feedback(learner)).allowed
    refused = await ratelimit.acheck_feedback(learner)
    assert refused.message.startswith("You're asking for feedback very fast. Please wait ")
    assert ratelimit.check_feedback(learner, per_minute=0).allowed  # a study switched it off


def test_one_second_reads_as_singular() -> None:
    assert ratelimit._wait_words(1) == "1 second"
    assert ratelimit._wait_words(20) == "20 seconds"


def test_redis_down_lets_the_hit_through(settings, key: str, caplog) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert ratelimit.hit(key, 1, 60).allowed and ratelimit.hit(key, 1, 60).allowed
    assert "Redis unavailable" in caplog.text


@pytest.mark.asyncio
async def test_redis_down_lets_the_async_hit_through(settings, key: str) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert (await ratelimit.ahit(key, 1, 60)).allowed


def test_limiter_keys_expire_on_their_own(settings, key: str) -> None:
    ratelimit.hit(key, 5, 2)
    ttl_ms = redis.Redis.from_url(settings.REDIS_URL).pttl(ratelimit.KEY_PREFIX + key)
    assert 0 < ttl_ms <= 2000


# --- token budget -------------------------------------------------------------------------------


def _call(conversation_id: int | None, tokens_in: int | None, tokens_out: int | None) -> None:
    LLMCall.objects.create(
        purpose="partner", prompt_name="p", prompt_version="1", prompt_hash="0" * 64,
        outcome="ok", conversation_id=conversation_id, tokens_in=tokens_in, tokens_out=tokens_out,
    )  # fmt: skip


@pytest.mark.django_db
def test_budget_left_counts_every_call_of_the_conversation() -> None:
    _call(7, 1000, 200)
    _call(7, 1500, None)  # a stream whose usage the server did not report
    _call(8, 50_000, 50_000)
    assert ratelimit.tokens_used(7) == 2700
    assert ratelimit.budget_left(7, 5000) == 2300
    assert ratelimit.budget_left(7, 2000) == 0
    assert ratelimit.budget_left(99, 5000) == 5000


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_budget_left_from_async_code() -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(_call)(11, 300, 100)
    assert await ratelimit.abudget_left(11, 1000) == 600
    assert await ratelimit.abudget_left(11, 100) == 0
    assert "start a new one" in ratelimit.BUDGET_USED_UP


@pytest.mark.django_db
def test_the_tokens_used_annotation_matches_tokens_used_and_works_on_a_locked_row() -> None:
    from django.db import transaction

    from simulations.models import Conversation, Learner, Situation

    learner = Learner.objects.create()
    situation = Situation.objects.create(learner=learner, situation="A hard talk.", goal="Agree.")
    spent, unused = (
        Conversation.objects.create(learner=learner, situation=situation) for _ in "ab"
    )
    _call(spent.pk, 1000, 200)
    _call(spent.pk, 1500, None)
    _call(unused.pk + 1000, 9000, 9000)  # another conversation's calls do not count
    with transaction.atomic():  # as the send and feedback paths read it: with the row locked
        rows = dict(
            Conversation.objects.select_for_update(of=("self",))
            .annotate(spent=ratelimit.tokens_used_annotation())
            .values_list("pk", "spent")
        )
    assert rows == {spent.pk: ratelimit.tokens_used(spent.pk), unused.pk: 0}
    assert rows[spent.pk] == 2700
    assert ratelimit.budget_left(spent.pk, 3000, used=rows[spent.pk]) == 300
    assert ratelimit.budget_left(spent.pk, 2000, used=rows[spent.pk]) == 0


def test_failed_resume_codes_count_per_address_and_per_session(monkeypatch) -> None:
    monkeypatch.setattr(ratelimit, "RESUME_FAILURES_PER_ADDRESS", 3)
    monkeypatch.setattr(ratelimit, "RESUME_FAILURES_PER_SESSION", 2)
    ip, session, other = f"203.0.113.{uuid.uuid4().int % 250}", uuid.uuid4().hex, uuid.uuid4().hex
    try:
        ratelimit.forget_resume_failures(ip=ip, session_key=None)
        # Two wrong codes from one session (each attempt counts until it is taken back).
        assert ratelimit.try_resume(ip=ip, session_key=session)[0]
        assert ratelimit.try_resume(ip=ip, session_key=session)[0]
        refused, reserved = ratelimit.try_resume(ip=ip, session_key=session)
        assert not refused and refused.retry_after > 800 and reserved == []
        assert refused.message.startswith("That is too many codes that did not match")
        assert "please wait 15 minutes" in refused.message
        # The address still has one to go from another session, then it is held up too (the
        # refused attempt above counted nothing against the address).
        assert ratelimit.try_resume(ip=ip, session_key=other)[0]
        assert not ratelimit.try_resume(ip=ip, session_key=uuid.uuid4().hex)[0]
        assert not ratelimit.try_resume(ip=ip, session_key=None)[0]
        assert ratelimit.try_resume(ip=None, session_key=uuid.uuid4().hex)[0]
    finally:
        ratelimit.forget_resume_failures(ip=ip, session_key=session)
        ratelimit.forget_resume_failures(ip=None, session_key=other)


def test_resume_attempts_at_the_same_moment_cannot_all_pass(monkeypatch) -> None:
    # Each attempt is counted before its code is looked up: a burst of 20 attempts that have
    # not yet been answered gets the limit's 3 through, not all 20 (looking first, then counting
    # the wrong ones, let the whole burst pass one look at the count).
    monkeypatch.setattr(ratelimit, "RESUME_FAILURES_PER_ADDRESS", 3)
    ip = f"198.51.100.{uuid.uuid4().int % 250}"
    try:
        ratelimit.forget_resume_failures(ip=ip, session_key=None)
        burst = [ratelimit.try_resume(ip=ip, session_key=None) for _ in range(20)]
        assert sum(bool(decision) for decision, _ in burst) == 3
    finally:
        ratelimit.forget_resume_failures(ip=ip, session_key=None)


def test_a_matching_or_empty_resume_attempt_is_taken_back(monkeypatch) -> None:
    monkeypatch.setattr(ratelimit, "RESUME_FAILURES_PER_ADDRESS", 2)
    ip = f"192.0.2.{uuid.uuid4().int % 250}"
    try:
        ratelimit.forget_resume_failures(ip=ip, session_key=None)
        for _ in range(10):  # right codes never count
            decision, reserved = ratelimit.try_resume(ip=ip, session_key=None)
            assert decision and len(reserved) == 1
            ratelimit.release(reserved)
        assert ratelimit.try_resume(ip=ip, session_key=None)[0]  # one wrong code
        assert ratelimit.try_resume(ip=ip, session_key=None)[0]  # two
        assert not ratelimit.try_resume(ip=ip, session_key=None)[0]
    finally:
        ratelimit.forget_resume_failures(ip=ip, session_key=None)


def test_an_ipv6_subscriber_is_counted_by_its_slash_64(monkeypatch) -> None:
    monkeypatch.setattr(ratelimit, "RESUME_FAILURES_PER_ADDRESS", 2)
    prefix = f"2001:db8:{uuid.uuid4().int % 0xFFFF:x}:1"
    try:
        assert ratelimit.try_resume(ip=f"{prefix}::1", session_key=None)[0]
        assert ratelimit.try_resume(ip=f"{prefix}::2", session_key=None)[0]
        # Another address of the same /64 is the same subscriber.
        assert not ratelimit.try_resume(ip=f"{prefix}:ffff::3", session_key=None)[0]
        # An IPv4 address is itself, also when written as IPv4-mapped IPv6.
        v4 = f"192.0.2.{uuid.uuid4().int % 250}"
        ratelimit.forget_resume_failures(ip=v4, session_key=None)
        assert ratelimit.try_resume(ip=f"::ffff:{v4}", session_key=None)[0]
        assert ratelimit.try_resume(ip=v4, session_key=None)[0]
        assert not ratelimit.try_resume(ip=v4, session_key=None)[0]
        ratelimit.forget_resume_failures(ip=v4, session_key=None)
    finally:
        ratelimit.forget_resume_failures(ip=f"{prefix}::1", session_key=None)


def test_waits_of_minutes_are_said_in_minutes() -> None:
    assert ratelimit._wait_words(1) == "1 second"
    assert ratelimit._wait_words(60) == "60 seconds"  # the per-minute limits read as before
    assert ratelimit._wait_words(841) == "15 minutes"


# --- failed staff sign-ins --------------------------------------------------------------------


@pytest.mark.django_db
def test_staff_passwords_that_do_not_match_are_limited_per_account_and_address(
    monkeypatch,
) -> None:
    # A staff password opens study data; the admin's sign-in let anyone try passwords without end.
    from django.contrib.auth.models import User
    from django.test import Client

    monkeypatch.setattr(ratelimit, "SIGN_IN_FAILURES_PER_ACCOUNT", 3)
    monkeypatch.setattr(ratelimit, "SIGN_IN_FAILURES_PER_ADDRESS", 5)
    password = "a-long-test-password-1"
    name, other_name = f"staff-{uuid.uuid4().hex[:8]}", f"staff-{uuid.uuid4().hex[:8]}"
    for username in (name, other_name):
        User.objects.create_user(username, password=password, is_staff=True)
    address = f"2001:db8:{uuid.uuid4().int % 0xFFFF:x}:{uuid.uuid4().int % 0xFFFF:x}::7"
    elsewhere = f"2001:db8:{uuid.uuid4().int % 0xFFFF:x}:{uuid.uuid4().int % 0xFFFF:x}::9"

    def sign_in(username: str, secret: str, ip: str = address) -> tuple[int, str]:
        response = Client().post(
            "/admin/login/?next=/admin/",
            {"username": username, "password": secret},
            REMOTE_ADDR=ip,
        )
        return response.status_code, response.content.decode()

    for _ in range(5):  # right passwords never count
        assert sign_in(name, password)[0] == 302
    for _ in range(3):
        status, page = sign_in(name, "not-the-password")
        assert status == 200 and "Please enter the correct username and password" in page
    status, page = sign_in(name, password)  # held up, even with the right password now
    assert status == 200 and "too many sign-ins that did not match" in page
    assert "please wait 15 minutes" in page and f'value="{name}"' in page
    assert sign_in(name, password, elsewhere)[0] == 200  # the account, from any address
    assert sign_in(other_name, password)[0] == 302  # another account, from this address
    # The address: two more wrong passwords (five in all), then no account from it is tried.
    assert sign_in(other_name, "wrong")[0] == sign_in(other_name, "wrong")[0] == 200
    status, page = sign_in(other_name, password)
    assert status == 200 and "too many sign-ins that did not match" in page
    assert sign_in(other_name, password, elsewhere)[0] == 302
