"""Export memory for 1,000 vs 10,000 finished participants: flat, or growing with the study?

    python -m bench.export_memory                       # 1,000 and 10,000 participants
    python -m bench.export_memory --sizes 500 2000      # other sizes
    python -m bench.export_memory --reuse               # keep the seeded studies of a last run

Against the PostgreSQL of DATABASE_URL (or the embedded one), in a database of its own,
`imbue_bench_export` (dropped and made anew unless --reuse). Each size is seeded through the real
models by the test factory (tests/study/factories.py: every participant finished, four chats of
`--messages` learner messages each, two drafts per training turn, feedback, check-ins and model
calls). Then, for each size and format, a fresh process runs the export exactly as
`manage.py export_study` does, writing to /dev/null, and reports its wall time, bytes written, peak
resident memory (ru_maxrss) above the process's size before the export, and, in a second fresh
process, the peak of Python allocations during the export (tracemalloc). Results are printed and
saved to bench/results/export_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.stack import BASE_DIR, bench_database_url, with_database

DATABASE = "imbue_bench_export"
RESULTS = BASE_DIR / "bench" / "results" / "export_memory.json"


def _env(url: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "imbue.settings"}
    env.pop("DATABASE_NAME", None)
    env.pop("TEST_DB_SUFFIX", None)
    env["LOG_LEVEL"] = "WARNING"
    env["LLM_BASE_URL"] = ""
    return env


def _child(url: str, *argv: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.export_memory", *argv],
        cwd=BASE_DIR,
        env=_env(url),
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise RuntimeError(f"{argv} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fresh_database(url: str) -> None:
    import psycopg

    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=BASE_DIR,
        env=_env(url),
        check=True,
    )


# --------------------------------------------------------------------------- child processes


def _setup() -> None:
    import django

    django.setup()


def seed(size: int, messages: int) -> dict[str, Any]:
    """Seed one study of `size` finished participants (in this process)."""
    _setup()
    from tests.study.factories import seed_study

    started = time.perf_counter()
    seeded = seed_study(
        slug=f"bench-{size}", participants=size, messages=messages, keep_truth=False, batch=500
    )
    return {"size": size, "seconds": time.perf_counter() - started, "slug": seeded.study.slug}


def measure(slug: str, fmt: str, mode: str) -> dict[str, Any]:
    """Run one export to /dev/null and report its cost (in this fresh process)."""
    _setup()
    from django.db import connection

    from study import exports
    from study.codebook import FORMATS
    from study.models import Study

    study = Study.objects.get(slug=slug)
    connection.ensure_connection()
    # Warm the imports and the first queries, so the baseline holds what every export needs.
    for _ in exports.file_chunks(study, "codebook.csv"):
        pass
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "tracemalloc":
        tracemalloc.start()
    started = time.perf_counter()
    written = 0
    with open(os.devnull, "wb") as sink:
        for name in FORMATS[fmt]:
            for chunk in exports.file_chunks(study, name):
                sink.write(chunk)
                written += len(chunk)
    seconds = time.perf_counter() - started
    report = {"slug": slug, "format": fmt, "mode": mode, "seconds": seconds, "bytes": written}
    if mode == "tracemalloc":
        report["python_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report["rss_before_mib"] = before_kib / 1024
        report["rss_peak_mib"] = peak_kib / 1024
        report["rss_growth_mib"] = (peak_kib - before_kib) / 1024
    return report


# --------------------------------------------------------------------------- the run


def run(sizes: list[int], messages: int, reuse: bool) -> list[dict[str, Any]]:
    url = with_database(bench_database_url(DATABASE), DATABASE)
    if not reuse:
        _fresh_database(url)
    rows = []
    for size in sizes:
        if not reuse:
            seeded = _child(url, "_seed", str(size), str(messages))
            print(f"seeded {size:,} participants in {seeded['seconds']:.0f} s", flush=True)
        for fmt in ("csv", "json"):
            plain = _child(url, "_measure", f"bench-{size}", fmt, "rss")
            traced = _child(url, "_measure", f"bench-{size}", fmt, "tracemalloc")
            row = {
                "participants": size,
                "format": fmt,
                "mib_written": plain["bytes"] / 2**20,
                "seconds": plain["seconds"],
                "rss_before_mib": plain["rss_before_mib"],
                "rss_peak_mib": plain["rss_peak_mib"],
                "rss_growth_mib": plain["rss_growth_mib"],
                "python_peak_mib": traced["python_peak_mib"],
            }
            rows.append(row)
            print(
                f"{size:>6,} {fmt:4} {row['mib_written']:8.1f} MiB written in "
                f"{row['seconds']:6.1f} s; RSS {row['rss_before_mib']:.0f} -> "
                f"{row['rss_peak_mib']:.0f} MiB (+{row['rss_growth_mib']:.1f}); "
                f"Python peak {row['python_peak_mib']:.1f} MiB",
                flush=True,
            )
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_seed":
        print(json.dumps(seed(int(sys.argv[2]), int(sys.argv[3]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        print(json.dumps(measure(*sys.argv[2:5])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--messages", type=int, default=6, help="learner messages per chat")
    parser.add_argument("--reuse", action="store_true", help="measure the last run's studies")
    args = parser.parse_args()
    rows = run(args.sizes, args.messages, args.reuse)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"messages": args.messages, "rows": rows}, indent=2) + "\n")
    print(f"saved {Path(RESULTS).relative_to(BASE_DIR)}")


if __name__ == "__main__":
    main()
