"""AudioSocket server over real TCP sockets, fed the bytes a real Asterisk sent."""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import uuid

import pytest

from gateway.config import load_settings
from gateway.telephony import audiosocket as asock
from gateway.telephony.audiosocket_server import AudioSocketServer
from gateway.telephony.calls import CallRecord, CallRegistry
from tests.telephony import fixtures
from tests.telephony.fakes import FakePipeline
from tests.telephony.helpers import until

HOST = "127.0.0.1"


def make_settings(tmp_path, **audiosocket):
    cfg = {"host": HOST, "port": 0, "read_timeout_seconds": 5.0, **audiosocket}
    return load_settings(environ={}, overrides={"data_dir": str(tmp_path), "audiosocket": cfg})


@pytest.fixture
async def server_factory(tmp_path):
    servers = []

    async def make(pipeline=None, calls=None, **cfg):
        srv = AudioSocketServer(make_settings(tmp_path, **cfg), pipeline or FakePipeline(), calls=calls)
        await srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.close()


async def drain_until_eof(reader, timeout=10.0) -> bytes:
    out = bytearray()
    while True:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            return bytes(out)
        out += data


@pytest.mark.parametrize("split", [None, 1, 100, 4096])
async def test_as_a_call_gives_a_session_with_exactly_the_audio(server_factory, split):
    pipeline = FakePipeline()
    srv = await server_factory(pipeline)
    chunks = fixtures.load("audiosocket/as_a_app_hello_world")
    expected_audio = fixtures.raw_path("audiosocket/as_a_app_hello_world.from_asterisk.bin").read_bytes()
    uuid_msg = [m for m in fixtures.annotated_messages(chunks) if m["name"] == "uuid"][0]
    reader, writer = await fixtures.replay_to_server(HOST, srv.port, chunks, split=split)
    await until(lambda: pipeline.sessions and pipeline.sessions[0].stopped)
    session = pipeline.sessions[0]
    assert session.call_id == uuid_msg["uuid"]
    assert session.kwargs["conversation_id"] == uuid_msg["uuid"]  # offered to the core as is
    assert session.sample_rate == 8000 and session.started
    payloads = b"".join(expected_audio[i + 3:i + 3 + 320] for i in range(19, len(expected_audio), 323))
    assert bytes(session.audio) == payloads and len(session.audio) == 22424
    assert session.stopped == "hangup"
    writer.close()


async def test_merged_reads_uuid_and_audio_in_one_write(server_factory):
    pipeline = FakePipeline()
    srv = await server_factory(pipeline)
    data = fixtures.raw_path("audiosocket/as_a_app_hello_world.from_asterisk.bin").read_bytes()
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(data)
    writer.write_eof()
    await until(lambda: pipeline.sessions and pipeline.sessions[0].stopped)
    assert len(pipeline.sessions[0].audio) == 22424
    writer.close()


async def test_slin16_capture_gives_a_16k_session(server_factory):
    pipeline = FakePipeline()
    srv = await server_factory(pipeline)
    chunks = fixtures.load("audiosocket/as_b3_originate_audiosocket_channel_slin16")
    reader, writer = await fixtures.replay_to_server(HOST, srv.port, chunks, close=False)
    # the gateway answers in the caller's own kind, 0x12, 640-byte frames
    head = await asyncio.wait_for(reader.readexactly(3), 5)
    assert head == b"\x12\x02\x80"
    writer.write_eof()
    await until(lambda: pipeline.sessions and pipeline.sessions[0].stopped)
    session = pipeline.sessions[0]
    assert session.sample_rate == 16000
    assert len(session.audio) == sum(m["len"] for m in fixtures.annotated_messages(chunks) if m["name"] == "slin16")
    writer.close()


async def test_dtmf_digits_arrive_in_order_with_recorded_timing(server_factory):
    pipeline = FakePipeline()
    srv = await server_factory(pipeline)
    chunks = fixtures.load("audiosocket/as_c1_dtmf_sip_rfc4733_app")
    reader, writer = await fixtures.replay_to_server(HOST, srv.port, chunks, speed=4.0)
    await until(lambda: pipeline.sessions and pipeline.sessions[0].stopped)
    assert pipeline.sessions[0].dtmf == list("123#*0")
    writer.close()


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames, i = [], 0
    while i + 3 <= len(data):
        kind, length = struct.unpack_from(">BH", data, i)
        frames.append((kind, data[i + 3:i + 3 + length]))
        i += 3 + length
    return frames


async def test_outgoing_audio_is_paced_at_20ms_and_silence_keeps_flowing(server_factory):
    tone = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 1000 * n / 8000))) for n in range(4000))
    pipeline = FakePipeline(bot_audio=tone)  # 0.5 s of tone, then silence
    srv = await server_factory(pipeline)
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(asock.encode_uuid(uuid.uuid4()) + asock.encode_audio(bytes(320)))
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    buf = b""
    while len(arrivals) < 60:
        head = await asyncio.wait_for(reader.readexactly(3), 5)
        kind, length = struct.unpack(">BH", head)
        payload = await reader.readexactly(length)
        assert kind == 0x10 and length == 320
        arrivals.append(loop.time())
        buf += payload
    assert buf[:8000] == tone  # the tone first, bit-exact
    assert buf[8000:] == bytes(len(buf) - 8000)  # then silence, never a gap
    span = arrivals[-1] - arrivals[0]
    # 59 intervals of 20 ms = 1.18 s; generous bounds for a loaded machine, but no burst
    assert 0.9 < span < 4.0, span
    assert srv.pacing.frames >= 60
    writer.close()


async def test_session_end_sends_hangup_then_closes(server_factory):
    pipeline = FakePipeline()
    srv = await server_factory(pipeline)
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(asock.encode_uuid(uuid.uuid4()) + asock.encode_audio(bytes(320)))
    await until(lambda: pipeline.sessions)
    pipeline.sessions[0].hang_up()
    data = await drain_until_eof(reader)
    frames = parse_frames(data)
    assert frames[-1] == (0x00, b"")
    assert all(k == 0x10 for k, _ in frames[:-1])
    await until(lambda: pipeline.sessions[0].stopped)
    writer.close()


async def test_call_started_by_the_voicebot_route_continues_its_conversation(server_factory):
    calls = CallRegistry()
    conv = str(uuid.uuid4())
    calls.add(CallRecord(call_uuid=conv, conversation_id=conv, channel="PJSIP/alice-00000001",
                         caller_id="5551234", dialed="700"))
    pipeline = FakePipeline()
    srv = await server_factory(pipeline, calls=calls)
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(asock.encode_uuid(conv) + asock.encode_audio(bytes(320)))
    writer.write_eof()
    await until(lambda: pipeline.sessions and pipeline.sessions[0].stopped)
    kw = pipeline.sessions[0].kwargs
    assert kw["conversation_id"] == conv and kw["caller_id"] == "5551234" and kw["dialed"] == "700"
    writer.close()


async def test_route_registered_call_learns_the_conversation_the_session_opened(server_factory):
    calls = CallRegistry()
    call_uuid = str(uuid.uuid4())
    record = calls.add(CallRecord(call_uuid=call_uuid, channel="PJSIP/bob-00000002", caller_id="5559876"))
    pipeline = FakePipeline()
    srv = await server_factory(pipeline, calls=calls)
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(asock.encode_uuid(call_uuid) + asock.encode_audio(bytes(320)))
    writer.write_eof()
    await until(lambda: pipeline.sessions and pipeline.sessions[0].stopped)
    session = pipeline.sessions[0]
    assert session.kwargs["conversation_id"] == "" and session.kwargs["caller_id"] == "5559876"
    assert record.conversation_id == session.conversation_id
    assert calls.by_conversation(session.conversation_id) is record
    writer.close()


async def test_bad_connections_end_alone_while_a_good_call_runs(server_factory, caplog):
    caplog.set_level(logging.INFO, logger="gateway.telephony.audiosocket_server")
    pipeline = FakePipeline()
    srv = await server_factory(pipeline, read_timeout_seconds=1.0, max_payload_bytes=640)
    good_id = uuid.uuid4()
    good_r, good_w = await asyncio.open_connection(HOST, srv.port)
    good_w.write(asock.encode_uuid(good_id))

    async def bad(payload: bytes, close: bool = True) -> bytes:
        r, w = await asyncio.open_connection(HOST, srv.port)
        w.write(payload)
        if close:
            w.write_eof()
        try:
            return await drain_until_eof(r, timeout=10)
        finally:
            w.close()

    async def good_caller():
        for _ in range(100):  # 2 s of audio while the bad peers come and go
            good_w.write(asock.encode_audio(b"\x01\x00" * 160))
            await asyncio.sleep(0.02)

    u = lambda: asock.encode_uuid(uuid.uuid4())  # noqa: E731
    results = await asyncio.gather(
        good_caller(),
        bad(u() + b"\x10\xff\xff" + bytes(100)),             # oversize length
        bad(u() + b"\x42\x00\x01x"),                          # unknown kind
        bad(u() + asock.encode_audio(bytes(320))[:50]),      # truncated frame, then close
        bad(u(), close=False),                               # a peer that stops sending
        bad(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),  # garbage (a TLS hello)
    )
    assert all(isinstance(r, bytes) for r in results[1:])
    good = pipeline.by_call(str(good_id))
    assert good.stopped is None  # still in its call
    assert len(good.audio) == 100 * 320
    text = caplog.text
    assert "exceeds the limit of 640 bytes" in text
    assert "unknown message kind 0x42" in text
    assert "truncated message" in text
    assert "nothing received for 1.0 s" in text
    assert "first message must be the UUID" in text
    good_w.write_eof()
    await until(lambda: good.stopped == "hangup")
    good_w.close()


@pytest.mark.parametrize("name", [
    "as_b_dial_chan_hello_world", "as_b2_originate_audiosocket_channel", "as_c2_dtmf_sip_rfc4733_dial",
    "as_d_server_sends_tone_app", "as_d2_server_sends_burst_sip_caller", "as_e1_server_sends_hangup_app",
    "as_e4_server_closes_tcp_app", "as_e5_server_sends_hangup_dial", "as_g_sip_caller_app_server_sends_tone",
])
async def test_every_recorded_session_gives_its_audio_and_digits(server_factory, name):
    pipeline = FakePipeline()
    srv = await server_factory(pipeline)
    chunks = fixtures.load(f"audiosocket/{name}")
    msgs = fixtures.annotated_messages(chunks)
    # the sessions that ended in a reset (as_e2/e3/e6) are covered by the codec tests; here
    # every capture is replayed with an EOF at its end, as Asterisk's close
    reader, writer = await fixtures.replay_to_server(HOST, srv.port, chunks, close=False)
    writer.write_eof()
    await until(lambda: pipeline.sessions and pipeline.sessions[0].stopped)
    session = pipeline.sessions[0]
    assert session.call_id == msgs[0]["uuid"]
    assert len(session.audio) == sum(m["len"] for m in msgs if m["name"].startswith("slin"))
    assert session.dtmf == [m["digit"] for m in msgs if m["name"] == "dtmf"]
    writer.close()


async def test_silent_channel_never_reaches_asterisks_idle_timeout(server_factory):
    """as_f1: Asterisk sent only the UUID and hung up 2 s later because nothing flowed either
    way. The gateway starts sending 20 ms frames at once, so that timeout cannot fire."""
    pipeline = FakePipeline()
    srv = await server_factory(pipeline)
    chunks = fixtures.load("audiosocket/as_f1_idle_timeout_app")
    reader, writer = await fixtures.replay_to_server(HOST, srv.port, chunks, close=False)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = await asyncio.wait_for(reader.readexactly(323), 2)
    assert first[:3] == b"\x10\x01\x40" and loop.time() - t0 < 1.5
    gaps, last = [], loop.time()
    for _ in range(50):
        await asyncio.wait_for(reader.readexactly(323), 2)
        now = loop.time()
        gaps.append(now - last)
        last = now
    assert max(gaps) < 1.0  # far below the 2 s idle timeout, even on a loaded machine
    writer.write_eof()
    await until(lambda: pipeline.sessions and pipeline.sessions[0].stopped)
    writer.close()


async def test_a_peer_flooding_audio_is_cut_off(server_factory, caplog):
    pipeline = FakePipeline()
    srv = await server_factory(pipeline)
    reader, writer = await asyncio.open_connection(HOST, srv.port)
    writer.write(asock.encode_uuid(uuid.uuid4()) + asock.encode_audio(bytes(320)))
    await until(lambda: pipeline.sessions and pipeline.sessions[0].started)
    await asyncio.sleep(0.1)
    frame = asock.encode_audio(bytes(320))
    try:
        for _ in range(20):  # 20 s of audio as fast as the socket takes it
            writer.write(frame * 50)
            await writer.drain()
    except ConnectionError:
        pass
    await until(lambda: pipeline.sessions[0].stopped == "flood")
    assert len(pipeline.sessions[0].audio) < 8 * 16000  # cut off well before all of it
    assert "faster than real time" in caplog.text
    writer.close()
