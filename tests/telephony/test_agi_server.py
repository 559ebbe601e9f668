"""FastAGI server over real sockets: Asterisk's recorded side replayed in lockstep."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agi import protocol as p
from agi.server import AgiError, AgiSession, ChannelHungUp, FastAgiServer
from tests.telephony import fixtures

HOST = "127.0.0.1"


@pytest.fixture
async def agi_server():
    servers = []

    async def make(routes, **kw):
        srv = FastAgiServer(routes, host=HOST, port=0, **kw)
        await srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.close()


async def attempt(results: list, coro):
    try:
        results.append(await coro)
    except AgiError as exc:
        results.append(exc)


async def test_environment_route_and_verbose(agi_server):
    seen = {}

    async def env_route(agi: AgiSession):
        seen["env"] = agi.env
        seen["verbose"] = await agi.verbose("environment captured", 1)

    srv = await agi_server({"gw/env": env_route})
    await fixtures.replay_as_asterisk(HOST, srv.port, fixtures.load("agi/agi_a_environment"))
    assert seen["env"].args == ["arg2", "", "arg 4 with spaces"]
    assert seen["verbose"].value == 1


async def test_command_set_byte_for_byte(agi_server):
    r: list = []

    async def cmds(agi: AgiSession):
        await attempt(r, agi.answer())
        await attempt(r, agi.get_variable("EXISTING"))
        await attempt(r, agi.get_variable("NOSUCHVAR"))
        await attempt(r, agi.set_variable("FROMAGI", "value with spaces"))
        await attempt(r, agi.get_variable("FROMAGI"))
        await attempt(r, agi.get_full_variable("${FROMAGI}|${CHANNEL}|${EXTEN}"))
        await attempt(r, agi.get_full_variable("${NOSUCHVAR}"))
        await attempt(r, agi.get_variable("CHANNEL(state)"))
        await attempt(r, agi.command("CHANNEL STATUS"))
        await attempt(r, agi.verbose("hello from the recording server"))
        await attempt(r, agi.say_digits("123"))
        await attempt(r, agi.stream_file("beep", "0123456789*#"))
        await attempt(r, agi.stream_file("no-such-file", "0123456789*#"))
        await attempt(r, agi.get_data("beep", 2000, 4))
        await attempt(r, agi.exec("Playback", "beep"))
        await attempt(r, agi.exec("NoSuchApplication", "foo"))
        await attempt(r, agi.command("NOSUCHCOMMAND foo bar"))
        await attempt(r, agi.command("STREAM FILE"))
        await attempt(r, agi.command("GET VARIABLE"))
        await attempt(r, agi.wait_for_digit(1500))
        await attempt(r, agi.command("NOOP"))

    srv = await agi_server({"cmds": cmds})  # matched by the last path segment of gw/cmds
    await fixtures.replay_as_asterisk(HOST, srv.port, fixtures.load("agi/agi_b_commands"))
    assert r[1] == "hello world" and r[2] is None and r[4] == "value with spaces"
    assert r[5] == "value with spaces|Local/cmds@fixtures-agi-00000001;2|cmds" and r[6] == ""
    assert r[7] == "Up" and r[8].value == 6
    assert r[11].endpos == 3404 and r[12].value == -1
    assert r[13] == ("", True)
    assert r[15].value == -2
    assert isinstance(r[16], AgiError) and r[16].response.code == 510
    assert isinstance(r[17], AgiError) and "<literal>" in r[17].response.usage
    assert r[19] == "" and r[20].value == 0
    assert srv.sessions_failed == 0


async def test_dtmf_session(agi_server):
    r: list = []

    async def dtmf(agi: AgiSession):
        r.append((await agi.stream_file("demo-congrats", "0123456789*#")).digit)
        r.append(await agi.get_data("beep", 5000, 4))
        r.append(await agi.get_data("beep", 5000, 2))
        r.append(await agi.wait_for_digit(5000))
        r.append((await agi.stream_file("vm-intro", "#")).digit)
        r.append(await agi.wait_for_digit(1500))
        r.append(await agi.wait_for_digit(-1))
        r.append((await agi.say_digits("9876", "2")).digit)
        r.append((await agi.hangup()).value)

    srv = await agi_server({"dtmf": dtmf})
    await fixtures.replay_as_asterisk(HOST, srv.port, fixtures.load("agi/agi_c_dtmf_sip_rfc4733"))
    assert r == ["5", ("123", False), ("47", False), "9", "#", "", "*", "2", 1]


@pytest.mark.parametrize("name, route, hangup_lines", [
    ("agi_d1_caller_hangup_during_stream_default", "hup", True),
    ("agi_d2_caller_hangup_during_stream_AGISIGHUP_no", "hupnosig", False),
])
async def test_caller_hangup_during_stream(agi_server, name, route, hangup_lines):
    r: list = []

    async def hup(agi: AgiSession):
        r.append(await agi.stream_file("demo-congrats", "0123456789"))
        await attempt(r, agi.get_variable("CHANNEL"))
        await attempt(r, agi.command("CHANNEL STATUS"))
        await attempt(r, agi.verbose("after hangup"))
        await attempt(r, agi.stream_file("beep"))
        await attempt(r, agi.answer())
        await attempt(r, agi.wait_for_digit(100))
        await attempt(r, agi.exec("NoOp", "x"))
        await attempt(r, agi.hangup())
        r.append(agi.hangup_seen)

    srv = await agi_server({route: hup})
    await fixtures.replay_as_asterisk(HOST, srv.port, fixtures.load(f"agi/{name}"))
    assert r[0].value == -1 and r[0].endpos == 20000
    assert r[1].startswith("Local/")
    assert [type(x).__name__ for x in r[2:9]] == [
        "ChannelHungUp", "Response", "ChannelHungUp", "ChannelHungUp", "ChannelHungUp", "Response", "ChannelHungUp"]
    assert r[9] is hangup_lines


async def test_sip_bye_during_stream(agi_server):
    r: list = []

    async def hup(agi: AgiSession):
        r.append(await agi.stream_file("demo-congrats", "0123456789"))
        r.append(await agi.get_variable("CHANNEL"))
        await attempt(r, agi.command("CHANNEL STATUS"))
        await attempt(r, agi.stream_file("beep"))
        await attempt(r, agi.hangup())

    srv = await agi_server({"gw/siphup": hup})
    await fixtures.replay_as_asterisk(HOST, srv.port, fixtures.load("agi/agi_d4_sip_caller_bye_during_stream"))
    assert r[0].value == -1 and r[0].endpos == 32000 and r[1] == "PJSIP/sipp-00000001"
    assert all(isinstance(x, ChannelHungUp) for x in r[2:])


async def test_exit_on_hangup_closes_the_session(agi_server, caplog):
    r: list = []

    async def hup(agi: AgiSession):
        r.append(await agi.stream_file("demo-congrats", "0123456789"))
        await attempt(r, agi.get_variable("CHANNEL"))

    srv = await agi_server({"hupexit": hup})
    await fixtures.replay_as_asterisk(
        HOST, srv.port, fixtures.load("agi/agi_d3_caller_hangup_during_stream_AGIEXITONHANGUP_yes"))
    for _ in range(100):
        if len(r) == 2:
            break
        await asyncio.sleep(0.02)
    assert r[0].value == -1
    assert isinstance(r[1], ChannelHungUp) and "connection closed" in str(r[1])


async def test_server_closes_after_environment(agi_server):
    async def nothing(agi: AgiSession):
        return None

    srv = await agi_server({"closeafterenv": nothing})
    await fixtures.replay_as_asterisk(HOST, srv.port, fixtures.load("agi/agi_e2_server_closes_after_env"))


async def test_bad_peers_end_alone_while_a_call_runs(agi_server, caplog):
    caplog.set_level(logging.INFO, logger="agi.server")
    release = asyncio.Event()
    answered = []

    async def slow(agi: AgiSession):
        answered.append(await agi.answer())
        await release.wait()
        answered.append(await agi.verbose("still here"))

    srv = await agi_server({"slow": slow}, read_timeout=1.0)
    good_r, good_w = await asyncio.open_connection(HOST, srv.port)
    good_w.write(p.encode_environment({"network": "yes", "network_script": "slow", "channel": "PJSIP/good-1"}))
    assert await asyncio.wait_for(good_r.readline(), 5) == b"ANSWER\n"
    good_w.write(b"200 result=0\n")

    async def bad(payload: bytes, close: bool = True) -> bytes:
        r, w = await asyncio.open_connection(HOST, srv.port)
        w.write(payload)
        if close:
            w.write_eof()
        try:
            return await asyncio.wait_for(r.read(), 10)
        finally:
            w.close()

    huge = b"".join(b"agi_var%d: value\n" % i for i in range(10_000)) + b"\n"
    results = await asyncio.gather(
        bad(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n"),
        bad(huge),
        bad(b"agi_network: yes\nagi_netw", close=False),  # stops sending mid-environment
        bad(p.encode_environment({"network_script": "nosuchroute", "channel": "PJSIP/x-2"})),
        bad(b"\x00\xff" * 100),
    )
    assert results == [b""] * 5  # every bad peer just gets closed
    text = caplog.text
    assert "not an AGI environment line" in text
    assert "more than 256 lines" in text
    assert "no complete environment within 1.0 s" in text
    assert "no route for 'nosuchroute'" in text
    release.set()
    assert await asyncio.wait_for(good_r.readline(), 5) == b'VERBOSE "still here" 1\n'
    good_w.write(b"200 result=1\n")
    assert await asyncio.wait_for(good_r.read(), 5) == b""  # route done: the server half-closes
    good_w.close()
    assert [a.value for a in answered] == [0, 1]


async def test_command_timeout_ends_the_session(agi_server, caplog):
    async def route(agi: AgiSession):
        await agi.command("WAIT FOR DIGIT", 100, timeout=0.3)

    srv = await agi_server({"t": route})
    r, w = await asyncio.open_connection(HOST, srv.port)
    w.write(p.encode_environment({"network_script": "t", "channel": "PJSIP/t-1"}))
    assert await asyncio.wait_for(r.readline(), 5) == b"WAIT FOR DIGIT 100\n"
    assert await asyncio.wait_for(r.read(), 5) == b""
    assert "no answer to WAIT FOR DIGIT within 0.3 s" in caplog.text
    w.close()
