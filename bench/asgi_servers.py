"""Choose the ASGI server by measurement: uvicorn vs daphne, same app, same machine, one run.

    .venv/bin/python -m imbue.devservices exec -- .venv/bin/python -m bench.asgi_servers

For each server (one process each), with one real Celery worker behind it:
- websocket round trips through the worker (/ws/ping/: socket -> Celery -> PostgreSQL -> Redis ->
  socket), 50 sockets x 20 pings, latency p50/p95;
- HTTP: GET / with 20 keep-alive clients for 5 s, requests per second and p95.
Prints a table and one JSON line. Daphne must be installed (`pip install daphne`) for its column.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ws_round_trips(port: int, sockets: int = 50, pings: int = 20) -> list[float]:
    import websockets

    timings: list[float] = []

    async def one(index: int) -> None:
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/ws/ping/", origin="http://127.0.0.1"
        ) as ws:
            for n in range(pings):
                started = time.perf_counter()
                await ws.send(json.dumps({"ping": f"{index}-{n}"}))
                reply = json.loads(await ws.recv())
                assert reply["pong"] == f"{index}-{n}"
                timings.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(one(i) for i in range(sockets)))
    return timings


async def http_load(port: int, clients: int = 20, seconds: float = 5.0) -> tuple[int, list[float]]:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
    timings: list[float] = []
    deadline = time.monotonic() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            headers = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            timings.append((time.perf_counter() - started) * 1000)
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return len(timings), timings


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    from imbue.devservices import celery_worker_argv

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING"}
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v0"], cwd=BASE_DIR, check=True)
    worker = start(celery_worker_argv(), env)
    servers = {
        "uvicorn": [PY, "-m", "uvicorn", "imbue.asgi:application", "--no-access-log", "--port"],
        "daphne": [PY, "-m", "daphne", "imbue.asgi:application", "-p"],
    }
    results = {}
    try:
        for name, argv in servers.items():
            port = free_port()
            server = start([*argv, str(port)], env)
            try:
                wait_port(port)
                asyncio.run(ws_round_trips(port, sockets=5, pings=5))  # warm up
                ws = asyncio.run(ws_round_trips(port))
                count, http = asyncio.run(http_load(port))
                results[name] = {
                    "ws_p50_ms": round(statistics.median(ws), 1),
                    "ws_p95_ms": round(percentile(ws, 0.95), 1),
                    "http_rps": round(count / 5.0, 1),
                    "http_p95_ms": round(percentile(http, 0.95), 1),
                }
            except (OSError, TimeoutError) as exc:
                results[name] = {"error": str(exc)}
            finally:
                stop(server)
    finally:
        stop(worker)
    print(f"{'server':10} {'ws p50':>8} {'ws p95':>8} {'http rps':>9} {'http p95':>9}")
    for name, row in results.items():
        if "error" in row:
            print(f"{name:10} error: {row['error']}")
        else:
            print(
                f"{name:10} {row['ws_p50_ms']:8} {row['ws_p95_ms']:8} "
                f"{row['http_rps']:9} {row['http_p95_ms']:9}"
            )
    print(json.dumps(results))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imbue.settings")
    main()
