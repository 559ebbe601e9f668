"""A real gateway for agent-side tests: the real core (SQLite in tmp_path, or Redis) behind the
real web server on a free port, plus conversations transferred to a given queue."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from gateway.core.events import ChatMessage
from gateway.core.orchestrator import Orchestrator
from gateway.web.app import WebRunner
from tests.digital.helpers import AGENT_TOKENS, real_gateway, recv_until  # noqa: F401  (real_gateway: for the tests)

TO_QUEUE = {
    "billing": ["I want to dispute my bill", "12345678", "1985-03-14", "I want to talk to an agent"],
    "orders": ["where is my order", "I want to talk to an agent"],
    "support": ["I want to talk to an agent"],
}
"""What a customer writes, in the real journeys, to be transferred to each queue."""


async def transferred(core: Orchestrator, queue: str) -> str:
    """A new chat conversation, transferred by the real journeys to ``queue``."""
    opened = await core.open("chat")
    cid = opened.conversation_id
    for text in TO_QUEUE[queue]:
        await core.handle(cid, ChatMessage(text=text), session_id=opened.session_id)
    assert (await core.context(cid))["transfer"]["queue"] == queue
    return cid


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {AGENT_TOKENS[name]}"}


def jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)  # keep cookies from 127.0.0.1 as a browser does


async def desk(http: aiohttp.ClientSession, url: str, name: str, skills: list[str],
               languages: list[str] = ["en"]) -> aiohttp.ClientWebSocketResponse:  # noqa: B006
    """``name``'s desktop socket (Bearer token), ready with ``skills`` and ``languages``."""
    ws = await http.ws_connect(f"{url}/agent/ws", headers=bearer(name))
    await recv_until(ws, "welcome")
    await ws.send_json({"type": "ready", "skills": skills, "languages": languages})
    await recv_until(ws, "ready")
    return ws


async def no_frame(ws: aiohttp.ClientWebSocketResponse, seconds: float = 1.0, ignore: tuple[str, ...] = ()) -> None:
    """Assert nothing arrives on ``ws`` for ``seconds`` (but frames of the types in ``ignore``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            msg = await asyncio.wait_for(ws.receive(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            return
        if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("type") in ignore:
            continue
        raise AssertionError(f"unexpected frame {msg.type} {msg.data!r}")


async def wait_for_agents(runner: WebRunner, count: int) -> None:
    for _ in range(200):
        if len(runner.parts.desktop.registry.agents()) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("agents did not appear in the registry")
