"""The model gateway's HTTP transports, both ways in one run: CPU to read one streamed reply.

    .venv/bin/python bench/llm_transport.py            # 200 replies at once, 5 passes each way

The fake model server (its own process, so its CPU is not counted) streams 40-word replies, one
word per server-sent event at 40 tokens/s, as in `make bench`. This process reads them through
the gateway's own request (`imbue.llm._post`, the SDK's `post` with a plain JSON body) on the
gateway's own SDK client (`imbue.llm._client`) for each `LLM_HTTP_CLIENT` value, all replies of a
pass at once on one event loop (uvloop, as uvicorn runs the web processes). Prints this
process's CPU per reply, the median over passes, and the ratio; bench/README.md (session 9) has
the figures.
"""

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imbue.settings")

import django
import openai
import uvloop

django.setup()

from imbue import llm  # noqa: E402
from tests.fakes.llm_server import start_fake_server  # noqa: E402

REPLIES = 200
PASSES = 5
BODY = {
    "model": "fake-small",
    "messages": [
        {"role": "system", "content": "You play my manager. Be hard to convince."},
        {"role": "user", "content": " ".join(["word"] * 40)},  # the fake answers as many words
    ],
}


async def read_reply(client: openai.AsyncOpenAI) -> int:
    stream = await llm._post(client, dict(BODY), stream=True)
    chunks = 0
    async with stream:
        async for _ in stream:
            chunks += 1
    return chunks


async def cpu_per_reply_ms(kind: str, base_url: str) -> tuple[float, int]:
    cfg = llm._Config(
        base_url=base_url, api_key="no-key", provider="openai", api_version="",
        timeout_s=30.0, max_retries=0, backoff_s=0.0, http_client=kind,
    )  # fmt: skip
    client = await llm._client(cfg)  # the gateway's own, closed when this loop ends
    await read_reply(client)  # connections opened, code warm
    started = time.process_time()
    chunks = await asyncio.gather(*(read_reply(client) for _ in range(REPLIES)))
    return (time.process_time() - started) * 1000 / REPLIES, chunks[0]


def main() -> None:
    server = start_fake_server(in_subprocess=True, ttft_ms=5, tokens_per_s=40, reply_tokens=40)
    try:
        found: dict[str, list[float]] = {kind: [] for kind in llm.HTTP_CLIENTS}
        for _ in range(PASSES):
            for kind in llm.HTTP_CLIENTS:  # in turn, so drift on a shared machine hits both
                ms, chunks = uvloop.run(cpu_per_reply_ms(kind, server.base_url))
                found[kind].append(ms)
        print(f"{REPLIES} replies at once, {chunks} chunks each, CPU ms per reply, {PASSES} passes")
        for kind, values in found.items():
            each = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {kind:8s} median {statistics.median(values):.2f}  ({each})")
        ratio = statistics.median(found["httpx"]) / statistics.median(found["aiohttp"])
        print(f"  httpx / aiohttp: {ratio:.2f} x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
