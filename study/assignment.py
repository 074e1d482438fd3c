"""Seeded allocation sequences for randomised studies (pure: no models, no I/O).

A study's allocation sequence is a deterministic function of its design (method, arms, weights,
block size) and a recorded seed, so an auditor can regenerate it and compare its hash with the one
stored before the first enrolment.

Determinism across Python versions: every draw comes from ``random.Random.random()`` seeded with
an integer, the one part of the ``random`` module whose output Python promises to keep stable. We
do not use ``shuffle``/``choice``/``randrange``, whose algorithms may change between versions, nor
``hash()``, which is salted per process.

Extension: the sequence is conceptually infinite. It is cut into units (one permuted block, or a
chunk of ``COMPLETE_CHUNK`` slots for complete randomisation), each drawn from its own seed derived
from (seed, method, stratum, unit index). Generating a longer sequence therefore never changes the
slots already generated, and ``arm_at`` computes any slot without generating the ones before it,
so a study that outgrows its stored sequence keeps the same, auditable allocation.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from enum import StrEnum
from random import Random

ALGORITHM_VERSION = "imbue-allocation-1"
COMPLETE_CHUNK = 64


class Method(StrEnum):
    COMPLETE = "complete"
    BLOCKS = "blocks"
    STRATIFIED_BLOCKS = "stratified_blocks"


UNSTRATIFIED = ""


def new_seed() -> str:
    """Return a fresh unguessable seed to record when a study opens."""
    return secrets.token_hex(16)


def generate_sequence(
    *,
    method: Method | str,
    arms: Sequence[str],
    seed: int | str,
    length: int,
    block_size: int | None = None,
    strata: Sequence[str] | None = None,
    weights: Sequence[int] | None = None,
) -> dict[str, list[str]]:
    """Return the first ``length`` arms of each stratum's sequence ({"": [...]} if unstratified).

    For stratified designs ``length`` is per stratum, since the strata's sizes are not known ahead.
    The last block may be cut short by ``length``; pick a multiple of ``block_size`` to avoid it.
    """
    method = _validate(
        method=method, arms=arms, block_size=block_size, strata=strata, weights=weights
    )
    if length < 0:
        raise ValueError("length must be zero or more")
    keys = list(strata) if method is Method.STRATIFIED_BLOCKS else [UNSTRATIFIED]
    return {
        stratum: _prefix(
            method=method,
            arms=list(arms),
            seed=seed,
            stratum=stratum,
            length=length,
            block_size=block_size,
            weights=_weights(arms, weights),
        )
        for stratum in keys
    }


def arm_at(
    *,
    method: Method | str,
    arms: Sequence[str],
    seed: int | str,
    stratum: str,
    position: int,
    block_size: int | None = None,
    strata: Sequence[str] | None = None,
    weights: Sequence[int] | None = None,
) -> str:
    """Return the arm at a 0-based position of a stratum's sequence, however far along it is."""
    method = _validate(
        method=method, arms=arms, block_size=block_size, strata=strata, weights=weights
    )
    _check_stratum(method, stratum, strata)
    if position < 0:
        raise ValueError("position must be zero or more")
    unit_size = COMPLETE_CHUNK if method is Method.COMPLETE else block_size
    assert unit_size is not None
    unit = _unit(
        method=method,
        arms=list(arms),
        seed=seed,
        stratum=stratum,
        index=position // unit_size,
        block_size=block_size,
        weights=_weights(arms, weights),
    )
    return unit[position % unit_size]


def slot_arm(
    sequences: Mapping[str, Sequence[str]],
    stratum: str,
    position: int,
    *,
    design: Mapping[str, object] | None = None,
) -> str:
    """Return the arm of a slot: from the stored sequence, or past its end from the design.

    ``design`` holds the keyword arguments of ``generate_sequence`` except ``length`` (method, arms,
    seed, block_size, strata, weights). Without it, a slot past the stored end raises IndexError.
    A stratum missing from ``sequences`` (a baseline value not foreseen) is also drawn from the
    design: its sequence, like every other, is fixed by the recorded seed.
    """
    if position < 0:
        raise ValueError("position must be zero or more")
    stored = sequences.get(stratum)
    if stored is not None and position < len(stored):
        return stored[position]
    if design is None:
        raise IndexError(f"slot {position} of stratum {stratum!r} is past the stored sequence")
    return arm_at(stratum=stratum, position=position, **design)  # type: ignore[arg-type]


def sequence_hash(
    sequences: Mapping[str, Sequence[str]],
    *,
    seed: int | str,
    method: Method | str,
    arms: Sequence[str],
    block_size: int | None = None,
    strata: Sequence[str] | None = None,
    weights: Sequence[int] | None = None,
) -> str:
    """Return the sha256 (hex) of a canonical JSON of the sequences and the design behind them."""
    payload = {
        "algorithm": ALGORITHM_VERSION,
        "method": str(Method(method)),
        "arms": list(arms),
        "weights": list(_weights(arms, weights)),
        "block_size": block_size,
        "strata": list(strata) if strata is not None else None,
        "seed": str(seed),
        "sequences": {key: list(value) for key, value in sequences.items()},
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _validate(
    *,
    method: Method | str,
    arms: Sequence[str],
    block_size: int | None,
    strata: Sequence[str] | None,
    weights: Sequence[int] | None,
) -> Method:
    method = Method(method)
    if isinstance(arms, str) or len(arms) < 2:
        raise ValueError("a randomised study needs at least two arms")
    if any(not isinstance(arm, str) or not arm for arm in arms):
        raise ValueError("arm names must be non-empty strings")
    if len(set(arms)) != len(arms):
        raise ValueError("arm names must be unique")
    total = sum(_weights(arms, weights))
    if method is Method.COMPLETE:
        if block_size is not None:
            raise ValueError("complete randomisation takes no block size")
    else:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
            raise ValueError("block randomisation needs a positive integer block size")
        if block_size % total:
            raise ValueError(
                f"block size {block_size} must be a multiple of {total} "
                "(the number of arms, or the sum of their weights)"
            )
    if method is Method.STRATIFIED_BLOCKS:
        if strata is None or isinstance(strata, str) or not strata:
            raise ValueError("stratified randomisation needs a list of strata")
        if any(not isinstance(s, str) or not s for s in strata):
            raise ValueError("stratum values must be non-empty strings")
        if len(set(strata)) != len(strata):
            raise ValueError("stratum values must be unique")
    elif strata:
        raise ValueError(f"method {method} takes no strata")
    return method


def _weights(arms: Sequence[str], weights: Sequence[int] | None) -> tuple[int, ...]:
    if weights is None:
        return (1,) * len(arms)
    if len(weights) != len(arms):
        raise ValueError("give one weight per arm")
    if any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in weights):
        raise ValueError("weights must be positive integers (ratios such as 1:2)")
    # 2:2 and 1:1 are the same allocation; reduce so that they also share one hash and sequence.
    divisor = math.gcd(*weights)
    return tuple(w // divisor for w in weights)


def _check_stratum(method: Method, stratum: str, strata: Sequence[str] | None) -> None:
    if method is not Method.STRATIFIED_BLOCKS and stratum != UNSTRATIFIED:
        raise ValueError(f"method {method} has a single sequence, under stratum {UNSTRATIFIED!r}")
    if method is Method.STRATIFIED_BLOCKS and not stratum:
        raise ValueError("stratified randomisation needs a stratum value")


def _rng(seed: int | str, method: Method, stratum: str, index: int) -> Random:
    material = json.dumps(
        [ALGORITHM_VERSION, str(seed), str(method), stratum, index], ensure_ascii=False
    )
    digest = hashlib.sha256(material.encode("utf-8")).digest()
    return Random(int.from_bytes(digest, "big"))


def _below(rng: Random, n: int) -> int:
    # int(random() * n) is biased by at most n / 2**53, far below anything a trial can detect.
    return min(int(rng.random() * n), n - 1)


def _unit(
    *,
    method: Method,
    arms: list[str],
    seed: int | str,
    stratum: str,
    index: int,
    block_size: int | None,
    weights: tuple[int, ...],
) -> list[str]:
    rng = _rng(seed, method, stratum, index)
    if method is Method.COMPLETE:
        total = sum(weights)
        cumulative = [sum(weights[: i + 1]) for i in range(len(weights))]
        unit = []
        for _ in range(COMPLETE_CHUNK):
            ticket = _below(rng, total)
            unit.append(arms[next(i for i, edge in enumerate(cumulative) if ticket < edge)])
        return unit
    assert block_size is not None
    per_ratio = block_size // sum(weights)
    block = [arm for arm, w in zip(arms, weights, strict=True) for _ in range(w * per_ratio)]
    # Fisher-Yates, written out so the permutation does not depend on random.shuffle's internals.
    for i in range(len(block) - 1, 0, -1):
        j = _below(rng, i + 1)
        block[i], block[j] = block[j], block[i]
    return block


def _prefix(
    *,
    method: Method,
    arms: list[str],
    seed: int | str,
    stratum: str,
    length: int,
    block_size: int | None,
    weights: tuple[int, ...],
) -> list[str]:
    unit_size = COMPLETE_CHUNK if method is Method.COMPLETE else block_size
    assert unit_size is not None
    out: list[str] = []
    index = 0
    while len(out) < length:
        out.extend(
            _unit(
                method=method,
                arms=arms,
                seed=seed,
                stratum=stratum,
                index=index,
                block_size=block_size,
                weights=weights,
            )
        )
        index += 1
    return out[:length]
