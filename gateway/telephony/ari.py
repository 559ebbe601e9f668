"""ARI (Asterisk REST Interface) Stasis app with externalMedia, for teams that prefer ARI.

Dialplan: ``exten => 702,1,Stasis(voicegw)``. For each channel entering the app the gateway
answers it, opens a UDP port on ``ari.media_host``, creates an externalMedia channel
(``UnicastRTP``, u-law, 20 ms) aimed at that port, bridges both (mixing bridge) and runs a
voice session: RTP from Asterisk (PT 0, 160-byte payloads; its timestamps start at 160) is
decoded into ``push_audio``; every 20 ms, on one shared drift-free tick, ``pull_frame`` goes
back as RTP to the address Asterisk gives in ``UNICASTRTP_LOCAL_ADDRESS``/``_PORT``.
``ChannelDtmfReceived`` events become ``push_dtmf``. A transfer sets the ``VOICEGW_*``
variables and sends the channel back to the dialplan (``continue`` into ``ami.agent_context``,
extension = queue). externalMedia needs ``chan_rtp.so`` (without it Asterisk answers HTTP 500).

At most ``ari.max_sessions`` calls at once: a channel entering the app past that is refused
before anything is set up for it: ``VOICEGW_STATUS=busy`` is set on it and it is sent back to
the dialplan (``continue``, the next priority), or hung up (``congestion``) if that fails; a log
line names the channel and ``voicegw_sessions_refused_total{server="ari"}`` counts it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import struct
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.config import Settings
from gateway.core.actions import Transfer
from gateway.health import ChannelHealth
from gateway.limits import SessionCap
from gateway.telephony.ami import agent_extension
from gateway.telephony.calls import FAILED_ENDS
from gateway.telephony.media_pacer import MediaPacer
from gateway.voice.audio import ulaw_decode, ulaw_encode

log = logging.getLogger(__name__)

RTP_HEADER = 12
PT_PCMU = 0
MAX_EVENT_BYTES = 1 << 20
REQUEST_TIMEOUT = 5.0
MAX_EARLY_KEYS = 32
"""Keys kept for a call whose session is not ready yet (a digit string is 32 at most)."""


class AriError(RuntimeError):
    """An ARI request failed: ``status`` and Asterisk's ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(f"ARI {status}: {message}")
        self.status = status
        self.message = message


# --- RTP, sans-IO --------------------------------------------------------------------------------

@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    """One RTP datagram (RFC 3550); ValueError when it is not one."""
    if len(data) < RTP_HEADER:
        raise ValueError(f"RTP datagram of {len(data)} bytes is shorter than its header")
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    if b0 >> 6 != 2:
        raise ValueError(f"not RTP version 2 (first byte 0x{b0:02x})")
    offset = RTP_HEADER + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if len(data) < offset + 4:
            raise ValueError("truncated RTP header extension")
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if b0 & 0x20:  # padding
        end -= data[-1]
    if offset > end:
        raise ValueError("RTP header longer than the datagram")
    return RtpPacket(b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), data[offset:end])


class RtpPacketizer:
    """Builds the RTP stream the gateway sends (random SSRC, sequence and timestamp start)."""

    def __init__(self, payload_type: int = PT_PCMU, rng: random.Random | None = None):
        rng = rng or random.Random()
        self.payload_type = payload_type
        self.ssrc = rng.getrandbits(32)
        self.sequence = rng.getrandbits(16)
        self.timestamp = rng.getrandbits(32)
        self.first = True

    def packet(self, payload: bytes, samples: int = 160) -> bytes:
        header = struct.pack("!BBHII", 0x80, (0x80 if self.first else 0) | self.payload_type,
                             self.sequence, self.timestamp, self.ssrc)
        self.first = False
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        return header + payload


# --- REST ----------------------------------------------------------------------------------------

class AriRest:
    """Minimal ARI REST client (JSON in, JSON out, one keep-alive session)."""

    def __init__(self, url: str, username: str, password: str, timeout: float = REQUEST_TIMEOUT):
        self.base = url.rstrip("/") + "/ari"
        token = base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"},
                                             timeout=aiohttp.ClientTimeout(total=timeout))

    async def request(self, method: str, path: str, **params: Any) -> Any:
        query = {k: str(v) for k, v in params.items() if v is not None}
        async with self.session.request(method, self.base + path, params=query,
                                        headers={"Accept": "application/json"}) as resp:
            body = await resp.read()
            data: Any = None
            if body:
                try:
                    data = json.loads(body)
                except ValueError:
                    data = {"message": body[:200].decode("utf-8", "replace")}
            if resp.status >= 400:
                message = data.get("message", resp.reason) if isinstance(data, dict) else str(resp.reason)
                raise AriError(resp.status, str(message))
            return data

    async def close(self) -> None:
        await self.session.close()


# --- the Stasis app ------------------------------------------------------------------------------

class _Media(asyncio.DatagramProtocol):
    def __init__(self, call: "AriCall"):
        self.call = call

    def datagram_received(self, data: bytes, addr: Any) -> None:
        call = self.call
        if call.remote is not None and addr[1] != call.remote[1]:
            return  # only the port Asterisk announced
        try:
            packet = parse_rtp(data)
        except ValueError as exc:
            log.debug("ARI call %s: dropped datagram: %s", call.channel_id, exc)
            return
        if packet.payload_type == PT_PCMU and call.session is not None and call.ready:
            call.session.push_audio(ulaw_decode(packet.payload))


@dataclass
class AriCall:
    channel_id: str
    caller_id: str = ""
    dialed: str = ""
    media_id: str = ""
    bridge_id: str = ""
    remote: tuple[str, int] | None = None
    transport: asyncio.DatagramTransport | None = None
    session: Any = None
    ready: bool = False
    transferred: bool = False
    ended: bool = False
    rtp: RtpPacketizer = field(default_factory=RtpPacketizer)
    early_keys: list[str] = field(default_factory=list)
    """Keys pressed before the voice session was ready (answer, media setup): given to it then."""


class _AriTicker:
    """An ARI call on the shared 20 ms pacer: one RTP packet of the bot's audio per tick."""

    def __init__(self, app: "AriApp", call: AriCall):
        self.app = app
        self.call = call
        self.call_id = call.channel_id

    def tick(self, now: float) -> None:
        call = self.call
        if not call.ready or call.transport is None or call.remote is None:
            self.app.pacer.discard(self)
            return
        if call.session.ended.is_set():
            self.end(getattr(call.session, "end_reason", "") or "completed")
            return
        call.transport.sendto(call.rtp.packet(ulaw_encode(call.session.pull_frame())), call.remote)

    def end(self, reason: str) -> None:
        self.app.pacer.discard(self)
        self.call.ready = False
        self.app.spawn(self.app.end_call(self.call, reason))


class AriCallControl:
    """CallControl for an ARI call: variables, then ``continue`` into the agents' context."""

    def __init__(self, app: "AriApp", call: AriCall):
        self.app = app
        self.call = call

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        rest, cid = self.app.rest, self.call.channel_id
        try:
            for name, value in (("__VOICEGW_CONVERSATION", conversation_id), ("VOICEGW_QUEUE", agent_extension(action)),
                                ("VOICEGW_SKILLS", ",".join(action.skills)), ("VOICEGW_LANGUAGE", action.language),
                                ("VOICEGW_STATUS", "transferred")):
                await rest.request("POST", f"/channels/{cid}/variable", variable=name, value=value)
            await rest.request("POST", f"/channels/{cid}/continue", context=self.app.settings.ami.agent_context,
                               extension=agent_extension(action), priority=1)
        except (AriError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("ARI call %s: transfer failed: %s", cid, exc)
            return False
        self.call.transferred = True
        return True

    async def hangup(self, reason: str) -> None:
        self.call.ready = False
        self.app.spawn(self.app.end_call(self.call, reason))


class AriApp:
    """The ``ari.app`` Stasis application: one voice session per channel that enters it."""

    def __init__(self, settings: Settings, pipeline: Any, *, initial_backoff: float = 1.0):
        self.settings = settings
        self.cfg = settings.ari
        self.pipeline = pipeline
        self.rest = AriRest(self.cfg.url, self.cfg.username, self.cfg.password)
        self.calls: dict[str, AriCall] = {}
        self.media_channels: set[str] = set()
        self.initial_backoff = initial_backoff
        self.connected = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self.pacer = MediaPacer("ARI")
        self.cap = SessionCap("ari", self.cfg.max_sessions)

    def health(self) -> ChannelHealth:
        """For ``/healthz``: the event socket is up (else no call reaches the Stasis app)."""
        if self.connected.is_set():
            return ChannelHealth("ari", True, f"events from {self.cfg.url} (app {self.cfg.app}), {len(self.calls)} calls")
        return ChannelHealth("ari", False, f"no event socket to {self.cfg.url} (retrying)")

    def register_metrics(self, metrics: Any) -> None:
        """``voicegw_sessions_refused_total{server="ari"}`` on ``/metrics``."""
        self.cap.register_metrics(metrics)

    async def start(self) -> "AriApp":
        loop = asyncio.get_running_loop()
        self._runner = loop.create_task(self._events_forever(), name="ari-events")
        return self

    async def close(self) -> None:
        """Stop listening, end every call (its channel hung up), close the REST session."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        await self.pacer.close()
        for call in list(self.calls.values()):
            self.spawn(self.end_call(call, "shutdown"))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        await self.rest.close()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _events_forever(self) -> None:
        backoff = self.initial_backoff
        url = self.rest.base + "/events"
        while True:
            try:
                async with self.rest.session.ws_connect(url, params={"app": self.cfg.app, "subscribeAll": "false"},
                                                        max_msg_size=MAX_EVENT_BYTES, heartbeat=30) as ws:
                    log.info("ARI connected to %s (app %s)", self.cfg.url, self.cfg.app)
                    self.connected.set()
                    backoff = self.initial_backoff
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            try:
                                await self.handle_event(json.loads(msg.data))
                            except ValueError:
                                log.warning("ARI: event is not JSON: %r", msg.data[:80])
                        elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                            break
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                log.warning("ARI events from %s unavailable (%s); retrying in %.1f s", self.cfg.url, exc, backoff)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def handle_event(self, event: dict[str, Any]) -> None:
        """One ARI event (also called directly by tests)."""
        kind = event.get("type")
        channel = event.get("channel") or {}
        cid = channel.get("id", "")
        if kind == "StasisStart":
            if cid in self.media_channels or str(channel.get("name", "")).startswith("UnicastRTP/"):
                return
            if cid in self.calls:
                return
            if not self.cap.admit():
                log.warning("ARI call %s refused: %d calls in progress (ari.max_sessions); back to the dialplan",
                            cid, self.cap.active)
                self.spawn(self._refuse(cid))
                return
            call = AriCall(cid, caller_id=(channel.get("caller") or {}).get("number", ""),
                           dialed=(channel.get("dialplan") or {}).get("exten", ""))
            self.calls[cid] = call
            self.spawn(self._start_call(call))
        elif kind == "ChannelDtmfReceived" and cid in self.calls:
            call = self.calls[cid]
            if call.session is not None and call.ready:
                call.session.push_dtmf(str(event.get("digit", "")))
            elif len(call.early_keys) < MAX_EARLY_KEYS:
                call.early_keys.append(str(event.get("digit", "")))
        elif kind in ("StasisEnd", "ChannelDestroyed") and cid in self.calls:
            self.spawn(self.end_call(self.calls[cid], "hangup"))

    async def _start_call(self, call: AriCall) -> None:
        rest, cid = self.rest, call.channel_id
        loop = asyncio.get_running_loop()
        try:
            await rest.request("POST", f"/channels/{cid}/answer")
            call.transport, _ = await loop.create_datagram_endpoint(lambda: _Media(call),
                                                                    local_addr=(self.cfg.media_host, 0))
            port = call.transport.get_extra_info("sockname")[1]
            call.media_id = f"{cid}-media"
            self.media_channels.add(call.media_id)
            media = await rest.request("POST", "/channels/externalMedia", app=self.cfg.app,
                                       external_host=f"{self.cfg.media_host}:{port}", format="ulaw",
                                       channelId=call.media_id)
            variables = media.get("channelvars", {})
            call.remote = (variables.get("UNICASTRTP_LOCAL_ADDRESS", "127.0.0.1"),
                           int(variables["UNICASTRTP_LOCAL_PORT"]))
            bridge = await rest.request("POST", "/bridges", type="mixing", bridgeId=f"{cid}-bridge")
            call.bridge_id = bridge["id"]
            await rest.request("POST", f"/bridges/{call.bridge_id}/addChannel", channel=f"{cid},{call.media_id}")
            call.session = self.pipeline.session(call_id=cid, sample_rate=8000, caller_id=call.caller_id,
                                                 dialed=call.dialed, control=AriCallControl(self, call))
            await call.session.start()
        except (AriError, aiohttp.ClientError, asyncio.TimeoutError, OSError, KeyError) as exc:
            log.error("ARI call %s could not start: %s", cid, exc)
            await self.end_call(call, "error")
            return
        if not call.ended:
            call.ready = True
            keys, call.early_keys = call.early_keys, []
            for key in keys:  # pressed during the greeting's setup: type-ahead, in order
                call.session.push_dtmf(key)
            self.pacer.add(_AriTicker(self, call))
            log.info("ARI call %s started (caller %s, media %s:%d)", cid, call.caller_id or "unknown", *call.remote)

    async def _refuse(self, cid: str) -> None:
        """Tell the dialplan the gateway is busy and hand the channel back (else hang it up)."""
        rest = self.rest
        try:
            await rest.request("POST", f"/channels/{cid}/variable", variable="VOICEGW_STATUS", value="busy")
            await rest.request("POST", f"/channels/{cid}/continue")
            return
        except (AriError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("ARI call %s: could not hand the refused call back to the dialplan (%s); hanging up", cid, exc)
        try:
            await rest.request("DELETE", f"/channels/{cid}", reason="congestion")
        except (AriError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("ARI call %s: could not hang up the refused call: %s", cid, exc)

    async def _hand_back(self, call: AriCall, reason: str) -> bool:
        """The gateway failed this call: back to the dialplan with ``VOICEGW_STATUS=error`` (the
        shipped dialplan sends it to the agents) rather than a hang-up. False when that fails."""
        cid = call.channel_id
        try:
            await self.rest.request("POST", f"/channels/{cid}/variable", variable="VOICEGW_REASON",
                                    value=f"gateway-{reason}")
            await self.rest.request("POST", f"/channels/{cid}/variable", variable="VOICEGW_STATUS", value="error")
            await self.rest.request("POST", f"/channels/{cid}/continue")
        except (AriError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("ARI call %s: could not hand the failed call back to the dialplan (%s)", cid, exc)
            return False
        return True

    async def end_call(self, call: AriCall, reason: str) -> None:
        """Stop the session, tear down the media channel and bridge, hang up unless transferred."""
        if call.ended:
            return
        call.ended = True
        self.cap.release()
        call.ready = False
        self.calls.pop(call.channel_id, None)
        if call.transport is not None:
            call.transport.close()
        if call.session is not None:
            try:
                await call.session.stop(reason="transferred" if call.transferred else reason)
            except Exception:  # the call is over either way
                log.exception("ARI call %s: session stop failed", call.channel_id)
        cleanup = [f"/channels/{call.media_id}"] if call.media_id else []
        if call.bridge_id:
            cleanup.append(f"/bridges/{call.bridge_id}")
        handed_back = reason in FAILED_ENDS and not call.transferred and await self._hand_back(call, reason)
        if reason != "hangup" and not call.transferred and not handed_back:
            cleanup.insert(0, f"/channels/{call.channel_id}")
        for path in cleanup:
            try:
                await self.rest.request("DELETE", path)
            except (AriError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.debug("ARI call %s: DELETE %s: %s", call.channel_id, path, exc)
        self.media_channels.discard(call.media_id)
        log.info("ARI call %s ended: %s", call.channel_id, "transferred" if call.transferred else reason)
