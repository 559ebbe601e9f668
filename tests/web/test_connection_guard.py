"""The web server's connection bounds over raw sockets, around the real core: a slow or silent
request head is cut, an idle keep-alive is closed, heads are bounded in size and count, and an
honest client next to the slow one is served throughout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from gateway.app import build_core
from tests.digital.helpers import recv_until, start, web_settings

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"


@pytest.fixture
async def serve(tmp_path):
    made: list[Any] = []

    async def make(**web: Any):
        settings = web_settings(tmp_path, web=web)
        core = await build_core(settings)
        runner = await start(tmp_path, core, web=web, deps={"store": core.store, "crm": core.crm})
        made.append((runner, core))
        return runner

    yield make
    for runner, core in made:
        await runner.close()
        await core.store.close()


async def read_all(reader: asyncio.StreamReader, timeout: float) -> bytes:
    out = bytearray()
    while True:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            return bytes(out)
        out += data


async def test_slow_header_sender_is_cut_while_an_honest_request_is_served(serve):
    runner = await serve(header_timeout_seconds=1.0)
    reader, writer = await asyncio.open_connection(runner.host, runner.port)
    started = time.monotonic()

    async def drip() -> int:  # slowloris: one more header line every 0.2 s, never the blank line
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")
        sent = 0
        try:
            while not reader.at_eof() and time.monotonic() - started < 6:
                await asyncio.sleep(0.2)
                writer.write(b"X-Slow-%d: still typing\r\n" % sent)
                await writer.drain()
                sent += 1
        except ConnectionError:
            pass
        return sent

    dripping = asyncio.create_task(drip())
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(0.5)  # the slow head is in progress
        async with http.get(runner.url + "/healthz") as resp:
            assert resp.status == 200
        answer = await read_all(reader, 5)
        cut_after = time.monotonic() - started
        async with http.get(runner.url + "/healthz") as resp:
            assert resp.status == 200  # and after it
    await dripping
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert 0.9 < cut_after < 2.5, cut_after
    assert runner.parts.metrics.value("voicegw_http_header_timeouts_total") == 1


async def test_a_connection_that_sends_nothing_is_closed(serve):
    runner = await serve(header_timeout_seconds=0.5, idle_timeout_seconds=30)
    reader, writer = await asyncio.open_connection(runner.host, runner.port)
    started = time.monotonic()
    assert await read_all(reader, 5) == b""  # closed, nothing to answer
    assert 0.4 < time.monotonic() - started < 2.0
    writer.close()


async def test_idle_keep_alive_is_closed_but_a_busy_one_is_not(serve):
    runner = await serve(header_timeout_seconds=0.6, idle_timeout_seconds=1.0)
    reader, writer = await asyncio.open_connection(runner.host, runner.port)
    started = time.monotonic()
    for _ in range(6):  # 2.4 s on one connection: older than both timeouts, never idle or slow
        writer.write(HEALTHZ)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(0.4)
    assert time.monotonic() - started > 2.0
    idle_from = time.monotonic()
    assert await read_all(reader, 5) == b""
    assert 0.4 < time.monotonic() - idle_from < 2.5
    writer.close()
    assert runner.parts.metrics.value("voicegw_http_header_timeouts_total") == 0


async def raw_request(runner: Any, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(runner.host, runner.port)
    writer.write(data)
    try:
        return await read_all(reader, 5)
    finally:
        writer.close()


async def test_request_heads_are_bounded_in_count_and_size(serve):
    runner = await serve()
    head = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
    ok = await raw_request(runner, head + b"".join(b"X-H%d: 1\r\n" % i for i in range(30)) + b"\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")
    many = await raw_request(runner, head + b"".join(b"X-H%d: 1\r\n" % i for i in range(100)) + b"\r\n")
    assert many.startswith(b"HTTP/1.0 400 ") and b"Too many headers" in many
    long = await raw_request(runner, head + b"Cookie: " + b"a" * 9000 + b"\r\n\r\n")
    assert long.startswith(b"HTTP/1.0 400 ")
    async with aiohttp.ClientSession() as http, http.get(runner.url + "/healthz") as resp:
        assert resp.status == 200


async def test_an_open_chat_outlives_the_header_deadline(serve):
    runner = await serve(header_timeout_seconds=0.5, idle_timeout_seconds=0.5)
    async with aiohttp.ClientSession() as http, http.ws_connect(runner.url + "/chat/ws") as ws:
        await recv_until(ws, "ask", timeout=30)
        await asyncio.sleep(1.5)  # three header deadlines and idle timeouts later
        await ws.send_json({"type": "message", "text": "where is my order"})
        assert (await recv_until(ws, "accepted", timeout=30))["id"] == 1
