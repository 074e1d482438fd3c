"""The benchmark itself works: three learners through the real stack, every figure reported.

No timing is asserted (the machine is shared); only that the generator drives the product the
way a browser does and that `make bench`'s JSON line carries its keys.
"""

import json
import os

import pytest

from bench import run

pytestmark = pytest.mark.timeout(600)


def test_three_learners_go_through_the_real_stack_and_the_json_line_has_its_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run.main(
        [
            "--sizes", "3", "--messages", "2", "--think", "0.03", "--web-workers", "1",
            "--celery-concurrency", "4", "--database", "imbue_bench_smoke",
            # Its own Redis database: a test session's Celery worker on the same one would
            # take the bench's feedback tasks.
            "--redis-db", os.environ.get("BENCH_SMOKE_REDIS_DB", "11"),
            "--label", "smoke", "--no-readme", "--source", "live",
        ]
    )  # fmt: skip
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    line = json.loads(last)
    for key in ("sessions", "first_token_ratio_p95", "feedback_overhead_ms_p95", "error_rate"):
        assert key in line
    assert line["sessions"] == 3
    assert line["errors"] == 0

    summary = json.loads((run.RESULTS_DIR / "smoke-3.json").read_text())
    assert summary["connected"] == 3
    steps = summary["setup_steps_ms"]
    assert list(steps) == [
        "library", "practise", "page", "chat_socket", "feedback_socket", "transcript"
    ]  # fmt: skip
    assert all(s["p95"] is not None and s["p95"] >= s["p50"] >= 0 for s in steps.values())
    # What the arrival cost the servers, apart from the turns.
    assert {"web-1", "worker", "fake-model"} <= set(summary["setup_cpu_s"])
    assert summary["setup_cpu_s"]["web-1"] > 0
    assert summary["setup_web_cpu_ms_per_learner"] > 0
    assert summary["setup_s"] > 0
    assert summary["messages"] == 6
    assert summary["keyed_sends"] == 6  # each send carries the page's key, as a browser's does
    assert summary["feedback_requests"] == 6
    # One model call per message and per feedback request (the budget per turn).
    assert summary["model_calls_per_message"] == 1
    assert summary["model_calls_per_feedback"] == 1
    assert summary["first_token_ratio_p95"] is not None
    assert summary["feedback_overhead_ms_p95"] is not None
    assert {"web-1", "worker", "fake-model"} <= set(summary["processes"])
    # The learners offer compression, as browsers do; the product's server declines it
    # (WS_PER_MESSAGE_DEFLATE, off unless set).
    assert summary["ws_extensions"] == [""]
    # The web processes' long collections, read from their log (how many depends on the run).
    gc = summary["gc_pauses"]
    assert set(gc) == {"count", "full", "longest_ms", "total_ms", "in_turns_at_s"}
    assert len(gc["in_turns_at_s"]) <= gc["count"]
    # The generator ran on uvloop, and the whole machine's load over the turns is recorded.
    assert summary["load_config"]["client_loop"] == "uvloop"
    # "Get feedback" asked as the page asks while its feedback socket is open.
    assert summary["load_config"]["feedback_over"] == "socket"
    busy = summary["machine_busy_pct"]
    assert set(busy) == {"mean", "busiest_10s", "saturated_s"}
    assert 0 < busy["mean"] <= 100 and busy["mean"] <= busy["busiest_10s"] <= 100
    assert summary["machine_busy_timeline"]
    # And each server process's own, in % of one core.
    assert {"web-1", "worker", "fake-model"} <= set(summary["process_busy_pct"])
    assert set(summary["process_busy_pct"]["web-1"]) == {"mean", "busiest_10s", "saturated_s"}
    assert all(share >= 0 for _, share in summary["process_cpu_timeline"]["web-1"])
    assert not any(name.startswith("postgres-") for name in summary["process_cpu_timeline"])
