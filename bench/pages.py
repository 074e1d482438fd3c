"""The web CPU and the queries of a learner's arrival: the three HTTP requests a new browser makes.

    python -m bench.pages [--n 200] [--warmup 30] [--model fake|offline] [--rounds 1]
                          [--database imbue_bench_h1] [--redis-db 11] [--against DIR] [--json]

A learner who arrives (a Prolific launch puts hundreds at once) opens the library
(`GET /practice/library/`), presses "Practise" on a situation (`POST
/practice/situations/<id>/practise/`: a learner, a conversation and the partner's brief from the
model) and lands on the conversation page (`GET /practice/c/<id>/`), before its two sockets open.
Each of the N simulated browsers is new (no cookies), comes from its own address (so the
per-address start limit never refuses it) and sends the CSRF token read from the library page,
as a browser does; Django's test client drives the real middleware, views and templates in one
process, against PostgreSQL and Redis, with the product's settings (its connection pool too).

Reported per request: CPU ms (`time.process_time` around the request, the test client's own
small share included: the same in every code version), p50 / mean / p95 over N, and the queries
it ran (all statements, counted by a `connection.execute_wrapper`). The first `--warmup`
browsers of each process are not counted (imports, template compiles, compiled queries).

`--model fake` (the default) starts the fake model server (tests/fakes/llm_server.py through
`bench.stack fake`, no delays) so the practise POST asks it for the partner's brief as it would
ask the model; `--model offline` leaves the model unconfigured (the offline brief, no model call).

`--against DIR` measures a second copy of the source too (e.g. `git worktree add /tmp/base
main`), in alternating processes (A, B, A, B... for `--rounds`), each on a fresh copy of the
database; the figures are then "before" (DIR) and "after" (this checkout). Writes only to
databases named imbue_bench* and to its own Redis database, which it empties.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
REQUESTS = ("library", "practise", "conversation")
_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


# --- one measuring process (runs against the source in its working directory) ----------------


def _measure(n: int, warmup: int) -> dict[str, Any]:
    """N new browsers' arrivals in this process: per request, CPU ms and queries of each."""
    import django

    django.setup()
    from django.db import connection
    from django.test import Client

    from simulations.models import Situation

    situation_ids = list(
        Situation.objects.library().order_by("category", "difficulty", "title")
        .values_list("pk", flat=True)
    )  # fmt: skip
    if not situation_ids:
        raise SystemExit("the database has no library situations (load_library)")
    counted = [0]

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counted[0] += 1
        return execute(sql, params, many, context)

    samples: dict[str, dict[str, list[float]]] = {
        name: {"cpu_ms": [], "queries": []} for name in REQUESTS
    }
    statuses: dict[str, dict[str, int]] = {name: {} for name in REQUESTS}

    def timed(name: str, call: Any, record: bool) -> Any:
        counted[0] = 0
        started = time.process_time()
        response = call()
        cpu_ms = (time.process_time() - started) * 1000
        if record:
            samples[name]["cpu_ms"].append(cpu_ms)
            samples[name]["queries"].append(counted[0])
            key = str(response.status_code)
            statuses[name][key] = statuses[name].get(key, 0) + 1
        return response

    # One client (one handler: a new test client would load the middleware again, WhiteNoise's
    # scan of the static files included, which a server does once); each browser new.
    client = Client(enforce_csrf_checks=True)
    with connection.execute_wrapper(count):
        for i in range(warmup + n):
            record = i >= warmup
            client.cookies = SimpleCookie()
            client.defaults["REMOTE_ADDR"] = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
            page = timed("library", lambda c=client: c.get("/practice/library/"), record)
            found = _TOKEN.search(page.content.decode())
            if page.status_code != 200 or found is None:
                raise SystemExit(f"library page: {page.status_code}, no form token")
            situation_id = situation_ids[i % len(situation_ids)]
            token = found.group(1)
            started = timed(
                "practise",
                lambda c=client, s=situation_id, t=token: c.post(
                    f"/practice/situations/{s}/practise/", {"csrfmiddlewaretoken": t}
                ),
                record,
            )
            if started.status_code != 302:
                raise SystemExit(f"practise: {started.status_code}")
            location = started["Location"]
            chat = timed("conversation", lambda c=client, u=location: c.get(u), record)
            if chat.status_code != 200:
                raise SystemExit(f"conversation page {location}: {chat.status_code}")
    return {"samples": samples, "statuses": statuses}


def _worker_main(n: int, warmup: int) -> None:
    # Run as a file from another checkout's directory: that checkout's packages come first
    # (PYTHONPATH), never this file's own folder.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imbue.settings")
    print(json.dumps(_measure(n, warmup)))


# --- the driver ------------------------------------------------------------------------------


def summarise(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Per request: cpu_ms_p50, cpu_ms_mean, cpu_ms_p95, queries_p50, queries_mean, n."""
    summary = {}
    for name in REQUESTS:
        cpu = sorted(samples[name]["cpu_ms"])
        queries = samples[name]["queries"]
        summary[name] = {
            "n": len(cpu),
            "cpu_ms_p50": round(statistics.median(cpu), 2),
            "cpu_ms_mean": round(statistics.fmean(cpu), 2),
            "cpu_ms_p95": round(cpu[min(len(cpu) - 1, int(0.95 * len(cpu)))], 2),
            "queries_p50": statistics.median(queries),
            "queries_mean": round(statistics.fmean(queries), 2),
        }
    summary["arrival"] = {
        "cpu_ms_p50": round(sum(summary[r]["cpu_ms_p50"] for r in REQUESTS), 2),
        "cpu_ms_mean": round(sum(summary[r]["cpu_ms_mean"] for r in REQUESTS), 2),
        "queries_mean": round(sum(summary[r]["queries_mean"] for r in REQUESTS), 2),
    }
    return summary


def _child_env(database_url: str, redis_url: str, source: Path, llm_url: str | None) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "imbue.settings",
        "PYTHONPATH": str(source),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LOG_LEVEL": "WARNING",
        "GC_PAUSE_WARN_MS": "0",
        "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
        "LLM_API_KEY": "bench",
        "LLM_MODEL": "fake-small",
        "LLM_TIMEOUT": "30",
    }
    for name in ("DATABASE_NAME", "TEST_DB_SUFFIX", "IMBUE_DEPLOY", "LLM_BASE_URL"):
        env.pop(name, None)
    if llm_url:
        env["LLM_BASE_URL"] = llm_url
    return env


def run(
    *,
    n: int,
    warmup: int,
    model: str,
    rounds: int,
    database: str,
    redis_db: int,
    against: Path | None,
) -> dict[str, Any]:
    """Measure this checkout (and `against`, alternating); the figures per source."""
    import redis

    from bench.stack import (
        PY,
        Stack,
        StackConfig,
        _terminate,
        bench_database_url,
        bench_redis_url,
        free_port,
        wait_until,
    )

    config = StackConfig(
        database_url=bench_database_url(database), redis_url=bench_redis_url(redis_db)
    )
    stack = Stack(config)  # refuses a database not named imbue_bench*
    sources = [("after", BASE_DIR)]
    if against is not None:
        sources.insert(0, ("before", against.resolve()))
    fake = None
    llm_url = None
    if model == "fake":
        port = free_port()
        fake = subprocess.Popen(
            [PY, "-m", "bench.stack", "fake", "--port", str(port), "--ttft-ms", "0",
             "--tokens-per-s", "100000"],
            cwd=BASE_DIR, start_new_session=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        llm_url = f"http://127.0.0.1:{port}/v1"
        wait_until(lambda: _listening(port), 30, "the fake model server")
    collected: dict[str, dict[str, dict[str, list[float]]]] = {
        label: {name: {"cpu_ms": [], "queries": []} for name in REQUESTS} for label, _ in sources
    }
    statuses: dict[str, dict[str, dict[str, int]]] = {label: {} for label, _ in sources}
    try:
        for _ in range(rounds):
            for label, source in sources:
                stack.prepare_database()
                redis.Redis.from_url(config.redis_url).flushdb()
                output = subprocess.run(
                    [PY, str(Path(__file__).resolve()), "--worker", "--n", str(n),
                     "--warmup", str(warmup)],
                    cwd=source, env=_child_env(config.database_url, config.redis_url, source,
                                               llm_url),
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if output.returncode != 0:
                    raise RuntimeError(f"{label} ({source}) failed:\n{output.stderr[-4000:]}")
                result = json.loads(output.stdout.strip().splitlines()[-1])
                for name in REQUESTS:
                    for key in ("cpu_ms", "queries"):
                        collected[label][name][key] += result["samples"][name][key]
                    for code, count in result["statuses"][name].items():
                        seen = statuses[label].setdefault(name, {})
                        seen[code] = seen.get(code, 0) + count
    finally:
        if fake is not None:
            _terminate(fake)
    return {
        "n": n,
        "warmup": warmup,
        "rounds": rounds,
        "model": model,
        "database": config.database_name,
        "sources": {label: str(source) for label, source in sources},
        "figures": {label: summarise(collected[label]) for label, _ in sources},
        "statuses": statuses,
    }


def _listening(port: int) -> bool:
    import socket

    with contextlib.closing(socket.socket()) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per request and source."""
    lines = [
        "| request | code | CPU ms p50 / mean / p95 | queries |",
        "|---|---|---|---|",
    ]
    for name in (*REQUESTS, "arrival"):
        for label, figures in report["figures"].items():
            f = figures[name]
            cpu = (
                f"{f['cpu_ms_p50']} / {f['cpu_ms_mean']} / {f['cpu_ms_p95']}"
                if name != "arrival"
                else f"{f['cpu_ms_p50']} / {f['cpu_ms_mean']} / -"
            )
            lines.append(f"| {name} | {label} | {cpu} | {f['queries_mean']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="browsers counted per process")
    parser.add_argument("--warmup", type=int, default=30, help="browsers not counted, first")
    parser.add_argument("--model", choices=("fake", "offline"), default="fake")
    parser.add_argument("--rounds", type=int, default=1, help="processes per source")
    parser.add_argument("--database", default="imbue_bench_pages")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--against", type=Path, help="another checkout, measured as 'before'")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker_main(args.n, args.warmup)
        return
    report = run(
        n=args.n,
        warmup=args.warmup,
        model=args.model,
        rounds=args.rounds,
        database=args.database,
        redis_db=args.redis_db,
        against=args.against,
    )
    if not args.json:
        print(table(report))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
