"""Starting the gateway's web server around a core for tests (port 0, data in tmp_path)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from gateway.agents.tokens import hash_token
from gateway.config import Settings, load_settings
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
