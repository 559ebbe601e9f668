"""Reading what the topology did: conversations and their event logs in the shared Redis, and
what a node logged about a call."""

from __future__ import annotations

import ast
import asyncio
import re
import time

from gateway.context.redis_store import RedisStore
from tests.scale.topology import Node, Topology


async def events_of(url: str, cid: str):
    store = RedisStore(url)
    try:
        return await store.events(cid)
    finally:
        await store.close()


async def conversation_of(url: str, caller: str, timeout: float = 30.0) -> str:
    store = RedisStore(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await store.find_recent(caller_id=caller, within_seconds=3600)
            if found is not None:
                return found.id
            await asyncio.sleep(0.3)
    finally:
        await store.close()
    raise AssertionError(f"no conversation for {caller}")


async def until_said(url: str, cid: str, words: str, topo: Topology, timeout: float = 60.0):
    """The conversation's log once a bot line containing ``words`` is in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = await events_of(url, cid)
        if any(words in str(e.payload.get("text", "")) for e in events if e.channel == "bot"):
            return events
        await asyncio.sleep(0.5)
    lines = [(e.seq, e.kind, e.payload.get("text") or e.payload.get("digit")) for e in await events_of(url, cid)]
    raise AssertionError(f"{words!r} never said in {cid}: {lines}\n{topo.diagnostics()}")


def media_stats(node: Node, call: str) -> dict:
    """The media statistics a node logged when the call (Call-ID prefix ``call``) ended."""
    match = re.search(rf"call {re.escape(call)}\S* media stats (\{{.*\}})", node.log())
    assert match, f"no media stats for {call}"
    return ast.literal_eval(match.group(1))


async def until_kind(url: str, cid: str, kind: str, topo: Topology, *, after: int, timeout: float = 60.0):
    """The conversation's log once an event ``kind`` is in it past the first ``after`` events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = await events_of(url, cid)
        if any(e.kind == kind for e in events[after:]):
            return events
        await asyncio.sleep(0.5)
    lines = [(e.seq, e.kind, e.payload.get("text")) for e in (await events_of(url, cid))[after:]]
    raise AssertionError(f"no {kind} in {cid} after seq {after}: {lines}\n{topo.diagnostics()}")


