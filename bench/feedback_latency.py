"""Feedback request-to-display time through Celery and the channel layer, minus the model's time.

    .venv/bin/python -m bench.feedback_latency [--asks 200] [--learners 1,10] [--ttft-ms 300]
                                               [--over socket,http] [--rounds 1]

Starts the real stack (`bench.stack.Stack`: uvicorn, one Celery worker, the timed fake model
server, on a bench database of its own) and drives it as the conversation page does
(`bench.load.Learner`): "Get feedback" asks over the feedback socket (or, with `--over http`, is
a POST) and its answer is the quick offline panel; the expert panel then arrives on the feedback
socket and is reported "viewed". For every request:

- display: from just before the POST to the expert panel's frame on the socket (client clock);
- model: the fake server's own time for exactly that request (received to done, paired by the tag
  each draft carries), so overhead = display - model is what the product adds;
- before / after: POST to the fake server receiving the call, and the fake server finishing to
  the frame reaching the client (the two halves of the overhead).

`--source DIR` runs a copy of the product (e.g. with a proposed patch) instead of this checkout.
Runs `--asks` requests for each learner count in `--learners` (1 = one at a time, the pure
latency; 10 = ten browsers asking at once) and each way of asking in `--over`, `--rounds` times
in turn (the ways alternate, so a machine that drifts favours neither), prints a table and, last,
one JSON line. Each row also holds the web processes' CPU per request (`web_cpu_ms_per_ask`: the
whole request, its rating and its panels, from the processes' own CPU clocks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import STRATEGIES, FeedbackAsk, Learner, LoadConfig, Results, draft_text
from bench.stack import Stack, StackConfig

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/imbue_bench_fb"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/4"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Measured:
    display_ms: float
    model_ms: float
    before_ms: float
    after_ms: float
    offline_ms: float

    @property
    def overhead_ms(self) -> float:
        return self.display_ms - self.model_ms


def web_cpu_s(stack: Stack) -> float:
    """The web processes' CPU seconds so far (user + system)."""
    total = 0.0
    for name, process in stack.server_processes().items():
        if name.startswith("web"):
            times = process.cpu_times()
            total += times.user + times.system
    return total


async def ask_many(
    stack: Stack, learners: int, asks: int, seed: int, over: str = "socket"
) -> tuple[Results, int, float]:
    """`learners` browsers, each asking `asks // learners` times in a row; returns their asks,
    how many, and the web processes' CPU ms over the asking (their set-up left out)."""
    config = LoadConfig(
        learners=learners, direct=False, wait_timeout_s=60, seed=seed, feedback_over=over
    )
    results = Results()
    browsers = [
        Learner(i, stack.base_url, stack.fake_url, config, results) for i in range(learners)
    ]
    await asyncio.gather(*(b.setup([]) for b in browsers))
    per_browser = max(1, asks // learners)
    cpu_before = web_cpu_s(stack)

    async def run(browser: Learner) -> None:
        rng = random.Random(seed * 1009 + browser.index)
        try:
            for n in range(1, per_browser + 1):
                chosen = sorted(rng.sample(STRATEGIES, rng.choice((1, 2, 3))), key=STRATEGIES.index)
                text = draft_text(rng, chosen, f"bx{browser.index}y1z{n}")
                ask = await browser.ask_feedback(1, text, chosen)
                if ask.error:
                    results.errors.append(ask.error)
        finally:
            await browser.close()

    await asyncio.gather(*(run(b) for b in browsers))
    return results, per_browser * learners, (web_cpu_s(stack) - cpu_before) * 1000


def pair(asks: list[FeedbackAsk], log: list[dict[str, Any]]) -> list[Measured]:
    """Each ask with the fake server's record of its feedback call (matched by tag)."""
    calls = {tag: entry for entry in log if entry["purpose"] == "feedback" for tag in entry["tags"]}
    measured = []
    for ask in asks:
        call = calls.get(ask.tag)
        if ask.error or ask.display_ms is None or call is None or ask.offline_ms is None:
            continue
        shown_at = ask.asked_at + ask.display_ms / 1000
        measured.append(
            Measured(
                display_ms=ask.display_ms,
                model_ms=(call["done"] - call["received"]) * 1000,
                before_ms=(call["received"] - ask.asked_at) * 1000,
                after_ms=(shown_at - call["done"]) * 1000,
                offline_ms=ask.offline_ms,
            )
        )
    return measured


def summary(label: str, measured: list[Measured], asked: int, errors: list[str]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float]:
        return {
            "p50": round(percentile(values, 0.50), 1),
            "p95": round(percentile(values, 0.95), 1),
            "max": round(max(values), 1) if values else float("nan"),
        }

    return {
        "run": label,
        "asked": asked,
        "measured": len(measured),
        "errors": len(errors),
        "first_errors": sorted(set(errors))[:3],
        "display_ms": stats([m.display_ms for m in measured]),
        "model_ms": stats([m.model_ms for m in measured]),
        "overhead_ms": stats([m.overhead_ms for m in measured]),
        "before_model_ms": stats([m.before_ms for m in measured]),
        "after_model_ms": stats([m.after_ms for m in measured]),
        "offline_panel_ms": stats([m.offline_ms for m in measured]),
        "overhead_mean_ms": round(statistics.fmean(m.overhead_ms for m in measured), 1)
        if measured
        else None,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'run':<24}{'n':>5}{'err':>5}  " + "  ".join(
        f"{name:>22}" for name in ("display p50/p95", "model p50/p95", "overhead p50/p95",
                                   "before/after p95", "offline panel p95", "web CPU ms/ask")
    )  # fmt: skip
    print(header)
    for row in rows:
        print(
            f"{row['run']:<24}{row['measured']:>5}{row['errors']:>5}  "
            f"{row['display_ms']['p50']:>10.1f}/{row['display_ms']['p95']:<11.1f}  "
            f"{row['model_ms']['p50']:>10.1f}/{row['model_ms']['p95']:<11.1f}  "
            f"{row['overhead_ms']['p50']:>10.1f}/{row['overhead_ms']['p95']:<11.1f}  "
            f"{row['before_model_ms']['p95']:>10.1f}/{row['after_model_ms']['p95']:<11.1f}  "
            f"{row['offline_panel_ms']['p95']:>22.1f}  "
            f"{row['web_cpu_ms_per_ask']:>22.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asks", type=int, default=200, help="feedback requests per run")
    parser.add_argument("--learners", default="1,10", help="comma-separated browser counts")
    parser.add_argument("--ttft-ms", type=float, default=300.0, help="the fake model's latency")
    parser.add_argument("--warmup", type=int, default=10, help="requests before measuring")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--over", default="socket,http", help="ways of asking, comma-separated: socket, http"
    )
    parser.add_argument("--rounds", type=int, default=1, help="times to run every way in turn")
    parser.add_argument(
        "--source", type=Path, default=None, help="run a copy of the product with patches applied"
    )
    args = parser.parse_args()

    config = StackConfig(
        database_url=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        redis_url=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        ttft_ms=args.ttft_ms,
        tokens_per_s=0.0,  # the whole JSON at once after the time to first token
        # The per-learner limit (20 a minute) would stop a benchmark that asks back to back.
        extra_env={"IMBUE_FEEDBACK_PER_MINUTE": "0"},
    )
    if args.source is not None:
        config.source_dir = args.source.resolve()
    rows = []
    started = time.time()
    ways = [w.strip() for w in args.over.split(",") if w.strip()]
    with Stack(config) as stack:
        for way in ways:
            asyncio.run(ask_many(stack, 1, args.warmup, args.seed + 1, way))
        for round_ in range(1, args.rounds + 1):
            for learners in (int(n) for n in args.learners.split(",")):
                for way in ways:
                    stack.clear_fake_log()
                    results, asked, cpu_ms = asyncio.run(
                        ask_many(stack, learners, args.asks, args.seed + round_, way)
                    )
                    measured = pair(results.asks, stack.fake_log())
                    label = f"{learners} learner(s), {way}" + (
                        f" #{round_}" if args.rounds > 1 else ""
                    )
                    row = summary(label, measured, asked, results.errors)
                    row["over"] = way
                    row["web_cpu_ms_per_ask"] = round(cpu_ms / max(1, asked), 2)
                    rows.append(row)
    print_table(rows)
    print(
        json.dumps(
            {
                "bench": "feedback_latency",
                "fake_ttft_ms": args.ttft_ms,
                "seconds": round(time.time() - started, 1),
                "runs": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
