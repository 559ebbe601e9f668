"""AGI codec against the bytes a real Asterisk 22.10.1 sent."""

from __future__ import annotations

import pytest

from agi import protocol as p
from tests.telephony import fixtures


def env_of(name: str, step: int | None = None) -> p.AgiEnvironment:
    data = fixtures.stream(fixtures.load(f"agi/{name}"))
    parser = p.EnvironmentParser()
    env = None
    chunks = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    for piece in chunks:
        env = parser.receive_data(piece) or env
        if env:
            break
    assert env is not None
    return env


@pytest.mark.parametrize("step", [None, 1, 13])
def test_environment_block(step):
    env = env_of("agi_a_environment", step)
    assert env.network_script == "gw/env?a=1&b=two"
    assert env.script_path == "gw/env" and env.query == {"a": "1", "b": "two"}
    assert env.args == ["arg2", "", "arg 4 with spaces"]
    assert env.get("request") == "agi://127.0.0.1:4573/gw/env?a=1&b=two"
    assert env.channel == "Local/env@fixtures-agi-00000000;2"
    assert env.caller_id == "5551234" and env.get("calleridname") == "Fixture Caller"
    assert env.get("accountcode") == "" and env.get("version") == "22.10.1"
    assert env.uniqueid == "1795613927.1"
    assert list(env.variables)[:3] == ["network", "network_script", "request"]


def test_sip_environment():
    env = env_of("agi_c_dtmf_sip_rfc4733")
    assert env.channel.startswith("PJSIP/sipp-") and env.get("type") == "PJSIP"
    assert env.caller_id == "sipp" and env.dialed == "agidtmf"


def test_environment_limits_and_garbage():
    parser = p.EnvironmentParser(max_lines=256)
    with pytest.raises(p.ProtocolError, match="more than 256 lines"):
        parser.receive_data(b"".join(b"agi_x%d: y\n" % i for i in range(10_000)))
    with pytest.raises(p.ProtocolError, match="already refused"):
        parser.receive_data(b"\n")
    with pytest.raises(p.ProtocolError, match="not an AGI environment line"):
        p.EnvironmentParser().receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(p.ProtocolError, match="longer than 8192"):
        p.EnvironmentParser().receive_data(b"agi_x: " + b"a" * 9000)
    with pytest.raises(p.ProtocolError, match="larger than 1000 bytes"):
        p.EnvironmentParser(max_bytes=1000).receive_data(b"agi_x: " + b"a" * 990 + b"\nagi_y: 1\n")
    with pytest.raises(p.ProtocolError, match="empty line before"):
        p.EnvironmentParser().receive_data(b"\n")


def responses_of(name: str, step: int | None = None) -> list:
    chunks = fixtures.load(f"agi/{name}")
    conn_env = p.EnvironmentParser()
    parser = p.ResponseParser()
    out: list = []
    data = fixtures.stream(chunks)
    conn_env_done = None
    for i in range(0, len(data), step or len(data)):
        piece = data[i:i + (step or len(data))]
        if conn_env_done is None:
            conn_env_done = conn_env.receive_data(piece)
            if conn_env_done is None:
                continue
            piece = conn_env.leftover
        out += parser.receive_data(piece)
    return out


@pytest.mark.parametrize("step", [None, 1, 50])
def test_command_set_responses(step):
    rs = responses_of("agi_b_commands", step)
    hangups = [r for r in rs if isinstance(r, p.HangupNotice)]
    rs = [r for r in rs if isinstance(r, p.Response)]
    assert len(hangups) == 1  # the normal end of the session also says HANGUP
    assert [r.code for r in rs] == [200] * 16 + [510, 520, 520, 200, 200]
    assert rs[1].data == "hello world" and rs[1].value == 1
    assert rs[2].value == 0 and rs[2].data is None
    assert rs[5].data == "value with spaces|Local/cmds@fixtures-agi-00000001;2|cmds"
    assert rs[6].value == 1 and rs[6].data == ""
    assert rs[8].value == 6
    assert rs[11].endpos == 3404 and rs[11].value == 0
    assert rs[12].value == -1 and rs[12].endpos == 0
    assert rs[13].result == "" and rs[13].value is None and rs[13].data == "timeout"
    assert rs[15].value == -2
    usage = rs[17]
    assert usage.line == "520-Invalid command syntax.  Proper usage follows:"
    assert "<literal>0</literal>" in usage.usage and usage.data == "End of proper usage."
    assert "Example return code: 200 result=1 (testvariable)" in rs[18].usage


def test_dtmf_results():
    rs = [r for r in responses_of("agi_c_dtmf_sip_rfc4733") if isinstance(r, p.Response)]
    assert [r.result for r in rs] == ["53", "123", "47", "57", "35", "0", "42", "50", "1"]
    # STREAM FILE / WAIT FOR DIGIT / SAY answer an ASCII code; GET DATA answers the digits
    assert [rs[i].digit for i in (0, 3, 4, 5, 6, 7)] == ["5", "9", "#", "", "*", "2"]
    assert rs[0].endpos == 12800


def test_hangup_during_stream_then_dead_channel():
    rs = responses_of("agi_d1_caller_hangup_during_stream_default")
    kinds = ["H" if isinstance(r, p.HangupNotice) else r.code for r in rs]
    assert kinds == [200, "H", 200, 511, 200, 511, 511, 511, 200, 511, "H"]
    assert rs[0].value == -1 and rs[0].endpos == 20000
    assert rs[3].dead_channel
    exit_rs = responses_of("agi_d3_caller_hangup_during_stream_AGIEXITONHANGUP_yes")
    assert ["H" if isinstance(r, p.HangupNotice) else r.code for r in exit_rs] == [200, "H", "H"]
    nosig = responses_of("agi_d2_caller_hangup_during_stream_AGISIGHUP_no")
    assert not any(isinstance(r, p.HangupNotice) for r in nosig)


def test_cancelled_wait_for_digit_answers_twice_in_one_read():
    rs = responses_of("agi_b3_pipelined_command_during_get_data_and_wait_for_digit")
    rs = [r for r in rs if isinstance(r, p.Response)]
    # GET DATA cancelled: no line; WAIT FOR DIGIT cancelled: a fake "200 result=1"
    assert [r.line for r in rs[:3]] == [
        "200 result=1 (Local/pipeline2@fixtures-agi-0000001b;2)", "200 result=1",
        "200 result=1 (Local/pipeline2@fixtures-agi-0000001b;2)"]


def test_connection_refuses_pipelining():
    conn = p.AgiConnection()
    conn.receive_data(b"agi_network: yes\nagi_network_script: x\n\n")
    conn.send("STREAM FILE", "demo-congrats", p.Quoted(""))
    with pytest.raises(p.PipeliningError, match="never answer"):
        conn.send("GET VARIABLE", "CHANNEL")
    msgs = conn.receive_data(b"200 result=0 endpos=100\n")
    assert msgs[0].endpos == 100
    assert conn.send("GET VARIABLE", "CHANNEL") == b"GET VARIABLE CHANNEL\n"


def test_trying_and_formatting():
    parser = p.ResponseParser()
    msgs = parser.receive_data(b"100 result=0 Trying...\n200 result=0\n")
    assert isinstance(msgs[0], p.Trying) and msgs[1].ok
    assert p.format_command("VERBOSE", 'say "hi"', 1) == b'VERBOSE "say \\"hi\\"" 1\n'
    with pytest.raises(ValueError):
        p.format_command("VERBOSE", "two\nlines")
    with pytest.raises(p.ProtocolError):
        parser.receive_data(b"garbage line\n")
