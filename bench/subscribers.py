"""Many SSE subscribers in one process (``python -m bench.subscribers``), for the events figure.

Each subscriber is one raw asyncio connection reading and discarding a
stream. Arguments: the server's port, a JSON object of headers, then the
paths to subscribe to (one subscriber per path; repeat a path for more).
Prints ``ready`` once every subscriber has its first bytes, then, when its
stdin closes, one JSON line: streams still open, bytes and events received.
"""

from __future__ import annotations

import asyncio
import json
import sys


async def _one(port: int, path: str, headers: dict[str, str], stats: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    first = True
    stats["open"] += 1
    try:
        while chunk := await reader.read(65536):
            if first:
                stats["ready"] += 1
                first = False
            stats["bytes"] += len(chunk)
            stats["events"] += chunk.count(b"\nid: ")
    finally:
        stats["open"] -= 1
        writer.close()


async def main(port: int, headers: dict[str, str], paths: list[str]) -> None:
    stats = {"open": 0, "ready": 0, "bytes": 0, "events": 0}
    tasks = [asyncio.ensure_future(_one(port, p, headers, stats)) for p in paths]
    while stats["ready"] < len(paths):
        await asyncio.sleep(0.05)
        if all(t.done() for t in tasks):
            break
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
    print(json.dumps(stats), flush=True)
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]))
