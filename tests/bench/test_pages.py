"""bench/pages.py works: a few new browsers' arrivals measured, the report has every figure.

No timing is asserted (the machine is shared); only the report's shape, that every request was
answered as a browser expects, and that the queries of each are counted.
"""

import json
import os

import pytest

from bench import pages

pytestmark = pytest.mark.timeout(600)


def test_two_sources_alternate_and_each_request_reports_cpu_and_queries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pages.main(
        [
            "--n", "3", "--warmup", "1", "--rounds", "1",
            "--database", f"imbue_bench_pages{os.environ.get('TEST_DB_SUFFIX', '')}",
            "--redis-db", os.environ.get("BENCH_SMOKE_REDIS_DB", "11"),
            # The same checkout as "before" too: the alternation runs, the figures compare.
            "--against", str(pages.BASE_DIR),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert report["model"] == "fake" and report["n"] == 3 and report["rounds"] == 1
    assert set(report["figures"]) == {"before", "after"}
    assert out[0].startswith("| request | code |")  # the Markdown table comes first
    for label, figures in report["figures"].items():
        assert set(figures) == {"library", "practise", "conversation", "arrival"}
        for name in ("library", "practise", "conversation"):
            f = figures[name]
            assert f["n"] == 3
            assert 0 < f["cpu_ms_p50"] <= f["cpu_ms_p95"]
            assert f["cpu_ms_mean"] > 0
            assert isinstance(f["queries_mean"], (int, float)) and f["queries_mean"] > 0
        # The practise POST writes a learner, a conversation and a session at least.
        assert figures["practise"]["queries_p50"] >= 3
        assert report["statuses"][label] == {
            "library": {"200": 3},
            "practise": {"302": 3},
            "conversation": {"200": 3},
        }
        arrival = figures["arrival"]
        assert arrival["cpu_ms_p50"] == pytest.approx(
            sum(figures[r]["cpu_ms_p50"] for r in ("library", "practise", "conversation")), abs=0.05
        )


def test_the_offline_brief_asks_no_model(capsys: pytest.CaptureFixture[str]) -> None:
    report = pages.run(
        n=2, warmup=0, model="offline", rounds=1,
        database=f"imbue_bench_pages{os.environ.get('TEST_DB_SUFFIX', '')}",
        redis_db=int(os.environ.get("BENCH_SMOKE_REDIS_DB", "11")), against=None,
    )  # fmt: skip
    assert set(report["figures"]) == {"after"}
    # With the fake model the POST also records the model call and writes the brief back.
    assert report["figures"]["after"]["practise"]["queries_mean"] >= 3
    assert report["statuses"]["after"]["practise"] == {"302": 2}


def test_bench_refuses_a_database_it_does_not_own() -> None:
    with pytest.raises(ValueError, match="imbue_bench"):
        pages.run(
            n=1, warmup=0, model="offline", rounds=1, database="imbue", redis_db=11, against=None
        )
