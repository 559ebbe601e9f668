"""Calls the gateway places through FreeSWITCH, FreeSWITCH's side played from its documents.

FreeSWITCH cannot run here, so its mod_event_socket is a scripted peer speaking the session in
``protocol_docs/freeswitch/fs_b_originate_over_the_inbound_socket.jsonl``, written by hand from
FreeSWITCH's published documents (auth request, ``+OK accepted``, ``event plain``, ``bgapi``
with the client's Job-UUID, the ``BACKGROUND_JOB`` event whose body is the originate's result,
the answered leg's ``connect`` reply): NOT recorded from FreeSWITCH (see protocol_docs/README.md).

The gateway's side is real: the core (``build_core`` on SQLite in tmp_path) escalates Emma's
reminder to a call, the originate client carries it over a real socket, and the outcome reaches
the conversation as the core's ``CallFailed`` reasons. The slow tests run the whole gateway: the
scripted FreeSWITCH answers the originate by connecting the call to the gateway's outbound socket
server with the callback variable and streaming a synthesized answer (tests/voice/amd_corpus.py)
over mod_audio_stream's WebSocket into the real voice pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import Awaitable, Callable
from urllib.parse import quote

import aiohttp
import pytest

from gateway.app import build_core
from gateway.config import load_settings
from gateway.core.actions import Originate
from gateway.core.events import CallAccepted, CallStarted
from gateway.limits import SessionCap
from gateway.telephony.call_outcomes import freeswitch_outcome
from gateway.telephony.freeswitch_originate import OriginateRefused, originate_command, start_freeswitch_originate
from tests.telephony.fixtures import load_written
from tests.telephony.helpers import until
from tests.telephony.written_peers import esl_commands

pytestmark = pytest.mark.timeout(60)

EMMA, EMMA_ID = "+15556667777", "C005"  # sample CRM: a device pickup reminder, the number on file
OUR_NUMBER = "+15550001111"
WRITTEN = load_written("freeswitch/fs_b_originate_over_the_inbound_socket")


def _written(**where: str) -> str:
    for line in WRITTEN:
        if all(getattr(line, k, None) == v or line.meta.get(k) == v for k, v in where.items()):
            return line.text
    raise KeyError(where)


def background_job(job: str, arg: str, result: str) -> bytes:
    """The documents' BACKGROUND_JOB event carrying ``result`` as its body."""
    body = result.encode()
    inner = (_written(event="BACKGROUND_JOB").replace("{job}", job).replace("{arg}", quote(arg))
             + f"Content-Length: {len(body)}\n\n").encode() + body
    return f"Content-Length: {len(inner)}\nContent-Type: text/event-plain\n\n".encode() + inner


Originated = Callable[[str, str], Awaitable[str]]
"""``async f(command, job) -> result``: what FreeSWITCH does with one originate."""


class ScriptedEventSocket:
    """FreeSWITCH's mod_event_socket (inbound mode) as the written session has it."""

    def __init__(self, password: str = "ClueCon", on_originate: Originated | None = None, result: str = "+OK"):
        self.password = password
        self.on_originate = on_originate
        self.result = result
        self.commands: list[str] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task] = []
        self.server: asyncio.base_events.Server | None = None

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port)
        return self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        greeting = "inbound mode: FreeSWITCH greets every new connection with an auth request"
        writer.write(_written(note=greeting).encode())
        try:
            async for command in esl_commands(reader):
                self.commands.append(command)
                if command.startswith("auth "):
                    ok = command == f"auth {self.password}"
                    writer.write(_written(reply_to="auth ClueCon" if ok else "auth ").encode())
                    if not ok:
                        await writer.drain()
                        writer.close()
                        return
                elif command.startswith("event plain"):
                    writer.write(_written(reply_to="event plain").encode())
                elif command.startswith("bgapi "):
                    job = re.search(r"^Job-UUID: (\S+)$", command, re.M).group(1)
                    writer.write(_written(reply_to="bgapi ").replace("{job}", job).encode())
                    self.tasks.append(asyncio.create_task(self._job(writer, job, command)))
                else:
                    writer.write(b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n")
        except ConnectionError:
            return

    async def _job(self, writer: asyncio.StreamWriter, job: str, command: str) -> None:
        line = command.split("\n")[0]
        result = await self.on_originate(line, job) if self.on_originate else self.result
        if not writer.is_closing():
            writer.write(background_job(job, line[len("bgapi originate "):], result + "\n"))

    def originates(self) -> list[str]:
        return [c for c in self.commands if c.startswith("bgapi originate ")]

    def drop(self) -> None:
        """FreeSWITCH restarts: every event socket connection is cut."""
        for writer in self.writers:
            writer.transport.abort()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.drop()
        if self.server is not None:
            self.server.close()


def settings_for(tmp_path, esl_port: int, **freeswitch):
    return load_settings(environ={}, overrides={
        "data_dir": str(tmp_path), "voice": {"asr": {"workers": 1}},
        "compliance": {"organisation": "Riverside Services"},
        "freeswitch": {"enabled": True, "port": 0, "audio_port": 0, "originate_enabled": True,
                       "esl_port": esl_port, "caller_id_number": OUR_NUMBER, **freeswitch}})


async def reminder_call(core) -> tuple[str, Originate]:
    """Emma's reminder escalated to a call: the core emits ``Originate`` to the number on file."""
    opened = await core.open("sms", customer_id=EMMA_ID, caller_id=EMMA, journey="appointment",
                             event=CallStarted(channel="sms", caller_id=EMMA, outbound=True))
    actions = await core.handle(opened.conversation_id, CallAccepted(channel="outreach"))
    placed = [a for a in actions if isinstance(a, Originate)]
    assert [a.number for a in placed] == [EMMA]
    return opened.conversation_id, placed[0]


async def failures(core, cid: str, count: int = 1, timeout: float = 10.0) -> list[tuple[str, str]]:
    """The conversation's CallFailed (reason, detail), once ``count`` are logged (or the time is up)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        found = [(e.payload["reason"], e.payload["detail"]) for e in await core.store.events(cid)
                 if e.kind == "CallFailed"]
        if len(found) >= count or loop.time() > end:
            return found
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the originate string ----------------------------------------------------------------------
def test_the_originate_command_is_the_documented_bgapi_originate(tmp_path):
    settings = settings_for(tmp_path, 8021)
    line = originate_command(settings, EMMA, "conv-1", "nonce-abc_123", "127.0.0.1:8084")
    assert line == ("bgapi originate {origination_caller_id_number=+15550001111,voicegw_conversation_id=conv-1,"
                    "voicegw_callback=nonce-abc_123,voicegw_number=+15556667777,originate_timeout=30}"
                    "sofia/gateway/carrier/+15556667777 '&socket(127.0.0.1:8084 async full)'")
    other = settings_for(tmp_path, 8021, dial_string="sofia/external/{digits}@sbc.example.com", caller_id_number="",
                         originate_timeout_seconds=20)
    assert originate_command(other, EMMA, "c", "", "gw:9000") == (
        "bgapi originate {voicegw_conversation_id=c,voicegw_number=+15556667777,originate_timeout=20}"
        "sofia/external/15556667777@sbc.example.com '&socket(gw:9000 async full)'")


@pytest.mark.parametrize("number", [
    "+15556667777 '&park'", "+15556667777}sofia/gateway/x/+1900", "+15556667777,originate_timeout=9999",
    "+1555666777'", "+15556667777\napi shutdown", "+1555&6667777", "15556667777", "+1555", "+1234567890123456",
    "+15556667777 ", "",
])
def test_a_number_that_is_not_plain_e164_is_refused(tmp_path, number):
    with pytest.raises(OriginateRefused):
        originate_command(settings_for(tmp_path, 8021), number, "conv-1", "nonce", "127.0.0.1:8084")


@pytest.mark.parametrize("conversation,callback", [("c}x", "n"), ("c,x=y", "n"), ("c", "n o"), ("c", "n'&park"),
                                                   ("c\nx", "n")])
def test_values_that_could_break_out_of_the_variable_block_are_refused(tmp_path, conversation, callback):
    with pytest.raises(OriginateRefused):
        originate_command(settings_for(tmp_path, 8021), EMMA, conversation, callback, "127.0.0.1:8084")


@pytest.mark.parametrize("result,reason", [
    ("-ERR USER_BUSY", "busy"), ("-ERR CALL_REJECTED", "busy"),
    ("-ERR NO_ANSWER", "no_answer"), ("-ERR NO_USER_RESPONSE", "no_answer"), ("-ERR ORIGINATOR_CANCEL", "no_answer"),
    ("-ERR RECOVERY_ON_TIMER_EXPIRE", "no_answer"),
    ("-ERR NORMAL_CIRCUIT_CONGESTION", "congestion"), ("-ERR SWITCH_CONGESTION", "congestion"),
    ("-ERR NORMAL_TEMPORARY_FAILURE", "congestion"),
    ("-ERR UNALLOCATED_NUMBER", "failed"), ("-ERR GATEWAY_DOWN", "failed"), ("-ERR", "failed"), ("garbage", "failed"),
])
def test_hangup_causes_map_to_call_outcomes(result, reason):
    outcome = freeswitch_outcome(result + "\n")
    assert not outcome and outcome.reason == reason
    assert freeswitch_outcome("+OK 3f1e2d3c-0000-4000-8000-00000000abcd\n")


# --- over the event socket, with the real core ---------------------------------------------------
async def run_call(tmp_path, peer: ScriptedEventSocket, **freeswitch):
    """Start the originate client against ``peer``, escalate Emma's reminder; (core, originator, cid, action)."""
    settings = settings_for(tmp_path, await peer.start(), **freeswitch)
    core = await build_core(settings)
    originator = await start_freeswitch_originate(settings, core, socket_port=8084)
    await until(lambda: originator.connected)
    cid, action = await reminder_call(core)
    return core, originator, cid, action


@pytest.mark.parametrize("result,reason", [
    ("-ERR USER_BUSY", "busy"), ("-ERR NO_ANSWER", "no_answer"), ("-ERR NO_USER_RESPONSE", "no_answer"),
    ("-ERR ORIGINATOR_CANCEL", "no_answer"), ("-ERR NORMAL_CIRCUIT_CONGESTION", "congestion"),
    ("-ERR SWITCH_CONGESTION", "congestion"), ("-ERR UNALLOCATED_NUMBER", "failed"),
])
async def test_a_call_not_answered_reaches_the_conversation(tmp_path, result, reason):
    peer = ScriptedEventSocket(result=result)
    core, originator, cid, action = await run_call(tmp_path, peer)
    try:
        assert await failures(core, cid) == [(reason, result[5:])]
    finally:
        await originator.close()
        await peer.close()
        await core.close()
    assert peer.commands[:2] == ["auth ClueCon", "event plain BACKGROUND_JOB"]
    [sent] = peer.originates()
    line, job = sent.split("\n")
    assert line == (f"bgapi originate {{origination_caller_id_number={OUR_NUMBER},voicegw_conversation_id={cid},"
                    f"voicegw_callback={action.callback},voicegw_number={EMMA},originate_timeout=30}}"
                    f"sofia/gateway/carrier/{EMMA} '&socket(127.0.0.1:8084 async full)'")
    assert re.fullmatch(r"Job-UUID: [0-9a-f-]{36}", job)


async def test_an_answered_call_reports_no_failure(tmp_path):
    peer = ScriptedEventSocket(result="+OK 3f1e2d3c-0000-4000-8000-00000000abcd")
    core, originator, cid, _ = await run_call(tmp_path, peer)
    try:
        await until(lambda: peer.originates() and originator.ringing == 0)
        assert await failures(core, cid, timeout=0.5) == []
    finally:
        await originator.close()
        await peer.close()
        await core.close()


async def test_an_injection_in_the_number_never_reaches_freeswitch(tmp_path, caplog):
    peer = ScriptedEventSocket()
    core, originator, cid, _ = await run_call(tmp_path, peer)
    try:
        await until(lambda: peer.originates())
        evil = Originate(number="+15556667777 '&bridge(sofia/gateway/carrier/+19005550100)'", conversation_id=cid,
                         callback="n")
        await originator.originate_sink(cid, evil)
        found = await failures(core, cid)
        assert found and found[0][0] == "failed" and "not an E.164 number" in found[0][1]
    finally:
        await originator.close()
        await peer.close()
        await core.close()
    assert len(peer.originates()) == 1 and "+1900" not in "".join(peer.commands)
    assert f"conversation {cid}: FreeSWITCH call to" in caplog.text


async def test_event_socket_down_reports_the_call_failed_and_recovers_when_it_is_back(tmp_path, caplog):
    port = free_port()
    settings = settings_for(tmp_path, port)
    core = await build_core(settings)
    originator = await start_freeswitch_originate(settings, core, socket_port=8084)
    peer = ScriptedEventSocket(result="-ERR USER_BUSY")
    try:
        cid, _ = await reminder_call(core)
        [(reason, detail)] = await failures(core, cid)
        assert reason == "failed" and "not connected" in detail
        assert originator.health().ok is False
        assert (await core.context(cid))["conversation_id"] == cid  # the core goes on
        await peer.start(port)  # FreeSWITCH comes back: the client reconnects (1 s backoff, doubling)
        await until(lambda: originator.connected, 10)
        assert originator.health().ok
        cid2, _ = await reminder_call(core)
        assert [r for r, _ in await failures(core, cid2)] == ["busy"]
    finally:
        await originator.close()
        await peer.close()
        await core.close()
    assert "FreeSWITCH event socket 127.0.0.1:%d" % port in caplog.text


async def test_a_wrong_password_is_logged_and_calls_fail(tmp_path, caplog):
    peer = ScriptedEventSocket(password="not-the-default")
    settings = settings_for(tmp_path, await peer.start())
    core = await build_core(settings)
    originator = await start_freeswitch_originate(settings, core, socket_port=8084)
    try:
        await until(lambda: "authentication refused" in caplog.text)
        cid, _ = await reminder_call(core)
        assert [r for r, _ in await failures(core, cid)] == ["failed"]
        assert not peer.originates()
    finally:
        await originator.close()
        await peer.close()
        await core.close()
    assert "-ERR invalid" in caplog.text and "check freeswitch.esl_password" in caplog.text


async def test_an_event_socket_that_never_asks_for_authentication_is_given_up_in_time(tmp_path, caplog):
    async def silent(reader, writer):
        await reader.read()  # accepts, says nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    settings = settings_for(tmp_path, server.sockets[0].getsockname()[1], connect_timeout_seconds=0.5)
    core = await build_core(settings)
    originator = await start_freeswitch_originate(settings, core, socket_port=8084)
    try:
        await until(lambda: "no authentication within 0.5 s" in caplog.text, 5)
        cid, _ = await reminder_call(core)
        [(reason, detail)] = await failures(core, cid)
        assert reason == "failed" and "not connected" in detail
    finally:
        await originator.close()
        server.close()
        await core.close()


async def test_losing_the_event_socket_while_ringing_reports_the_call_failed(tmp_path):
    ringing = asyncio.Event()

    async def ring_forever(command: str, job: str) -> str:
        ringing.set()
        await asyncio.sleep(3600)
        return "+OK"

    peer = ScriptedEventSocket(on_originate=ring_forever)
    core, originator, cid, _ = await run_call(tmp_path, peer)
    try:
        await asyncio.wait_for(ringing.wait(), 5)
        assert originator.ringing == 1
        peer.drop()
        [(reason, detail)] = await failures(core, cid)
        assert reason == "failed" and "lost" in detail and originator.ringing == 0
    finally:
        await originator.close()
        await peer.close()
        await core.close()


async def test_at_most_max_ringing_calls_ring_and_one_more_is_congestion(tmp_path):
    release = asyncio.Event()

    async def ring_until_released(command: str, job: str) -> str:
        await release.wait()
        return "-ERR NO_ANSWER"

    peer = ScriptedEventSocket(on_originate=ring_until_released)
    core, originator, cid, _ = await run_call(tmp_path, peer, max_ringing=1)
    try:
        await until(lambda: peer.originates())
        cid2, _ = await reminder_call(core)  # a second reminder while the first still rings
        [(reason, detail)] = await failures(core, cid2)
        assert reason == "congestion" and "freeswitch.max_ringing" in detail
        release.set()
        assert [r for r, _ in await failures(core, cid)] == ["no_answer"]
    finally:
        await originator.close()
        await peer.close()
        await core.close()
    assert len(peer.originates()) == 1


async def test_no_call_is_placed_while_the_node_holds_its_most_calls(tmp_path):
    """Its session would be refused once the customer answered: with the node's ``voice.max_calls``
    reached, no originate is sent and the conversation learns the call failed (congestion)."""
    peer = ScriptedEventSocket(result="+OK 3f1e2d3c-0000-4000-8000-00000000abcd")
    settings = settings_for(tmp_path, await peer.start())
    core = await build_core(settings)
    node = SessionCap("voice", 1, setting="voice.max_calls")
    assert node.admit()  # one call in progress: the node is full
    originator = await start_freeswitch_originate(settings, core, socket_port=8084, node=node)
    try:
        await until(lambda: originator.connected)
        cid, _ = await reminder_call(core)
        assert await failures(core, cid) == [("congestion", "1 calls in progress (voice.max_calls); not placed")]
        assert peer.originates() == [] and originator.ringing == 0
    finally:
        await originator.close()
        await peer.close()
        await core.close()


# --- the whole gateway: the answered call reaches the voice session --------------------------------
class AnsweredLeg:
    """The originated channel: ``socket(... async full)`` connects it to the gateway's outbound
    socket server; mod_audio_stream streams ``answer`` (L16 8 kHz) and plays what comes back."""

    def __init__(self, uuid: str, variables: dict[str, str], answer: bytes):
        self.uuid = uuid
        self.variables = variables
        self.answer = answer
        self.commands: list[str] = []
        self.received: list[tuple[float, bytes]] = []
        self.stream_start = 0.0
        self.tasks: list[asyncio.Task] = []
        self.http = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    def connect_reply(self) -> bytes:
        v = self.variables
        text = (_written(reply_to="connect").replace("{uuid}", self.uuid)
                .replace("{number_enc}", quote(v.get("voicegw_number", EMMA), safe=""))
                .replace("{caller}", quote(v.get("origination_caller_id_number", OUR_NUMBER), safe=""))
                .replace("{conversation}", quote(v.get("voicegw_conversation_id", ""), safe=""))
                .replace("{callback}", quote(v.get("voicegw_callback", ""), safe="")))
        return text.encode()

    async def connect(self, address: str) -> "AnsweredLeg":
        host, _, port = address.rpartition(":")
        self.reader, self.writer = await asyncio.open_connection(host, int(port))
        self.tasks.append(asyncio.create_task(self._esl()))
        return self

    async def _esl(self) -> None:
        try:
            async for command in esl_commands(self.reader):
                self.commands.append(command)
                if command == "connect":
                    self.writer.write(self.connect_reply())
                elif command.startswith("api "):
                    self.writer.write(b"Content-Type: api/response\nContent-Length: 12\n\n+OK Success\n")
                    if command.startswith("api uuid_audio_stream"):
                        self.tasks.append(asyncio.create_task(self._stream(command.split(" ")[4])))
                else:
                    self.writer.write(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
        except ConnectionError:
            return

    async def _stream(self, url: str) -> None:
        loop = asyncio.get_running_loop()
        self.ws = await self.http.ws_connect(url)
        await self.ws.send_str(f'{{"uuid":"{self.uuid}"}}')
        reader = asyncio.create_task(self._read(loop))
        self.stream_start = t0 = loop.time()
        audio, n = bytearray(self.answer), 0
        try:
            while not self.ws.closed:  # 20 ms of L16 every 20 ms; line silence after the answer
                frame = bytes(audio[:320]).ljust(320, b"\x00")
                del audio[:320]
                n += 1
                await self.ws.send_bytes(frame)
                await asyncio.sleep(max(0.0, t0 + n * 0.02 - loop.time()))
        except (ConnectionError, RuntimeError):
            pass
        finally:
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, loop) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.received.append((loop.time() - self.stream_start, msg.data))

    def first_voice_s(self) -> float | None:
        return next((t for t, f in self.received if any(f)), None)

    def hung_up(self) -> bool:
        return any("call-command: hangup" in c for c in self.commands)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()
        await self.http.close()
        self.writer.close()


ORIGINATE = re.compile(r"bgapi originate \{(?P<vars>[^}]*)\}(?P<target>\S+) '&socket\((?P<socket>\S+) async full\)'")


class Gateway:
    """The real core, voice pipeline, FreeSWITCH server and originate client; the scripted FreeSWITCH."""

    def __init__(self, tmp_path, answer: bytes):
        self.tmp_path, self.answer = tmp_path, answer
        self.legs: list[AnsweredLeg] = []

    async def __aenter__(self) -> "Gateway":
        from gateway.telephony.freeswitch_server import start_freeswitch_channel
        from gateway.voice.pipeline import VoicePipeline

        self.peer = ScriptedEventSocket(on_originate=self._answered)
        self.settings = settings_for(self.tmp_path, await self.peer.start())
        self.core = await build_core(self.settings)
        self.pipeline = VoicePipeline(self.settings, self.core)
        await self.pipeline.start()
        self.server = await start_freeswitch_channel(self.settings, self.core, self.pipeline)
        self.originator = await start_freeswitch_originate(self.settings, self.core, self.server.port)
        await until(lambda: self.originator.connected)
        return self

    async def _answered(self, command: str, job: str) -> str:
        """FreeSWITCH rang the number and it answered: the channel runs socket(), then the job's +OK."""
        m = ORIGINATE.fullmatch(command)
        assert m, command
        variables = dict(kv.split("=", 1) for kv in m["vars"].split(","))
        uuid = f"0b1e{len(self.legs):04d}-0000-4000-8000-00000000feed"
        self.legs.append(await AnsweredLeg(uuid, variables, self.answer).connect(m["socket"]))
        return f"+OK {uuid}"

    async def __aexit__(self, *exc) -> None:
        for leg in self.legs:
            await leg.close()
        await self.originator.close()
        await self.server.close()
        await self.pipeline.close()
        await self.peer.close()
        await self.core.close()

    def session(self, uuid: str):
        return self.pipeline.sessions.get(uuid)


def _said(session) -> list[str]:
    return [text for who, text in session.transcript if who == "bot"]


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_voicemail_box_answering_a_freeswitch_call_gets_the_message_after_its_beep(tmp_path):
    from tests.voice.amd_corpus import MACHINE_GREETINGS, machine

    clip = machine(MACHINE_GREETINGS[1], beep=(1000, 0.5))
    async with Gateway(tmp_path, clip.pcm) as gw:
        cid, action = await reminder_call(gw.core)
        await until(lambda: gw.legs and gw.session(gw.legs[0].uuid) is not None, 30)
        leg = gw.legs[0]
        session = gw.session(leg.uuid)
        assert session.outbound and session.callback == action.callback and session.caller_id == EMMA
        await until(leg.hung_up, 120)  # the message, then the gateway hangs up
        events = await gw.core.store.events(cid)
        said = _said(session)
    verdicts = [e.payload for e in events if e.kind == "AnsweringMachine"]
    assert [(v["verdict"], v["beep"]) for v in verdicts] == [("machine", True)]
    assert len(said) == 1 and "Hello Emma, this is Riverside Services" in said[0]
    assert "device pickup" not in said[0]
    first = leg.first_voice_s()
    assert first is not None and first >= clip.beep_end_s, (first, clip.beep_end_s)  # after the beep, not over it
    kinds = [e.kind for e in events]
    assert "CallbackAnswered" in kinds and "CallFailed" not in kinds
    print(f"\nFreeSWITCH voicemail: verdict {verdicts[0]['seconds']:.2f} s after answer; message from "
          f"{first:.2f} s (beep ended {clip.beep_end_s:.2f} s); real core, real pipeline, synthesized greeting")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_person_answering_a_freeswitch_call_hears_the_journey_at_once(tmp_path):
    from tests.voice.amd_corpus import human

    clip = human("hello?", lead_s=0.4, wait_s=0.0)
    async with Gateway(tmp_path, clip.pcm) as gw:
        cid, _ = await reminder_call(gw.core)
        await until(lambda: gw.legs and gw.session(gw.legs[0].uuid) is not None, 30)
        leg = gw.legs[0]
        session = gw.session(leg.uuid)
        await until(lambda: "device pickup" in " ".join(_said(session)), 120)
        said = " ".join(_said(session))
        events = await gw.core.store.events(cid)
        first = leg.first_voice_s()
        assert not leg.hung_up()
    verdicts = [e.payload for e in events if e.kind == "AnsweringMachine"]
    assert [v["verdict"] for v in verdicts] == ["human"] and verdicts[0]["seconds"] <= 3.0
    assert "automated call from Riverside Services" in said
    answer_end = len(clip.pcm) / 2 / 8000
    assert first is not None and first >= answer_end - 0.3  # nothing over the person's hello
    assert "CallbackAnswered" in [e.kind for e in events]
    print(f"\nFreeSWITCH person: verdict {verdicts[0]['seconds']:.2f} s; first bot audio {first - answer_end:.2f} s "
          f"after the hello ended; real core, real pipeline, synthesized speech")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_forged_callback_variable_is_not_the_call_the_core_placed(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "gateway.core.orchestrator")
    async with Gateway(tmp_path, b"") as gw:
        cid, action = await reminder_call(gw.core)
        await until(lambda: gw.legs, 10)  # the real call, answered
        forged = await AnsweredLeg("f0e1d2c3-0000-4000-8000-00000000bad0", {
            "voicegw_conversation_id": cid, "voicegw_callback": "guessed-nonce-0000000000000000",
            "voicegw_number": EMMA, "origination_caller_id_number": EMMA}, b"").connect(
            f"127.0.0.1:{gw.server.port}")
        gw.legs.append(forged)
        await until(lambda: gw.session(forged.uuid) is not None and gw.session(forged.uuid).session_id, 30)
        await until(lambda: gw.session(gw.legs[0].uuid) is not None and gw.session(gw.legs[0].uuid).session_id, 30)
        forged_sid, real_sid = gw.session(forged.uuid).session_id, gw.session(gw.legs[0].uuid).session_id
        replay = await AnsweredLeg("f0e1d2c3-0000-4000-8000-00000000bad1", {  # the real nonce, seen and replayed
            "voicegw_conversation_id": cid, "voicegw_callback": action.callback, "voicegw_number": EMMA},
            b"").connect(f"127.0.0.1:{gw.server.port}")
        gw.legs.append(replay)
        await until(lambda: gw.session(replay.uuid) is not None and gw.session(replay.uuid).session_id, 30)
        replay_sid = gw.session(replay.uuid).session_id
        assert gw.session(forged.uuid).outbound  # a claim, like the channel variables it came with
        events = await gw.core.store.events(cid)
        grants = (await gw.core.store.get(cid)).trust.get("grants", {})
    kinds = [e.kind for e in events]
    assert kinds.count("CallbackRefused") == 2 and kinds.count("CallbackAnswered") == 1  # the real call's only
    assert "unknown or used callback" in caplog.text
    assert forged_sid not in grants and replay_sid not in grants  # nothing proven: no phone, no account data
    assert grants[real_sid]["method"] == "callback"
