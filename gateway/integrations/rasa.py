"""Calling custom actions on a Rasa action server (the rasa-sdk webhook protocol).

A journey step ``run: rasa:action_name`` posts the conversation's slots and latest message to
the action server as Rasa itself would::

    POST /webhook  {"next_action": ..., "sender_id": ..., "tracker": {...}, "domain": {...}, "version": ...}
    200 {"events": [{"event": "slot", "name": ..., "value": ...}, ...], "responses": [{"text": ...}, ...]}

Errors (HTTP 4xx/5xx with ``{"error": ...}``), timeouts and unreachable servers raise
:class:`RasaError` with a message naming the server and the action.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "3.21.1"  # the rasa-sdk release this client speaks to (sent as "version")
MAX_RESPONSE_BYTES = 1_048_576  # an action's answer is a few kB; refuse anything huge


class RasaError(RuntimeError):
    """A custom action could not be run: server unreachable, too slow, or it refused."""


@dataclass(frozen=True)
class RasaActionResult:
    """What the action returned: tracker events (``SlotSet`` ...) and bot responses."""

    events: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)

    def slots(self) -> dict[str, Any]:
        """The slots the action set (``{"event": "slot"}`` events), last value wins."""
        return {e["name"]: e.get("value") for e in self.events if e.get("event") == "slot" and "name" in e}

    def texts(self) -> list[str]:
        """The text of each response that has one."""
        return [str(r["text"]) for r in self.responses if r.get("text")]


def webhook_url(url: str) -> str:
    """``http://host:5055`` and ``http://host:5055/webhook`` both give the webhook URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RasaError(f"Rasa action server URL {url!r} is not an http(s) URL (rasa.action_server_url)")
    path = parts.path.rstrip("/")
    if not path.endswith("/webhook"):
        path += "/webhook"
    return urlunsplit(parts._replace(path=path))


def tracker_state(sender_id: str, slots: dict[str, Any], latest_message: dict[str, Any],
                  events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The tracker as Rasa sends it to an action server."""
    message = {"text": "", "intent": {}, "entities": [], "intent_ranking": []}
    message.update(latest_message)
    return {
        "sender_id": sender_id,
        "slots": slots,
        "latest_message": message,
        "events": events or [],
        "paused": False,
        "followup_action": None,
        "active_loop": {},
        "latest_action_name": None,
        "latest_input_channel": None,
    }


class RasaActionClient:
    """Runs custom actions on one Rasa action server."""

    def __init__(self, url: str, timeout: float = 3.0) -> None:
        self.url = webhook_url(url)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), raise_for_status=False)
        return self._session

    async def run(
        self,
        action_name: str,
        *,
        sender_id: str,
        slots: dict[str, Any],
        latest_message: dict[str, Any],
        domain: dict[str, Any] | None = None,
    ) -> RasaActionResult:
        """Run ``action_name`` for conversation ``sender_id``; raises :class:`RasaError`."""
        payload = {
            "next_action": action_name,
            "sender_id": sender_id,
            "tracker": tracker_state(sender_id, slots, latest_message),
            # rasa-sdk refuses a call without a domain (HTTP 449); an empty one is enough
            "domain": domain if domain is not None else {"slots": {name: {} for name in slots}},
            "version": PROTOCOL_VERSION,
        }
        try:
            body = json.dumps(payload, default=str)
        except (TypeError, ValueError) as exc:
            raise RasaError(f"cannot send slots to Rasa action {action_name}: {exc}") from exc
        where = f"Rasa action server {self.url} (action {action_name})"
        try:
            async with self._client().post(
                self.url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                raw = await resp.content.read(MAX_RESPONSE_BYTES + 1)
                status = resp.status
        except asyncio.TimeoutError:
            raise RasaError(f"{where} did not answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise RasaError(f"{where} is unreachable: {exc}") from exc
        if len(raw) > MAX_RESPONSE_BYTES:
            raise RasaError(f"{where} answered with more than {MAX_RESPONSE_BYTES} bytes")
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            raise RasaError(f"{where} answered HTTP {status} with a body that is not JSON: {raw[:200]!r}") from None
        if status != 200:
            reason = data.get("error") if isinstance(data, dict) else None
            raise RasaError(f"{where} refused it (HTTP {status}): {reason or raw[:200]!r}")
        if data is None:  # rasa-sdk answers null when it got no action name
            return RasaActionResult()
        if not isinstance(data, dict) or not isinstance(data.get("events", []), list) \
                or not isinstance(data.get("responses", []), list):
            raise RasaError(f"{where} answered with an unexpected shape: {raw[:200]!r}")
        events = [e for e in data.get("events") or [] if isinstance(e, dict)]
        responses = [r for r in data.get("responses") or [] if isinstance(r, dict)]
        return RasaActionResult(events=events, responses=responses)

    async def health(self) -> bool:
        """True when the server's ``GET /health`` answers 200 (for ``voicegw doctor``)."""
        parts = urlsplit(self.url)
        url = urlunsplit(parts._replace(path=parts.path[: -len("webhook")] + "health"))
        try:
            async with self._client().get(url) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
