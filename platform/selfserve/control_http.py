"""The small HTTP/1.0 control endpoint of the platform's own processes (the pipelines worker, the
serving runtime): health for the supervisor, nudges and reads from the API. Plain asyncio streams,
one request per connection, JSON answers; the process decides each answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

Answer = Callable[[str, str, dict[str, str]], Awaitable[tuple[str, Any]]]
MAX_HEADERS = 50
READ_TIMEOUT = 5.0


async def serve_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: Answer) -> None:
    """Read one request line and its headers, answer ``answer(method, target, headers)`` -> (status
    line, JSON body), close. A client that stalls or sends garbage is dropped."""
    with contextlib.suppress(Exception):
        request = (await asyncio.wait_for(reader.readline(), READ_TIMEOUT)).decode("latin-1").split()
        headers: dict[str, str] = {}
        while len(headers) < MAX_HEADERS:
            line = (await asyncio.wait_for(reader.readline(), READ_TIMEOUT)).decode("latin-1").strip()
            if not line:
                break
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        method, target = (request + ["", ""])[:2]
        status, payload = await answer(method, target, headers)
        body = json.dumps(payload).encode()
        head = f"HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
    writer.close()
