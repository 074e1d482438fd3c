"""Assignment on the database: balance, reproducibility, no re-draw, and 50 enrolments at once."""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator

import pytest
from django.db import connection, connections

from simulations.models import Learner
from study import assignment, services
from study.models import Allocation, AllocationCounter, Participant, Study
from tests.study.conftest import make_study


def _participants(study: Study, sources: list[str]) -> list[Participant]:
    learners = Learner.objects.bulk_create([Learner() for _ in sources])
    return Participant.objects.bulk_create(
        [
            Participant(study=study, learner=learner, source=source, step="assignment")
            for learner, source in zip(learners, sources, strict=True)
        ]
    )


def _check_blocks(arms: list[str], block: int, per_arm: Counter[str]) -> None:
    for start in range(0, len(arms) - len(arms) % block, block):
        assert Counter(arms[start : start + block]) == per_arm, f"block at {start}"


@pytest.mark.django_db
def test_thousands_of_enrolments_balance_within_every_block_and_stratum(no_llm) -> None:
    study = make_study(
        slug="strat",
        allocation_method="stratified_blocks",
        stratify_by="source",
        target_size=100,
    )
    rng = random.Random(7)
    sources = [rng.choice(["prolific", "prolific", "label", "direct"]) for _ in range(1500)]
    for participant in _participants(study, sources):
        services.assign(participant)
    by_stratum: dict[str, list[Allocation]] = defaultdict(list)
    for allocation in Allocation.objects.filter(study=study).select_related("arm"):
        by_stratum[allocation.stratum].append(allocation)
    assert {k: len(v) for k, v in by_stratum.items()} == Counter(sources)
    for stratum, allocations in by_stratum.items():
        allocations.sort(key=lambda a: a.position)
        # Slots are taken in order with no gap, past the 100 stored ones too.
        assert [a.position for a in allocations] == list(range(len(allocations)))
        arms = [a.arm.key for a in allocations]
        _check_blocks(arms, 4, Counter({"simulation": 2, "feedback": 2}))
        expected = [
            assignment.arm_at(stratum=stratum, position=i, **study.design) for i in range(len(arms))
        ]
        assert arms == expected
        assert arms[:100] == study.sequence[stratum]
        assert study.counters.get(stratum=stratum).next_position == len(arms)


@pytest.mark.django_db
def test_unequal_weights_balance_within_blocks(no_llm) -> None:
    study, _ = services.create_default_study(slug="weighted", name="W", open_now=False)
    study.arms.filter(key="feedback").update(weight=2)
    Study.objects.filter(pk=study.pk).update(block_size=6)
    study = services.open_study(study=study, seed="w")
    assert study.design["weights"] == [1, 2]
    for participant in _participants(study, ["direct"] * 120):
        services.assign(participant)
    arms = [a.arm.key for a in Allocation.objects.filter(study=study).order_by("position")]
    _check_blocks(arms, 6, Counter({"simulation": 2, "feedback": 4}))


@pytest.mark.django_db
def test_the_same_seed_and_design_give_the_same_allocations(no_llm) -> None:
    first = make_study(slug="one", seed="shared-seed")
    second = make_study(slug="two", seed="shared-seed")
    other = make_study(slug="three", seed="other-seed")
    assert first.sequence_hash == second.sequence_hash  # the hash covers seed and design only
    assert first.sequence == second.sequence
    assert first.sequence != other.sequence

    def arms_of(study: Study) -> list[str]:
        return [services.assign(p).arm.key for p in _participants(study, ["direct"] * 40)]

    assert arms_of(first) == arms_of(second) == first.sequence[""][:40]


@pytest.mark.django_db
def test_an_allocation_is_never_redrawn_on_resume_or_double_enrolment(no_llm) -> None:
    study = make_study()
    participant, _ = services.enroll(study=study, prolific_pid="f" * 24)
    first = services.assign(participant)
    again, _ = services.enroll(study=study, prolific_pid="f" * 24)
    second = services.assign(again)
    assert first.pk == second.pk and first.arm_id == second.arm_id
    assert Allocation.objects.filter(study=study).count() == 1
    assert AllocationCounter.objects.get(study=study, stratum="").next_position == 1
    Participant.objects.filter(pk=participant.pk).update(arm=None)  # even if the row lost it
    assert services.assign(participant).pk == first.pk


@pytest.mark.django_db
def test_assigning_before_the_study_opened_is_refused(no_llm) -> None:
    study, _ = services.create_default_study(slug="shut", name="Shut", open_now=False)
    (participant,) = _participants(study, ["direct"])
    with pytest.raises(ValueError, match="not opened"):
        services.assign(participant)


# --------------------------------------------------------------------------- concurrency


@pytest.fixture
def wide_pool() -> Iterator[None]:
    """A connection pool wide enough for 60 threads at once (the default holds 10)."""
    options = connection.settings_dict.get("OPTIONS", {})
    pool = options.get("pool")
    if not isinstance(pool, dict):
        yield
        return
    original = dict(pool)
    connection.close()
    connection.close_pool()
    pool["max_size"] = 60
    try:
        yield
    finally:
        connections.close_all()
        connection.close_pool()
        pool.clear()
        pool.update(original)


def _at_once(count: int, work: Callable[[int], object]) -> list[object]:
    """Run `work(i)` in `count` threads released together; each thread has its own connection."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except BaseException as error:  # reported below, with every thread's failure
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
def test_fifty_participants_enrolling_at_once_take_the_next_slots_without_gaps_or_repeats(
    no_llm, wide_pool
) -> None:
    study = make_study(slug="rush")
    # Two participants are already in, so the rush must continue at slot 2.
    for participant in _participants(study, ["direct", "direct"]):
        services.assign(participant)

    def enrol_and_assign(index: int) -> tuple[int, str]:
        participant, created = services.enroll(study=study, prolific_pid=f"{index:024x}")
        assert created
        allocation = services.assign(participant)
        return allocation.position, allocation.arm.key

    results = _at_once(50, enrol_and_assign)
    positions = sorted(position for position, _ in results)
    assert positions == list(range(2, 52))
    stored = {a.position: a.arm.key for a in Allocation.objects.filter(study=study)}
    assert len(stored) == 52
    assert [stored[i] for i in range(52)] == study.sequence[""][:52]
    assert dict(results) == {i: stored[i] for i in range(2, 52)}
    assert AllocationCounter.objects.get(study=study, stratum="").next_position == 52
    assert Participant.objects.filter(study=study, arm__isnull=True).count() == 0


@pytest.mark.django_db(transaction=True)
def test_one_prolific_id_arriving_in_ten_tabs_at_once_is_enrolled_and_assigned_once(
    no_llm, wide_pool
) -> None:
    study = make_study(slug="tabs")

    def enrol_and_assign(index: int) -> tuple[int, int]:
        participant, _ = services.enroll(study=study, prolific_pid="e" * 24)
        return participant.pk, services.assign(participant).pk

    results = _at_once(10, enrol_and_assign)
    assert len(set(results)) == 1
    assert Participant.objects.filter(study=study).count() == 1
    assert Allocation.objects.filter(study=study).count() == 1
