"""ARI (Asterisk REST Interface) Stasis app with externalMedia, for teams that prefer ARI.

Dialplan: ``exten => 702,1,Stasis(voicegw)``. For each channel entering the app the gateway
answers it, opens a UDP port on ``ari.media_host``, creates an externalMedia channel
(``UnicastRTP``, u-law, 20 ms) aimed at that port, bridges both (mixing bridge) and runs a
voice session: RTP from Asterisk (PT 0, 160-byte payloads; its timestamps start at 160) is
decoded into ``push_audio``; every 20 ms, on one shared drift-free tick, ``pull_frame`` goes
back as RTP to the address Asterisk gives in ``UNICASTRTP_LOCAL_ADDRESS``/``_PORT``.
``ChannelDtmfReceived`` events become ``push_dtmf``; both go through the call's media leg
(:mod:`media_leg`: held until the session has started, flood limit). A transfer sets the
``VOICEGW_*`` variables and sends the channel back to the dialplan (``continue`` into
``ami.agent_context``, extension = queue). externalMedia needs ``chan_rtp.so`` (without it
Asterisk answers HTTP 500). ``AriCall`` is the glue: its media leg's wire.

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
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp

from gateway.config import Settings
from gateway.core.actions import Transfer
from gateway.health import ChannelHealth
from gateway.limits import SessionCap
from gateway.telephony.asterisk_queues import queue_extension
from gateway.telephony.calls import FAILED_ENDS
from gateway.telephony.media_leg import CallTasks, LegEnd, LegState, MediaLeg
from gateway.telephony.media_pacer import MediaPacer
from gateway.voice.audio import ulaw_decode, ulaw_encode
from gateway.voice.port import VoiceSessions

log = logging.getLogger(__name__)

RTP_HEADER = 12
PT_PCMU = 0
MAX_EVENT_BYTES = 1 << 20
REQUEST_TIMEOUT = 5.0
STOP_WAIT_SECONDS = 35.0
"""How long a teardown waits for the call's session to stop before deleting its channels."""


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
        if packet.payload_type == PT_PCMU:
            call.leg.caller_audio(ulaw_decode(packet.payload))


class AriCall:
    """One channel in the Stasis app: externalMedia RTP and REST call control, its media leg's wire."""

    def __init__(self, app: "AriApp", channel_id: str, *, caller_id: str = "", dialed: str = "",
                 media_id: str = "", bridge_id: str = "") -> None:
        self.app = app
        self.channel_id = channel_id
        self.caller_id = caller_id
        self.dialed = dialed
        self.media_id = media_id
        self.bridge_id = bridge_id
        self.remote: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.rtp = RtpPacketizer()
        self.transferred = False
        self.teardown: asyncio.Task[None] | None = None
        self.leg = MediaLeg(self, kind="ARI", call_id=channel_id, pacer=app.pacer, spawn=app.tasks.spawn)

    @property
    def ready(self) -> bool:
        """The session has started: audio flows both ways."""
        return self.leg.live

    # --- the leg's wire (gateway.telephony.media_leg.LegWire) ----------------------------------
    def play(self, pull: Callable[[], bytes]) -> None:
        pcm = pull()
        if self.transport is not None and self.remote is not None and not self.transport.is_closing():
            self.transport.sendto(self.rtp.packet(ulaw_encode(pcm)), self.remote)

    def clear(self) -> None:
        """Nothing to clear: RTP goes out in real time."""

    def opened(self, conversation_id: str) -> None:
        """Nothing to tag: a transfer writes the conversation id to the channel."""

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        """The ``VOICEGW_*`` variables, then ``continue`` into the agents' context."""
        app, cid = self.app, self.channel_id
        try:
            for name, value in (("__VOICEGW_CONVERSATION", conversation_id), ("VOICEGW_QUEUE", queue_extension(action.queue)),
                                ("VOICEGW_SKILLS", ",".join(action.skills)), ("VOICEGW_LANGUAGE", action.language),
                                ("VOICEGW_STATUS", "transferred")):
                await app.rest.request("POST", f"/channels/{cid}/variable", variable=name, value=value)
            await app.rest.request("POST", f"/channels/{cid}/continue", context=app.settings.ami.agent_context,
                                   extension=queue_extension(action.queue), priority=1)
        except (AriError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("ARI call %s: transfer failed: %s", cid, exc)
            return False
        self.transferred = True
        return True

    def hanging_up(self) -> float:
        return 0.0

    def played_out(self) -> bool:
        return True

    def close(self, end: LegEnd) -> None:
        """Tear the call down once: media channel and bridge, and the caller's channel unless
        it was transferred, handed back to the dialplan, or already gone."""
        if self.teardown is None:
            self.teardown = self.app.tasks.spawn(self.app.teardown(self, end))


class AriApp:
    """The ``ari.app`` Stasis application: one voice session per channel that enters it."""

    def __init__(self, settings: Settings, pipeline: VoiceSessions, *, initial_backoff: float = 1.0):
        self.settings = settings
        self.cfg = settings.ari
        self.pipeline = pipeline
        self.rest = AriRest(self.cfg.url, self.cfg.username, self.cfg.password)
        self.calls: dict[str, AriCall] = {}
        self.media_channels: set[str] = set()
        self.initial_backoff = initial_backoff
        self.connected = asyncio.Event()
        self.tasks = CallTasks()
        self._runner: asyncio.Task[None] | None = None
        self.pacer = MediaPacer("ARI")
        self.cap = SessionCap("ari", self.cfg.max_sessions, within=pipeline.calls)

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
        for call in list(self.calls.values()):
            call.leg.close("shutdown")
        await self.pacer.close()
        await self.tasks.wait()
        await self.rest.close()

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
                log.warning("ARI call %s refused: %s; back to the dialplan", cid, self.cap.refusal())
                self.tasks.spawn(self._refuse(cid))
                return
            call = AriCall(self, cid, caller_id=(channel.get("caller") or {}).get("number", ""),
                           dialed=(channel.get("dialplan") or {}).get("exten", ""))
            self.calls[cid] = call
            self.tasks.spawn(self._start_call(call))
        elif kind == "ChannelDtmfReceived" and cid in self.calls:
            self.calls[cid].leg.caller_key(str(event.get("digit", "")))
        elif kind in ("StasisEnd", "ChannelDestroyed") and cid in self.calls:
            self.calls[cid].leg.close("hangup")

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
            if call.leg.state is not LegState.NEW:
                return  # the caller left while the media was set up
            session = self.pipeline.session(call_id=cid, sample_rate=8000, caller_id=call.caller_id,
                                            dialed=call.dialed, admitted=True)  # slot taken by self.cap
        except (AriError, aiohttp.ClientError, asyncio.TimeoutError, OSError, KeyError) as exc:
            log.error("ARI call %s could not start: %s", cid, exc)
            await self.end_call(call, "error")
            return
        call.leg.begin(session)  # keys pressed during the setup are given to it in order
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
        """End ``call`` (its session stops) and wait until it is torn down."""
        call.leg.close(reason)
        if call.teardown is not None:
            await asyncio.shield(call.teardown)

    async def teardown(self, call: AriCall, end: LegEnd) -> None:
        """Once per call, after its session: the media channel and bridge go, and the caller's
        channel is hung up unless it was transferred, handed back to the dialplan, or gone."""
        self.cap.release()
        self.calls.pop(call.channel_id, None)
        if call.transport is not None:
            call.transport.close()
        try:
            await asyncio.wait_for(call.leg.stopped.wait(), STOP_WAIT_SECONDS)
        except asyncio.TimeoutError:
            log.warning("ARI call %s: the session did not stop in time", call.channel_id)
        reason = "transferred" if call.transferred else end.reason
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
        log.info("ARI call %s torn down: %s", call.channel_id, reason)
