"""Starting the gateway's web server around a core for tests (port 0, data in tmp_path)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from gateway.config import Settings, load_settings
from gateway.web.app import WebRunner, start_web

AGENT_TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
FRAME_TIMEOUT = 20


def web_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test gateway: data in ``tmp_path``, web on 127.0.0.1 port 0, two agents."""
    base: dict[str, Any] = {
        "data_dir": str(tmp_path),
        "web": {"host": "127.0.0.1", "port": 0},
        "agents": {"tokens": dict(AGENT_TOKENS)},
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
