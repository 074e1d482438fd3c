"""`make bench`: what learners feel, under load, as ratios to the model's own speed in one run.

    make bench                                       # the standard set, README table, JSON line
    .venv/bin/python -m bench.run --sizes 100 --no-readme          # one size, nothing written
    .venv/bin/python -m bench.run --sizes 100 --patches /work/helpers/patches --label after

For each size a fresh stack (bench/stack.py: the fake model with 400 ms to the first token and
40 tokens/s, uvicorn, one Celery worker, a fresh `imbue_bench` database, Redis DB 10 unless
BENCH_REDIS_URL says otherwise) takes a short warm-up, then the learners of bench/load.py: set-up
(all connected; memory is sampled here), then their turns, with direct clients measuring the
model's own times alongside. Prints one line per run and, as its last line, one JSON object for
the 100-learner run (or the only run). Results also go to bench/results/<label>-<size>.json,
with each message's stages in the order sent (`partner_timeline`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import psutil
import uvloop

from bench.load import LoadConfig, Results, run_load, tag_in
from bench.stack import (
    BASE_DIR,
    ProcessSampler,
    Stack,
    StackConfig,
    bench_database_url,
    bench_redis_url,
)

RESULTS_DIR = BASE_DIR / "bench" / "results"
README = BASE_DIR / "bench" / "README.md"
T = TypeVar("T")  # what the load generator's coroutine returns

# The standard set: learners -> learner messages each (fewer for the big runs, to fit in minutes).
STANDARD = {10: 5, 100: 3, 500: 2, 1000: 2}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    ordered = sorted(v for v in values if v is not None and not math.isnan(v))
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def summarise(
    results: Results,
    log: list[dict[str, Any]],
    load: LoadConfig,
    stack: StackConfig,
    processes: dict[str, dict[str, float]],
    memory: dict[str, float],
) -> dict[str, Any]:
    """Every figure of one run, from the client's records and the model's own timing log."""
    by_tag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in log:
        for tag in entry["tags"]:
            by_tag[tag].append(entry)
    turns = [t for t in results.turns if t.error is None and t.first_ms is not None]
    asks = [a for a in results.asks if a.error is None and a.display_ms is not None]

    # Partner: the first token as the learner sees it, and as a client of the model sees it.
    first = [t.first_ms for t in turns]
    direct_first = [t.direct_first_ms for t in results.turns if t.direct_first_ms is not None]
    before, model_ttft, after, partner_calls = [], [], [], []
    for t in turns:
        calls = [e for e in by_tag.get(t.tag, []) if e["purpose"] == "partner"]
        partner_calls.append(len(calls))
        if calls and calls[0]["first"]:
            call = calls[-1]
            before.append((call["received"] - t.sent_at) * 1000)
            model_ttft.append((call["first"] - call["received"]) * 1000)
            after.append((t.sent_at + t.first_ms / 1000 - call["first"]) * 1000)

    # Feedback: request to display, minus the model's own time for exactly that request.
    overhead, model_ms, feedback_calls, direct_overhead = [], [], [], []
    fb_before, fb_after = [], []
    for a in asks:
        calls = [e for e in by_tag.get(a.tag, []) if e["purpose"] == "feedback" and e["first"]]
        feedback_calls.append(len(calls))
        if not calls:
            continue
        spent = sum((e["first"] - e["received"]) * 1000 for e in calls)
        model_ms.append(spent)
        overhead.append(a.display_ms - spent)
        fb_before.append((min(e["received"] for e in calls) - a.asked_at) * 1000)
        fb_after.append((a.asked_at + a.display_ms / 1000 - max(e["first"] for e in calls)) * 1000)
    # Every model call the product made, over every request asked (answered or not): above 1
    # means duplicates (a redelivered task, a retry).
    all_feedback_calls = sum(
        1 for a in results.asks for e in by_tag.get(a.tag, []) if e["purpose"] == "feedback"
    )
    all_partner_calls = sum(
        1 for t in results.turns for e in by_tag.get(t.tag, []) if e["purpose"] == "partner"
    )
    for a in results.asks:
        for e in by_tag.get(a.direct_tag, []) if a.direct_tag else []:
            if a.direct_ms is not None and e["first"]:
                direct_overhead.append(a.direct_ms - (e["first"] - e["received"]) * 1000)

    attempted = load.learners + len(results.turns) + len(results.asks)
    # One failed operation: a set-up, a message or a feedback request that did not complete.
    failed_ops = (
        sum(1 for e in results.errors if e.startswith("setup"))
        + sum(1 for t in results.turns if t.error)
        + sum(1 for a in results.asks if a.error)
    )
    span = (results.turns_ended or 0) - (results.turns_started or 0)
    web = {k: v for k, v in processes.items() if k.startswith("web")}
    return {
        "sessions": load.learners,
        "connected": results.connected,
        "keyed_sends": results.keyed_sends,
        "messages_each": load.messages,
        "messages": len(turns),
        "feedback_requests": len(asks),
        "errors": failed_ops,
        "error_lines": sorted(set(results.errors))[:10],
        "error_rate": round(failed_ops / attempted, 4) if attempted else None,
        "direct_errors": len(results.direct_errors),
        "messages_per_s": round(len(turns) / span, 2) if span > 0 else None,
        "feedback_per_s": round(len(asks) / span, 2) if span > 0 else None,
        "first_token_ms": {f"p{q}": _r(percentile(first, q)) for q in (50, 95, 99)},
        "model_first_token_ms": {f"p{q}": _r(percentile(direct_first, q)) for q in (50, 95, 99)},
        "first_token_ratio_p50": _ratio(percentile(first, 50), percentile(direct_first, 50)),
        "first_token_ratio_p95": _ratio(percentile(first, 95), percentile(direct_first, 95)),
        "first_token_ratio_p99": _ratio(percentile(first, 99), percentile(direct_first, 99)),
        "first_token_split_ms_p95": {
            "before_model": _r(percentile(before, 95)),
            "model": _r(percentile(model_ttft, 95)),
            "after_model": _r(percentile(after, 95)),
        },
        "reply_done_ms_p95": _r(percentile([t.done_ms for t in turns if t.done_ms], 95)),
        "model_reply_done_ms_p95": _r(
            percentile([t.direct_total_ms for t in results.turns if t.direct_total_ms], 95)
        ),
        "feedback_display_ms": {
            f"p{q}": _r(percentile([a.display_ms for a in asks], q)) for q in (50, 95)
        },
        "feedback_model_ms": {f"p{q}": _r(percentile(model_ms, q)) for q in (50, 95)},
        "feedback_overhead_ms_p50": _r(percentile(overhead, 50)),
        "feedback_overhead_ms_p95": _r(percentile(overhead, 95)),
        "feedback_split_ms_p95": {
            "before_model": _r(percentile(fb_before, 95)),
            "after_model": _r(percentile(fb_after, 95)),
        },
        "feedback_offline_panel_ms_p95": _r(percentile([a.offline_ms for a in asks], 95)),
        "direct_client_overhead_ms_p95": _r(percentile(direct_overhead, 95)),
        "model_calls_per_message": _r(statistics.mean(partner_calls), 2) if partner_calls else None,
        "model_calls_per_feedback": (
            _r(statistics.mean(feedback_calls), 2) if feedback_calls else None
        ),
        "model_calls_per_feedback_asked": (
            _r(all_feedback_calls / len(results.asks), 2) if results.asks else None
        ),
        "model_calls_per_message_sent": (
            _r(all_partner_calls / len(results.turns), 2) if results.turns else None
        ),
        "setup_ms_p95": _r(percentile(results.setups_ms, 95)),
        # Where the set-up's time goes (the learners arrive at `ramp_s`'s pace, 50 a second by
        # default): the pages, the practise POST (the partner's brief from the model) and the
        # two sockets' openings, each until its answer.
        "setup_steps_ms": {
            step: {"p50": _r(percentile(times, 50)), "p95": _r(percentile(times, 95))}
            for step, times in results.setup_steps_ms.items()
        },
        "client_loop_lag_ms_p99": _r(percentile(results.loop_lag_ms, 99)),
        "client_cpu_pct": round(results.client_cpu_s / span * 100, 1) if span > 0 else None,
        "processes": processes,
        "web_cpu_pct": round(sum(v["cpu_pct"] for v in web.values()), 1),
        "web_rss_mb": round(sum(v["rss_peak_mb"] for v in web.values()), 1),
        # CPU per learner turn (one message and its feedback): less sensitive than latency to
        # the other work sharing the machine.
        "cpu_ms_per_turn": {
            group: _r(
                sum(v.get("cpu_s", 0) for k, v in processes.items() if k.startswith(group))
                * 1000
                / len(turns)
            )
            if turns
            else None
            for group in ("web", "worker", "fake-model", "postgres")
        },
        "memory": memory,
        "ws_memory_kb": memory.get("per_socket_kb"),
        "ws_extensions": sorted(results.ws_extensions),
        "settings": {
            "web_workers": stack.web_workers,
            "celery_pool": stack.celery_pool,
            "celery_concurrency": stack.celery_concurrency,
            "db_pool_max": stack.db_pool_max,
            "ttft_ms": stack.ttft_ms,
            "tokens_per_s": stack.tokens_per_s,
            "reply_tokens": stack.reply_tokens,
            "draft_think_s": list(load.draft_think_s),
            "read_think_s": list(load.read_think_s),
        },
    }


def feedback_stages(
    database_url: str, results: Results, log: list[dict[str, Any]]
) -> dict[str, float | None]:
    """Where a feedback request's time goes, p95 per stage (ms), from the product's own
    timestamps (FeedbackRequest) joined to the client's and the model's by the draft's tag."""
    import psycopg

    sql = (
        "SELECT d.text, extract(epoch FROM r.requested_at), extract(epoch FROM r.computed_at), "
        "extract(epoch FROM r.delivered_at) FROM feedback_feedbackrequest r "
        "JOIN feedback_draft d ON d.id = r.draft_id ORDER BY r.id"
    )
    try:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(sql).fetchall()
    except psycopg.Error as exc:
        return {"error": str(exc)[:100]}  # type: ignore[dict-item]
    # The warm-up's learners carry the same tags as the first measured ones (bx0y1z1, ...): in
    # id order the measured row, written later, is the one kept.
    by_tag = {
        tag_in(text): (float(a or 0), b and float(b), c and float(c)) for text, a, b, c in rows
    }
    model = {tag: e for e in log if e["purpose"] == "feedback" and e["first"] for tag in e["tags"]}
    stages: dict[str, list[float]] = defaultdict(list)
    for ask in results.asks:
        if ask.display_ms is None or ask.tag not in by_tag or ask.tag not in model:
            continue
        requested, computed, delivered = by_tag[ask.tag]
        call = model[ask.tag]
        shown = ask.asked_at + ask.display_ms / 1000
        stages["post_to_row"].append((requested - ask.asked_at) * 1000)
        stages["row_to_model"].append((call["received"] - requested) * 1000)
        if computed:
            stages["model_to_stored"].append((computed - call["first"]) * 1000)
            if delivered:
                stages["stored_to_sent"].append((delivered - computed) * 1000)
                stages["sent_to_shown"].append((shown - delivered) * 1000)
    found: dict[str, Any] = {name: _r(percentile(values, 95)) for name, values in stages.items()}
    # Requests the learner never saw answered: how far each got in the product.
    lost = [a for a in results.asks if a.error and a.tag in by_tag]
    found["unanswered"] = [
        {
            "request_id": a.request_id,
            "stored_after_ms": _r((by_tag[a.tag][1] - a.asked_at) * 1000)
            if by_tag[a.tag][1]
            else None,
            "sent_after_ms": _r((by_tag[a.tag][2] - a.asked_at) * 1000)
            if by_tag[a.tag][2]
            else None,
        }
        for a in lost[:10]
    ]
    return found


def partner_stages(
    database_url: str,
    results: Results,
    log: list[dict[str, Any]],
    timeline: list[dict[str, Any]] | None = None,
) -> dict[str, float | None]:
    """Where the time to the partner's first token goes, p95 per stage (ms): the socket message
    to the learner's row, the row to the model's request, the model, its first token to the
    learner's screen. Each turn's stages are appended to `timeline` when given (seconds since
    the first turn, for a look at how they move through a run)."""
    import psycopg

    sql = (
        "SELECT text, extract(epoch FROM created_at) FROM simulations_message "
        "WHERE role = 'learner' ORDER BY id"
    )
    try:
        with psycopg.connect(database_url) as conn:
            rows = {tag_in(text): float(at) for text, at in conn.execute(sql).fetchall()}
    except psycopg.Error as exc:
        return {"error": str(exc)[:100]}  # type: ignore[dict-item]
    model = {tag: e for e in log if e["purpose"] == "partner" and e["first"] for tag in e["tags"]}
    stages: dict[str, list[float]] = defaultdict(list)
    for turn in results.turns:
        if turn.first_ms is None or turn.tag not in rows or turn.tag not in model:
            continue
        call = model[turn.tag]
        stages["send_to_row"].append((rows[turn.tag] - turn.sent_at) * 1000)
        stages["row_to_model"].append((call["received"] - rows[turn.tag]) * 1000)
        stages["model"].append((call["first"] - call["received"]) * 1000)
        stages["model_to_shown"].append(
            (turn.sent_at + turn.first_ms / 1000 - call["first"]) * 1000
        )
        if timeline is not None:
            timeline.append(
                {
                    "at_s": round(turn.sent_at - (results.turns_started or turn.sent_at), 3),
                    "learner": turn.learner,
                    **{name: round(values[-1], 1) for name, values in stages.items()},
                }
            )
    return {name: _r(percentile(values, 95)) for name, values in stages.items()}


def run_client(config: LoadConfig, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run the load generator on the event loop its config names. The generator shares the
    machine with the product, so every CPU second it spends is one the servers wait for; a
    browser on a learner's own device costs the server nothing."""
    if config.client_loop == "uvloop":
        return uvloop.run(coroutine)
    if config.client_loop == "asyncio":
        return asyncio.run(coroutine)
    raise ValueError(f"unknown client loop: {config.client_loop!r}")


def warm_up(stack: Stack, feedback_over: str = "socket") -> dict[str, float]:
    """Learners through one turn each, enough that every web process (the kernel spreads the
    connections) has loaded its code, trained the offline rater and built its indexes; returns
    the CPU seconds each server process spent on it, so a process left cold shows."""
    servers = stack.server_processes()
    sampler = ProcessSampler(servers)
    config = LoadConfig(
        learners=8 * stack.config.web_workers, messages=1, draft_think_s=(0.1, 1.0),
        read_think_s=(0.1, 0.3), ramp_s=1.0, direct=False, seed=999, feedback_over=feedback_over,
    )  # fmt: skip
    run_client(config, run_load(stack.base_url, stack.fake_url, config))
    stack.clear_fake_log()
    return {name: v["cpu_s"] for name, v in sampler.stop().items()}


def run_one(load: LoadConfig, stack_config: StackConfig) -> dict[str, Any]:
    """One size on a fresh stack: warm-up, set-up (memory sampled), turns (CPU sampled)."""
    with Stack(stack_config) as stack:
        warm_cpu = warm_up(stack, load.feedback_over)
        servers = stack.server_processes()
        web_names = [n for n in servers if n.startswith("web")]
        baseline = ProcessSampler(servers).sample()
        state: dict[str, Any] = {}
        # The set-up's own CPU (the learners arriving: pages, the practise POST, the sockets'
        # openings), apart from the turns'.
        setup_sampler = ProcessSampler(servers)
        setup_from = time.monotonic()
        profile_setup = stack_config.profile_phase == "setup"
        if profile_setup:
            stack.start_profilers()

        def on_connected() -> None:
            state["setup"] = setup_sampler.stop()
            state["setup_s"] = time.monotonic() - setup_from
            if profile_setup:
                stack.stop_profilers()
            now = ProcessSampler(servers).sample()
            state["sampler"] = ProcessSampler(
                {**servers, **{f"postgres-{p.pid}": p for p in stack.database_backends()}}
            ).start()
            state["memory"] = {
                "web_before_mb": round(sum(baseline.get(n, 0) for n in web_names) / 2**20, 1),
                "web_connected_mb": round(sum(now.get(n, 0) for n in web_names) / 2**20, 1),
            }
            state["load_start"] = os.getloadavg()
            state["turns_from"] = time.time()
            state["cpu_times"] = psutil.cpu_times()
            # The turns only, as the CPU figures: the set-up's pages would blur what a turn costs.
            if not profile_setup:
                stack.start_profilers()

        started = time.time()
        results = run_client(
            load, run_load(stack.base_url, stack.fake_url, load, on_connected=on_connected)
        )
        sampler: ProcessSampler | None = state.get("sampler")
        processes = sampler.stop() if sampler else {}
        busy = sampler.machine_busy if sampler else []
        timelines = sampler.cpu_timelines() if sampler else {}
        # PostgreSQL backends come and go with the pools: one line for all of them.
        pg = {k: v for k, v in processes.items() if k.startswith("postgres-")}
        processes = {k: v for k, v in processes.items() if not k.startswith("postgres-")}
        if pg:
            processes["postgres (bench db)"] = {
                "cpu_pct": round(sum(v["cpu_pct"] for v in pg.values() if v["cpu_pct"] >= 0), 1),
                "cpu_s": round(sum(v["cpu_s"] for v in pg.values() if v["cpu_s"] >= 0), 2),
                "rss_peak_mb": round(max(v["rss_peak_mb"] for v in pg.values()), 1),
                "rss_last_mb": round(max(v["rss_last_mb"] for v in pg.values()), 1),
                "backends": len(pg),
            }
        memory = state.get("memory", {})
        sockets = 2 * results.connected
        if memory and sockets:
            grown = memory["web_connected_mb"] - memory["web_before_mb"]
            memory["sockets"] = sockets
            memory["per_socket_kb"] = round(grown * 1024 / sockets, 1)
        log = stack.fake_log()
        summary = summarise(results, log, load, stack_config, processes, memory)
        summary["feedback_stages_ms_p95"] = feedback_stages(stack.config.database_url, results, log)
        timeline: list[dict[str, Any]] = []
        summary["partner_stages_ms_p95"] = partner_stages(
            stack.config.database_url, results, log, timeline
        )
        summary["partner_timeline"] = sorted(timeline, key=lambda t: t["at_s"])
        summary["warm_up_cpu_s"] = warm_cpu
        summary.update(setup_cpu(state.get("setup", {}), results.connected, state.get("setup_s")))
        summary["duration_s"] = round(time.time() - started, 1)
        summary["cpu_steal_pct"] = steal_pct(state.get("cpu_times"))
        summary["machine_busy_pct"] = machine_busy(busy)
        summary["machine_busy_timeline"] = busy
        # The same windows per process, in % of one core: a web process whose busiest seconds
        # reach 100% holds its sockets back however idle the rest of the machine is.
        summary["process_busy_pct"] = {name: machine_busy(t) for name, t in timelines.items()}
        summary["process_cpu_timeline"] = timelines
        summary["gc_pauses"] = gc_pauses(stack.log_path("web"), state.get("turns_from"))
        summary["load_avg_1m"] = {
            "start": round(state.get("load_start", (float("nan"),))[0], 2),
            "end": round(os.getloadavg()[0], 2),
        }
        return summary


def setup_cpu(
    processes: dict[str, dict[str, float]], connected: int, seconds: float | None
) -> dict[str, Any]:
    """What the learners' arrival cost: each server process's CPU seconds over the set-up, and
    the web processes' CPU per learner set up (ms; the figure an arrival burst is limited by:
    two web processes carry about 2000 / it arrivals a second)."""
    if not processes:
        return {}
    web = sum(v["cpu_s"] for name, v in processes.items() if name.startswith("web"))
    return {
        "setup_cpu_s": {name: v["cpu_s"] for name, v in processes.items()},
        "setup_s": None if seconds is None else round(seconds, 1),
        "setup_web_cpu_ms_per_learner": round(web * 1000 / connected, 1) if connected else None,
    }


GC_PAUSE = re.compile(
    r"^(?:(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) )?.*?"
    r"garbage collection of generation (\d) stopped this process for (\d+) ms",
    re.MULTILINE,
)


def gc_pauses(web_log: Path, turns_from: float | None = None) -> dict[str, Any]:
    """The web processes' collections of at least GC_PAUSE_WARN_MS (100) in the whole run
    (warm-up, set-up and turns), from their log: how many, how many full, the longest; with
    `turns_from` (the turns' start, a Unix time), also when in the turns each one came
    (`in_turns_at_s`, seconds into the turns), to set beside the partner timeline."""
    try:
        found = GC_PAUSE.findall(web_log.read_text(errors="replace"))
    except OSError:
        return {}
    pauses = [(stamp, int(g), int(ms)) for stamp, g, ms in found]
    summary: dict[str, Any] = {
        "count": len(pauses),
        "full": sum(1 for _, g, _ in pauses if g == 2),
        "longest_ms": max((ms for _, _, ms in pauses), default=0),
        "total_ms": sum(ms for _, _, ms in pauses),
    }
    if turns_from is not None:
        # The log's times are local (logging's default format), as time.localtime gives them.
        at = [
            time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000
            for stamp, _, _ in pauses
            if stamp  # a line in another format is counted, not placed
        ]
        summary["in_turns_at_s"] = [round(t - turns_from, 1) for t in at if t >= turns_from]
    return summary


def machine_busy(samples: Sequence[tuple[float, float]], window_s: float = 10.0) -> dict[str, Any]:
    """The whole machine's busy share over the turns (every process on it, % of all cores):
    the mean, the busiest `window_s` seconds (the whole span if shorter), and how many seconds
    were at 95% or more. Each sample (seconds since the start, %) covers the time since the one
    before it. Also used for one process's CPU (% of one core, which its threads can exceed)."""
    spans, begin = [], 0.0
    for at, share in samples:
        if at > begin:
            spans.append((begin, at, share))
            begin = at
    total = sum(end - start for start, end, _ in spans)
    if total <= 0:
        return {}
    window, last = min(window_s, total), spans[-1][1]
    busiest = 0.0
    for first, _, _ in spans:
        if first + window > last + 1e-9:
            break  # this window and the later ones run past the end
        inside = [(min(end, first + window) - start, share) for start, end, share in spans
                  if first <= start < first + window]  # fmt: skip
        busiest = max(busiest, sum(d * v for d, v in inside) / sum(d for d, _ in inside))
    return {
        "mean": round(sum((end - start) * v for start, end, v in spans) / total, 1),
        "busiest_10s": round(busiest, 1),
        "saturated_s": round(sum(end - start for start, end, v in spans if v >= 95.0), 1),
    }


def steal_pct(before: Any) -> float | None:
    """The share of this machine's CPU time the hypervisor gave to others since `before` (a
    shared machine's noise: a run with much steal is slower for reasons outside the product)."""
    after = psutil.cpu_times()
    if before is None or not hasattr(after, "steal"):
        return None
    total = sum(after) - sum(before)
    return round(100 * (after.steal - before.steal) / total, 2) if total > 0 else None


def versions() -> dict[str, str]:
    names = ["Django", "channels", "channels-redis", "celery", "uvicorn", "psycopg", "redis",
             "websockets", "openai"]  # fmt: skip
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GB RAM, {system}"


def snapshot(label: str, patches: Sequence[Path] | None) -> tuple[Path, str]:
    """The committed product (HEAD) exported to bench/results/src-<label>, with the given patches
    applied (a folder gives its *.patch files sorted by name): the same code each run, whatever is
    being edited in the working tree meanwhile, and proposed changes measured without touching it.
    """
    target = RESULTS_DIR / f"src-{label}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    archive = subprocess.run(
        ["git", "archive", "HEAD"], cwd=BASE_DIR, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    files: list[Path] = []
    for path in patches or []:
        files += sorted(path.glob("*.patch")) if path.is_dir() else [path]
    for patch in files:
        subprocess.run(
            ["patch", "-p1", "--forward", "--quiet", "-i", str(patch)], cwd=target, check=True
        )
    applied = "+".join(p.stem for p in files)
    return target, commit + (f"+{applied}" if applied else "")


def row(label: str, s: dict[str, Any]) -> str:
    ft, mft = s["first_token_ms"], s["model_first_token_ms"]
    cells = [
        label, s["sessions"], f"{s['messages_each']}", s["messages"],
        " / ".join(str(s[f"first_token_ratio_p{q}"]) for q in (50, 95, 99)),
        f"{ft['p95']} ({mft['p95']})",
        f"{s['feedback_overhead_ms_p50']} / {s['feedback_overhead_ms_p95']}",
        f"{s['errors']} ({s['error_rate']})",
        s["messages_per_s"],
        f"{s['web_cpu_pct']}",
        f"{s['web_rss_mb']}",
        s["ws_memory_kb"],
        f"{s['load_avg_1m']['start']}→{s['load_avg_1m']['end']}",
    ]  # fmt: skip
    return "| " + " | ".join(str(c) for c in cells) + " |"


HEADER = (
    "| run | learners | msgs each | msgs | first token ÷ model p50 / p95 / p99 "
    "| first token p95 ms (model's) | feedback overhead ms p50 / p95 | errors (rate) "
    "| msgs/s | web CPU % | web RSS MB | KB per socket | load 1m |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def process_table(label: str, s: dict[str, Any]) -> str:
    lines = [
        f"| {label}, {s['sessions']} learners | CPU % of a core | peak RSS MB |",
        "|---|---|---|",
    ]
    for name, v in s["processes"].items():
        extra = f" ({v['backends']} backends)" if "backends" in v else ""
        lines.append(f"| {name}{extra} | {v['cpu_pct']} | {v['rss_peak_mb']} |")
    return "\n".join(lines)


def write_readme(label: str, summaries: list[dict[str, Any]], command: str) -> None:
    """Put this run's table in bench/README.md, in the block of its label (`main` for
    `make bench`), creating the block at the end if the README has none yet."""
    start, end = f"<!-- bench:{label}:start -->", f"<!-- bench:{label}:end -->"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    v = versions()
    s0 = summaries[0]["settings"]
    block = [
        f"Run `{label}`, {when}, code `{summaries[0].get('code', '?')}`. Command: `{command}`.",
        f"Machine: {machine()}; shared with other work (see the load column).",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"Stack: uvicorn x {s0['web_workers']} workers, Celery {s0['celery_pool']} pool x "
        f"{s0['celery_concurrency']}, DB pool max {s0['db_pool_max']} per process; fake model "
        f"{s0['ttft_ms']:.0f} ms to first token, {s0['tokens_per_s']:.0f} tokens/s, replies up to "
        f"{s0['reply_tokens']} tokens; learners think {s0['draft_think_s'][0]:.0f}-"
        f"{s0['draft_think_s'][1]:.0f} s per draft and {s0['read_think_s'][0]:.0f}-"
        f"{s0['read_think_s'][1]:.0f} s reading feedback, one feedback request per message.",
        "",
        HEADER,
        *[row(label, s) for s in summaries],
        "",
        STAGES_HEADER,
        *[stages_row(label, s) for s in summaries],
        "",
        *[process_table(label, s) + "\n" for s in summaries],
    ]
    README.write_text(head + start + "\n" + "\n".join(block) + "\n" + end + tail)


STAGES_HEADER = (
    "| run | learners | first token p95 ms: send→row / row→model / model→shown "
    "| feedback p95 ms: post→row / row→model / model→stored / stored→sent / sent→shown "
    "| CPU ms per turn: web / worker / postgres | client CPU % | steal % "
    "| machine busy %: mean / busiest 10 s (s at >= 95%) "
    "| web GC pauses >= 100 ms: count (full) / longest ms "
    "| set-up p95 s (arrivals over learners ÷ 50 s, 1 s at least) | web CPU ms per learner set up |"
    "\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def stages_row(label: str, s: dict[str, Any]) -> str:
    ft, fb, cpu = s["partner_stages_ms_p95"], s["feedback_stages_ms_p95"], s["cpu_ms_per_turn"]
    gc, busy = s.get("gc_pauses") or {}, s.get("machine_busy_pct") or {}
    names = ("post_to_row", "row_to_model", "model_to_stored", "stored_to_sent", "sent_to_shown")
    cells = [
        label, s["sessions"],
        " / ".join(str(ft.get(n)) for n in ("send_to_row", "row_to_model", "model_to_shown")),
        " / ".join(str(fb.get(n)) for n in names),
        f"{cpu['web']} / {cpu['worker']} / {cpu['postgres']}",
        s.get("client_cpu_pct"),
        s.get("cpu_steal_pct"),
        f"{busy.get('mean')} / {busy.get('busiest_10s')} ({busy.get('saturated_s')})"
        if busy else "-",
        f"{gc.get('count')} ({gc.get('full')}) / {gc.get('longest_ms')}" if gc else "-",
        round(s["setup_ms_p95"] / 1000, 1) if s.get("setup_ms_p95") is not None else "-",
        s.get("setup_web_cpu_ms_per_learner", "-"),
    ]  # fmt: skip
    return "| " + " | ".join(str(c) for c in cells) + " |"


def print_line(label: str, s: dict[str, Any]) -> None:
    gc, busy = s.get("gc_pauses") or {}, s.get("machine_busy_pct") or {}
    print(
        f"[bench] {label} {s['sessions']:>5} learners: first token ÷ model p95 "
        f"{s['first_token_ratio_p95']} ({s['first_token_ms']['p95']} vs "
        f"{s['model_first_token_ms']['p95']} ms), feedback overhead p95 "
        f"{s['feedback_overhead_ms_p95']} ms, errors {s['errors']} ({s['error_rate']}), "
        f"{s['messages_per_s']} msgs/s, web CPU {s['web_cpu_pct']}%, "
        f"{s['ws_memory_kb']} KB/socket, load {s['load_avg_1m']}, steal {s['cpu_steal_pct']}%, "
        f"machine busy {busy.get('mean', '?')}% (busiest 10 s {busy.get('busiest_10s', '?')}%), "
        f"web pauses >= 100 ms for garbage collection {gc.get('count', '?')} "
        f"(longest {gc.get('longest_ms', '?')} ms), set-up p95 {s.get('setup_ms_p95')} ms at "
        f"{s.get('setup_web_cpu_ms_per_learner')} ms of web CPU per learner",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, STANDARD)))
    parser.add_argument("--messages", type=int, help="messages per learner (all sizes)")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--celery-pool", default="threads")
    # Chosen by measurement (bench/README.md, "Settings"); the product's own defaults are 16, 10.
    parser.add_argument("--celery-concurrency", type=int, default=64)
    parser.add_argument("--db-pool-max", type=int, default=20)
    parser.add_argument("--think", type=float, default=1.0, help="scale of the think times")
    parser.add_argument(
        "--client-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the load generator's event loop (asyncio: as sessions 1-11 ran it)",
    )
    parser.add_argument(
        "--feedback-over",
        choices=["socket", "http"],
        default="socket",
        help='how "Get feedback" asks: over the open feedback socket (the page\'s way) or HTTP',
    )
    parser.add_argument(
        "--patches",
        type=Path,
        nargs="+",
        help=".patch files, or folders of them (applied in order)",
    )
    parser.add_argument(
        "--source",
        choices=["head", "live"],
        default="head",
        help="head: a snapshot of the last commit (default); live: this working tree",
    )
    parser.add_argument("--label", default="")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy record the servers during the turns"
    )
    parser.add_argument(
        "--profile-phase",
        choices=["turns", "setup"],
        default="turns",
        help="what --profile records: the turns, or the learners' arrival",
    )
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the servers")
    parser.add_argument(
        "--uvicorn-arg", action="append", default=[], help="more uvicorn options (repeatable)"
    )
    parser.add_argument("--database", default="imbue_bench", help="name; must start imbue_bench")
    parser.add_argument("--redis-db", type=int, default=10, help="the bench's own Redis database")
    args = parser.parse_args(argv)

    label = args.label or ("patched" if args.patches else "main")
    if args.source == "live":
        if args.patches:
            parser.error("--patches needs --source head")
        source, code = BASE_DIR, "working tree"
    else:
        source, code = snapshot(label, args.patches)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    extra_env = dict(item.split("=", 1) for item in args.env)
    summaries = []
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        load = LoadConfig(
            learners=size,
            messages=args.messages or STANDARD.get(size, 2),
            client_loop=args.client_loop,
            feedback_over=args.feedback_over,
        )
        load = replace(
            load,
            draft_think_s=tuple(x * args.think for x in load.draft_think_s),  # type: ignore[arg-type]
            read_think_s=tuple(x * args.think for x in load.read_think_s),  # type: ignore[arg-type]
        )
        stack_config = StackConfig(
            database_url=bench_database_url(args.database),
            redis_url=bench_redis_url(args.redis_db),
            web_workers=args.web_workers,
            celery_pool=args.celery_pool,
            celery_concurrency=args.celery_concurrency,
            db_pool_max=args.db_pool_max,
            source_dir=source,
            extra_env=extra_env,
            uvicorn_args=[a for arg in args.uvicorn_arg for a in arg.split()],
            profile_dir=(RESULTS_DIR / f"profile-{label}-{size}") if args.profile else None,
            profile_phase=args.profile_phase,
        )
        summary = run_one(load, stack_config)
        summary["label"] = label
        summary["code"] = code
        summary["load_config"] = {k: v for k, v in asdict(load).items()}
        (RESULTS_DIR / f"{label}-{size}.json").write_text(json.dumps(summary, indent=2))
        print_line(label, summary)
        summaries.append(summary)
    if not args.no_readme and summaries:
        command = (
            "make bench"
            if argv is None and len(sys.argv) == 1
            else "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
        )
        write_readme(label, summaries, command)
    chosen = next(
        (s for s in summaries if s["sessions"] == 100), summaries[-1] if summaries else {}
    )
    keys = ["sessions", "first_token_ratio_p95", "feedback_overhead_ms_p95", "error_rate",
            "first_token_ratio_p50", "first_token_ratio_p99", "feedback_overhead_ms_p50",
            "messages_per_s", "ws_memory_kb", "errors", "label"]  # fmt: skip
    print(json.dumps({k: chosen.get(k) for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
