"""A bounded HTTP load generator: ``wrk`` when installed, else an asyncio httpx client.

Closed loop: ``connections`` clients each send the next request as soon as
the previous answer arrives, for ``seconds``. The generator shares the
machine's cores with the server, so both servers of a comparison are loaded
by the same generator in the same way.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.stats import Summary

_WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int
    latency_ms: Summary
    tool: str

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def generate(
    url: str,
    seconds: int,
    connections: int = 50,
    headers: dict[str, str] | None = None,
    body: dict[str, object] | None = None,
) -> LoadResult:
    """Load ``url`` for ``seconds`` (whole seconds: wrk takes no fractions), sending
    ``headers`` (a server's token) with every request; with ``body``, POST it as JSON."""
    headers = headers or {}
    if shutil.which("wrk"):
        return _wrk(url, seconds, connections, headers, body)
    return asyncio.run(_httpx(url, seconds, connections, headers, body))


def _wrk(
    url: str,
    seconds: int,
    connections: int,
    headers: dict[str, str],
    body: dict[str, object] | None,
) -> LoadResult:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "report.lua"
        post = ""
        if body is not None:
            # A Lua long string holds the JSON as it is.
            post = f'wrk.method = "POST"\nwrk.body = [[{json.dumps(body)}]]\n'
            headers = {**headers, "content-type": "application/json"}
        script.write_text(post + _WRK_REPORT)
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        done = subprocess.run(
            [*command, "-s", str(script), url],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH "))
    requests, duration_us, errors, p50, p95, p99, p999 = (int(v) for v in line.split()[1:])
    latency = Summary(p50 / 1000, p95 / 1000, p99 / 1000, requests, p999 / 1000)
    return LoadResult(requests, duration_us / 1e6, errors, latency, "wrk")


async def _httpx(
    url: str,
    seconds: int,
    connections: int,
    headers: dict[str, str],
    body: dict[str, object] | None,
) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10, headers=headers) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def one_connection() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                before = time.perf_counter()
                try:
                    if body is None:
                        response = await client.get(url)
                    else:
                        response = await client.post(url, json=body)
                    if response.status_code >= 400:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - before)

        await asyncio.gather(*(one_connection() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    ms = [v * 1000 for v in latencies]
    latency = Summary.of(ms)
    return LoadResult(len(latencies), elapsed, errors, latency, "httpx")
