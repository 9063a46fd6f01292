"""A burst of Evolution webhook deliveries, sent from a process of its own.

``python -m bench.webhook_burst URL SECRET GROUP COUNT CONNECTIONS KIND``
posts COUNT deliveries over CONNECTIONS concurrent connections, as fast as
they are answered: KIND ``apply``, nine messages for one member added, each
from another member; KIND ``ignored``, ``connection.update`` events, which
jobsup answers without a write (the control: HTTP alone). It prints one
JSON line: the wall-clock window of the burst, the answers' status codes
and each delivery's latency in ms. A process of its own, so that its work
does not share a GIL with the client timing the job API.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit


def delivery(group: str, i: int, now: int, kind: str = "apply") -> dict[str, Any]:
    member = f"{10_000_000 + i}@lid"
    envelope: dict[str, Any] = {
        "instance": "bench",
        "date_time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 60)),
        "sender": "5511900000000@s.whatsapp.net",
        "server_url": "http://evolution.invalid",
        "apikey": None,
    }
    if kind == "ignored":  # answered 200 without a write: the control
        return {"event": "connection.update", "data": {"state": "open"}, **envelope}
    if i % 10 == 0:
        data = {"id": group, "author": member, "participants": [member], "action": "add"}
        return {"event": "group-participants.update", "data": data, **envelope}
    key = {"remoteJid": group, "fromMe": False, "id": f"B{i}", "participant": member}
    data = {"key": key, "messageTimestamp": now - 30, "message": {"conversation": "hi"}}
    return {"event": "messages.upsert", "data": data, **envelope}


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> int:
    """One request on a keep-alive connection; the answer's status code."""
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def burst(
    url: str, secret: str, group: str, count: int, connections: int, kind: str
) -> dict[str, Any]:
    """Raw HTTP/1.1 over asyncio streams: a client far cheaper than the server it loads."""
    target = urlsplit(url)
    now = int(time.time())
    bodies = [json.dumps(delivery(group, i, now, kind)).encode() for i in range(count)]
    head = (
        f"POST {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
        f"X-Webhook-Secret: {secret}\r\nContent-Type: application/json\r\nContent-Length: "
    ).encode()
    streams = [
        await asyncio.open_connection(target.hostname, target.port) for _ in range(connections)
    ]
    codes: Counter[int] = Counter()
    latencies: list[float] = []
    pending = iter(bodies)

    async def sender(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for body in pending:
            began = time.perf_counter()
            try:
                codes[await _post(reader, writer, head, body)] += 1
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                codes[0] += 1
                return
            finally:
                latencies.append((time.perf_counter() - began) * 1000)

    began = time.time()
    await asyncio.gather(*(sender(r, w) for r, w in streams))
    ended = time.time()
    for _, writer in streams:
        writer.close()
    return {"began": began, "ended": ended, "codes": dict(codes), "latency_ms": latencies}


def main() -> None:
    url, secret, group, count, connections, kind = sys.argv[1:7]
    print(json.dumps(asyncio.run(burst(url, secret, group, int(count), int(connections), kind))))


if __name__ == "__main__":
    main()
