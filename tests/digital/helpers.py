"""Starting the gateway's web server around the real core for tests (port 0, data in tmp_path),
and reading what the core logged."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from gateway.agents.tokens import hash_token
from gateway.app import build_core
from gateway.config import Settings, load_settings
from gateway.context.store import LoggedEvent
from gateway.core.events import UserSaid
from gateway.core.orchestrator import Orchestrator
from gateway.web.app import WebRunner, start_web

AGENT_TOKENS = {name: f"{name}.test-token-{name}-0123456789abcdef0123456789" for name in ("alice", "bob", "sam")}
"""Sign-in tokens of the test accounts (long enough, in the gateway's ``<account>.<secret>`` form)."""
AGENT_ACCOUNTS = {
    "alice": {"role": "agent", "queues": ["billing", "support"], "token_hash": hash_token(AGENT_TOKENS["alice"])},
    "bob": {"role": "agent", "queues": ["orders"], "token_hash": hash_token(AGENT_TOKENS["bob"])},
    "sam": {"role": "supervisor", "queues": [], "token_hash": hash_token(AGENT_TOKENS["sam"])},
}
"""alice serves billing and support, bob orders; sam supervises (stored as hashes, as a site would)."""
FRAME_TIMEOUT = 20
ALICE = "+15551234567"
"""Alice Martin's phone on file in the sample CRM (account 12345678, PIN 4321, order 10001)."""


def web_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test gateway: data in ``tmp_path``, web on 127.0.0.1 port 0, two agents and a supervisor."""
    base: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "web": {"host": "127.0.0.1", "port": 0},
        "agents": {"accounts": dict(AGENT_ACCOUNTS)},
        "outreach": {"enabled": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_settings(environ={}, overrides=base)


@asynccontextmanager
async def real_gateway(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Orchestrator, WebRunner]]:
    """The real core (SQLite in ``tmp_path``, or what ``context`` says) behind the real web server
    (``overrides``: settings sections for both; ``deps``: more for build_web_app)."""
    deps = overrides.pop("deps", {})
    settings = web_settings(tmp_path, **overrides)
    core = await build_core(settings)
    try:
        runner = await start_web(settings, core, store=core.store, crm=core.crm, **deps)
    except BaseException:
        await core.close()
        raise
    try:
        yield core, runner
    finally:
        await runner.close()
        await core.close()


async def logged(core: Orchestrator, kind: str, conversation_id: str = "") -> list[LoggedEvent]:
    """What the core logged of ``kind`` (in one conversation, else in every stored one)."""
    ids = [conversation_id] if conversation_id else [r.id for r in await core.store.recent(limit=1000)]
    return [e for cid in ids for e in await core.store.events(cid) if e.kind == kind]


async def tracking_sms_by_voice(core: Orchestrator, caller: str = ALICE) -> str:
    """A call from Alice asking where her order is and taking the tracking link by SMS (the real
    journey texts it to the phone on file); the conversation id."""
    opened = await core.open("voice", caller_id=caller)
    for text in ("where is my order", "1 0 0 0 1", "yes"):
        await core.handle(opened.conversation_id, UserSaid(text), session_id=opened.session_id)
    return opened.conversation_id


async def start(tmp_path: Path, core: Any, **overrides: Any) -> WebRunner:
    """The web server around ``core`` (``overrides``: settings sections; ``deps``: see build_web_app)."""
    deps = overrides.pop("deps", {})
    return await start_web(web_settings(tmp_path, **overrides), core, **deps)


async def sign_in(http: aiohttp.ClientSession, url: str, name: str) -> None:
    """Sign ``name`` in through the desktop's form (the session cookie lands in ``http``'s jar,
    which must accept cookies from an IP address: ``aiohttp.CookieJar(unsafe=True)``)."""
    async with http.post(url + "/agent/login", data={"token": AGENT_TOKENS[name]}, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/agent", resp.status


async def recv_until(ws: aiohttp.ClientWebSocketResponse, kind: str, frames: list[dict[str, Any]] | None = None,
                     timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
    """Read JSON frames until one of ``kind`` arrives (collecting everything into ``frames``)."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        frame = json.loads(msg.data)
        if frames is not None:
            frames.append(frame)
        if frame["type"] == kind:
            return frame
