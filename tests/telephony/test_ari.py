"""ARI: RTP codec on Asterisk's externalMedia stream, REST on recorded responses, the Stasis app."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from gateway.config import load_settings
from gateway.core.actions import Transfer
from gateway.telephony.ari import AriApp, AriError, AriRest, RtpPacketizer, parse_rtp
from gateway.voice.audio import ulaw_decode
from tests.telephony import fixtures
from tests.telephony.fakes import FakePipeline


def recorded_rtp() -> list[tuple[float, bytes]]:
    return [(c.t_ms, c.data) for c in fixtures.load("ari/ari_c_external_media_rtp_from_asterisk") if c.data]


def test_rtp_from_asterisks_external_media():
    packets = recorded_rtp()
    parsed = [parse_rtp(d) for _, d in packets]
    assert len(parsed) == 25 and all(len(d) == 172 for _, d in packets)
    assert {p.payload_type for p in parsed} == {0} and all(len(p.payload) == 160 for p in parsed)
    assert parsed[0].timestamp == 160 and parsed[0].sequence == 55716
    assert [p.timestamp for p in parsed] == [160 + 160 * i for i in range(25)]
    assert [p.sequence for p in parsed] == [(55716 + i) & 0xFFFF for i in range(25)]
    gaps = [b[0] - a[0] for a, b in zip(packets, packets[1:])]
    assert 18 < sum(gaps) / len(gaps) < 22


def test_rtp_packetizer_roundtrip_and_garbage():
    rtp = RtpPacketizer()
    first, second = parse_rtp(rtp.packet(b"\xff" * 160)), parse_rtp(rtp.packet(b"\x7f" * 160))
    assert first.marker and not second.marker and first.payload_type == 0
    assert second.sequence == (first.sequence + 1) & 0xFFFF and second.timestamp == first.timestamp + 160
    for bad in (b"", b"\x80" * 5, b"\x00" * 20):
        with pytest.raises(ValueError):
            parse_rtp(bad)


class RawReplayHttp:
    """Answers each HTTP request with the next recorded response, byte for byte."""

    def __init__(self, chunks):
        self.responses = [c.data for c in chunks if c.from_asterisk and c.data]
        self.requests: list[bytes] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _client(self, reader, writer):
        try:
            while self.responses:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                writer.write(self.responses.pop(0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def close(self):
        self.server.close()
        await self.server.wait_closed()


async def test_rest_against_recorded_responses():
    fake = RawReplayHttp(fixtures.load("ari/ari_a_asterisk_info"))
    port = await fake.start()
    good = AriRest(f"http://127.0.0.1:{port}", "gateway", "arisecret")
    bad = AriRest(f"http://127.0.0.1:{port}", "gateway", "wrong")
    try:
        info = await good.request("GET", "/asterisk/info")
        assert info["system"]["version"] == "22.10.1"
        with pytest.raises(AriError, match="401: Authentication required"):
            await bad.request("GET", "/asterisk/info")
    finally:
        await good.close()
        await bad.close()
        await fake.close()
    assert fake.requests[0].startswith(b"GET /ari/asterisk/info HTTP/1.1\r\n")
    assert b"Authorization: Basic Z2F0ZXdheTphcmlzZWNyZXQ=" in fake.requests[0]


def recorded_bodies() -> dict[str, dict]:
    """The JSON bodies Asterisk answered in the recorded REST session, by request line."""
    out, last = {}, ""
    for c in fixtures.load("ari/ari_c_rest_external_media_session"):
        if not c.data:
            continue
        text = c.data.decode()
        if not c.from_asterisk:
            last = text.split(" ", 2)[1].split("?")[0]
        elif "\r\n\r\n{" in text:
            out[last] = json.loads(text.split("\r\n\r\n", 1)[1])
    return out


def recorded_events() -> list[dict]:
    events = []
    for c in fixtures.load("ari/ari_b_stasis_websocket"):
        for frame in c.meta.get("ws_frames", []):
            if frame.get("opcode") == 1:
                events.append(json.loads(frame["payload_text"]))
    return events


class AsteriskRtp(asyncio.DatagramProtocol):
    def __init__(self):
        self.received: list[tuple[float, bytes]] = []

    def datagram_received(self, data, addr):
        self.received.append((asyncio.get_running_loop().time(), data))


async def test_stasis_app_bridges_external_media_to_a_voice_session(tmp_path):
    loop = asyncio.get_running_loop()
    asterisk_rtp = AsteriskRtp()
    rtp_transport, _ = await loop.create_datagram_endpoint(lambda: asterisk_rtp, local_addr=("127.0.0.1", 0))
    rtp_port = rtp_transport.get_extra_info("sockname")[1]
    bodies = recorded_bodies()
    requests: list[tuple[str, str, dict]] = []
    events: asyncio.Queue = asyncio.Queue()

    async def rest(request: web.Request) -> web.Response:
        requests.append((request.method, request.path, dict(request.query)))
        if request.path == "/ari/channels/externalMedia":
            body = json.loads(json.dumps(bodies["/ari/channels/externalMedia"]))
            body["channelvars"]["UNICASTRTP_LOCAL_PORT"] = str(rtp_port)  # where our fake Asterisk listens
            return web.json_response(body)
        if request.path == "/ari/bridges":
            return web.json_response(bodies["/ari/bridges"])
        return web.Response(status=204)

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        while not sock.closed:
            try:
                event = await asyncio.wait_for(events.get(), 0.2)
            except asyncio.TimeoutError:
                continue
            await sock.send_str(json.dumps(event, indent=2))
        return sock

    app = web.Application()
    app.router.add_get("/ari/events", ws)
    app.router.add_route("*", "/ari/{tail:.*}", rest)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "ari": {
        "enabled": True, "url": f"http://127.0.0.1:{port}", "password": "arisecret", "app": "gwfix"},
        "ami": {"agent_context": "voicegw-agents"}})
    pipeline = FakePipeline()
    ari = await AriApp(settings, pipeline).start()
    try:
        await asyncio.wait_for(ari.connected.wait(), 10)
        for event in recorded_events():
            if event["type"] == "StasisStart":
                await events.put(event)  # the UnicastRTP one is ignored, the Local one is the call
        # a key pressed while the call is being set up (answer, externalMedia) is kept for the session
        await events.put({"type": "ChannelDtmfReceived", "digit": "4", "channel": {"id": "gwfix-local-1"}})
        await asyncio.wait_for(pipeline.created.wait(), 10)
        session = pipeline.sessions[0]
        assert session.call_id == "gwfix-local-1" and session.kwargs["caller_id"] == "5550300"
        for _ in range(100):
            if ari.calls["gwfix-local-1"].ready:
                break
            await asyncio.sleep(0.02)
        media = next(q for m, p, q in requests if p == "/ari/channels/externalMedia")
        assert media["format"] == "ulaw" and media["app"] == "gwfix"
        our_port = int(media["external_host"].rsplit(":", 1)[1])
        payloads = []
        for _, datagram in recorded_rtp():
            rtp_transport.sendto(datagram, ("127.0.0.1", our_port))
            payloads.append(parse_rtp(datagram).payload)
            await asyncio.sleep(0.005)
        for _ in range(200):
            if len(session.audio) >= 25 * 320 and len(asterisk_rtp.received) >= 30:
                break
            await asyncio.sleep(0.02)
        assert bytes(session.audio) == b"".join(ulaw_decode(p) for p in payloads)
        await events.put({"type": "ChannelDtmfReceived", "digit": "7", "channel": {"id": "gwfix-local-1"}})
        for _ in range(100):
            if "7" in session.dtmf:
                break
            await asyncio.sleep(0.02)
        assert session.dtmf == ["4", "7"]
        sent = [parse_rtp(d) for _, d in asterisk_rtp.received]
        assert {p.payload_type for p in sent} == {0} and {len(p.payload) for p in sent} == {160}
        times = [t for t, _ in asterisk_rtp.received]
        assert len(times) <= (times[-1] - times[0]) / 0.02 * 1.3 + 5  # paced, not a burst
        ok = await session.request_transfer("conv-1", Transfer(queue="billing", language="fr"))
        assert ok
        session.hang_up("transferred")
        await events.put({"type": "StasisEnd", "channel": {"id": "gwfix-local-1"}})
        await asyncio.wait_for(session.stopped_event.wait(), 10)
    finally:
        await ari.close()
        await runner.cleanup()
        rtp_transport.close()
    paths = [(m, p) for m, p, _ in requests]
    assert paths[:4] == [("POST", "/ari/channels/gwfix-local-1/answer"), ("POST", "/ari/channels/externalMedia"),
                         ("POST", "/ari/bridges"), ("POST", "/ari/bridges/gwfix-bridge-1/addChannel")]
    variables = {q["variable"]: q["value"] for m, p, q in requests if p.endswith("/variable")}
    assert variables["__VOICEGW_CONVERSATION"] == "conv-1" and variables["VOICEGW_LANGUAGE"] == "fr"
    assert variables["VOICEGW_STATUS"] == "transferred"
    cont = next(q for m, p, q in requests if p == "/ari/channels/gwfix-local-1/continue")
    assert cont == {"context": "voicegw-agents", "extension": "billing", "priority": "1"}
    deletes = [p for m, p, _ in requests if m == "DELETE"]
    assert "/ari/channels/gwfix-local-1-media" in deletes and "/ari/bridges/gwfix-bridge-1" in deletes
    assert "/ari/channels/gwfix-local-1" not in deletes  # transferred: the caller stays up
    assert session.stopped == "transferred"


async def test_one_failing_ari_call_does_not_silence_the_others(tmp_path):
    from gateway.telephony.ari import AriCall
    from tests.telephony.fakes import FakeSession

    class Session(FakeSession):
        def __init__(self, call_id: str, broken: bool):
            super().__init__(call_id, 8000)
            self.broken = broken

        def pull_frame(self) -> bytes:
            if self.broken:
                raise RuntimeError("synthesis exploded")
            return super().pull_frame()

    received: list[bytes] = []

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            received.append(data)

    loop = asyncio.get_running_loop()
    sink, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    remote = sink.get_extra_info("sockname")
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path)})
    app = AriApp(settings, FakePipeline())
    calls, sessions = [], []
    for name, broken in (("good", False), ("bad", True)):
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        call = AriCall(app, name)
        call.transport, call.remote = transport, remote
        app.calls[name] = call
        app.cap.admit()
        session = Session(name, broken)
        call.leg.begin(session)
        calls.append(call)
        sessions.append(session)
    await asyncio.sleep(0.3)
    good, bad = calls
    assert bad.ready is False and good.ready is True
    assert sessions[1].stopped == "error" and sessions[0].stopped is None
    assert len(received) >= 5  # the good call keeps getting its 20 ms packets
    await app.close()
    sink.close()


async def test_a_call_the_gateway_failed_goes_back_to_the_dialplan_not_to_a_hangup(tmp_path):
    """A session that ended in an error (or a gateway shutdown) is continued into the dialplan with
    VOICEGW_STATUS=error, which the shipped dialplan sends to the agents."""
    from gateway.telephony.ari import AriCall

    requests: list[tuple[str, str, dict]] = []

    async def rest(request: web.Request) -> web.Response:
        requests.append((request.method, request.path, dict(request.query)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/ari/{tail:.*}", rest)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "ari": {
        "enabled": True, "url": f"http://127.0.0.1:{port}", "password": "arisecret"}})
    ari = AriApp(settings, FakePipeline())
    try:
        ari.cap.admit()
        failed = AriCall(ari, "chan-1", media_id="chan-1-media", bridge_id="chan-1-bridge")
        await ari.end_call(failed, "error")
        ari.cap.admit()
        finished = AriCall(ari, "chan-2", media_id="chan-2-media", bridge_id="chan-2-bridge")
        await ari.end_call(finished, "caller said goodbye")
    finally:
        await ari.close()
        await runner.cleanup()
    first = [(m, p, q) for m, p, q in requests if "chan-1" in p]
    assert ("POST", "/ari/channels/chan-1/variable", {"variable": "VOICEGW_STATUS", "value": "error"}) in first
    assert ("POST", "/ari/channels/chan-1/variable", {"variable": "VOICEGW_REASON", "value": "gateway-error"}) in first
    assert ("POST", "/ari/channels/chan-1/continue", {}) in first
    assert ("DELETE", "/ari/channels/chan-1", {}) not in first
    assert ("DELETE", "/ari/channels/chan-2", {}) in requests  # a journey that ended hangs up as before
