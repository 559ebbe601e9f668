"""SIP torture and abuse against the topology: through Kamailio, at a node's SIP front, at its worker.

Each test keeps a well-behaved call going beside the abuse and checks it afterwards (audio in
both directions for its whole length, its own hang-up answered), that no daemon died (the nodes
answer OPTIONS, no SIP worker was restarted) and that the abuse met the limits meant for it:
Kamailio's pike and call rate at the edge, the SIP front's peer check, call rates and body limit
on the node, the edge's re-INVITE limit per dialog.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.scale.calls import SCENARIOS, sipp_log, sipp_path, short_call
from tests.scale.conversations import media_stats
from tests.scale.raw_sip import RawPeer, dialog_of
from tests.scale.topology import Node, Topology, free_port, sip_options

pytestmark = [pytest.mark.scale, pytest.mark.timeout(240)]


def run_sipp(workdir: Path, scenario: str, target: str, name: str, *, source: str = "127.0.0.1",
             subst: dict[str, str] | None = None, extra: list[str] | None = None) -> subprocess.Popen[str]:
    """One of the abuse scenarios of tests/sip/scenarios, from ``source``, in the background."""
    text = (SCENARIOS / scenario).read_text()
    for key, value in (subst or {}).items():
        text = text.replace(key, value)
    xml = workdir / f"{name}.xml"
    xml.write_text(text)
    cmd = [sipp_path(), "-sf", str(xml), "-i", source, "-p", str(free_port()), "-mp", str(free_port(pair=True)),
           "-nostdin", "-cid_str", f"{name}-%u-%p@%s", "-trace_msg", "-message_file", str(workdir / f"{name}.msg.log"),
           "-trace_err", "-error_file", str(workdir / f"{name}.err.log"), "-s", "bot", *(extra or []), target]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def flood(workdir: Path, target: str, name: str, source: str, *, rate: int = 150, calls: int = 450
          ) -> subprocess.Popen[str]:
    """An INVITE flood: ``rate`` new calls a second, no retransmissions, 2 s per answer at most."""
    return run_sipp(workdir, "abuse_invite_flood.xml", target, name, source=source,
                    extra=["-r", str(rate), "-m", str(calls), "-l", "300", "-nr", "-recv_timeout", "2000",
                           "-timeout", "40s"])


async def finish(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    out, _ = await asyncio.to_thread(proc.communicate, timeout=timeout)
    return out


def everyone_alive(topo: Topology) -> None:
    assert topo.edge is not None and sip_options(topo.edge.port) == 200, topo.diagnostics()
    for node in topo.nodes:
        assert node.alive and sip_options(node.sip_port) == 200, topo.diagnostics()
        assert "exited with" not in node.log(), topo.diagnostics()  # no SIP worker died


async def an_honest_call_gets_through(topo: Topology, workdir: Path, name: str) -> None:
    """A new well-behaved call through the edge, right after the abuse: answered, audio, hung up."""
    call = short_call(workdir, topo.edge.address, name, seconds=2)
    out = await finish(call)
    assert call.returncode == 0, f"{out[-1500:]}\n{sipp_log(workdir, name)}\n{topo.diagnostics()}"
    untouched(await asyncio.to_thread(topo.node_of_call, name), name, 2)


def untouched(node: Node, name: str, seconds: float) -> None:
    """The well-behaved call ``name`` on ``node`` had audio in and out for all of ``seconds``."""
    stats = media_stats(node, name)
    assert stats["frames_in"] >= 50 * (seconds - 1) and stats["frames_out"] >= 50 * (seconds - 1), stats
    assert stats["underruns"] <= stats["frames_out"] / 100, stats  # gaps under 1 %: a loaded 2-core machine


def reached_workers(topo: Topology, name: str) -> int:
    """How many INVITEs of the scenario ``name`` a SIP worker took (and rang)."""
    return sum(len(re.findall(rf"call {re.escape(name)}-\S+ from .* ringing", n.log())) for n in topo.nodes)


async def test_invite_floods_at_the_edge_and_at_a_node_leave_a_call_in_progress_untouched(topo, tmp_path) -> None:
    edge = topo.edge.address
    steady = short_call(tmp_path, edge, "steady-1", seconds=14)
    node = await asyncio.to_thread(topo.node_of_call, "steady-1")
    other = next(n for n in topo.nodes if n is not node)
    floods = {
        "edge-flood": flood(tmp_path, edge, "edge-flood", "127.0.0.2"),  # a stranger at the edge
        "stranger-flood": flood(tmp_path, f"127.0.0.1:{node.sip_port}", "stranger-flood", "127.0.0.3"),
        "peer-flood": flood(tmp_path, f"127.0.0.1:{other.sip_port}", "peer-flood", "127.0.0.1"),  # a PBX gone mad
    }
    for name, proc in floods.items():
        await finish(proc)
    out = await finish(steady)
    assert steady.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'steady-1')}\n{topo.diagnostics()}"
    untouched(node, "steady-1", 14)

    assert "127.0.0.2 is flooding" in topo.edge.log()  # pike, once
    assert topo.edge.log().count("is flooding") < 5
    assert reached_workers(topo, "edge-flood") <= 60  # of 450: the rest never passed the edge
    assert reached_workers(topo, "stranger-flood") == 0  # not a peer: 403 from the front, statelessly
    assert "not a configured peer" in node.log()
    assert "over sip.max_new_calls_per_second" in other.log()  # the node's own call rate
    assert reached_workers(topo, "peer-flood") <= 20 * 5
    everyone_alive(topo)
    await an_honest_call_gets_through(topo, tmp_path, "after-floods")


GARBAGE = [
    b"\x00\xff\xfe garbage \x01" * 10,
    b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\nVia: nonsense\r\n\r\n",
    b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:bot@127.0.0.1>\r\nCall-ID: bad-cseq\r\nCSeq: banana INVITE\r\nContent-Length: 99999\r\n\r\nv=0",
    b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:bot@127.0.0.1>\r\nCall-ID: neg\r\nCSeq: 1 INVITE\r\nContent-Length: -5\r\n\r\n",
    b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK3\r\nFrom: <sip:a@b>;tag=1\r\n"
    b"To: <sip:bot@127.0.0.1>\r\nCall-ID: no-cseq\r\nContent-Length: 0\r\n\r\n",
    b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK4\r\nFrom: \xc3\x28\xa0\xa1\r\n"
    b"To: <sip:bot@127.0.0.1>\r\nCall-ID: utf8\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS sip:bot@127.0.0.1 SIP/2.0\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n",
    b"OPTIONS sip:bot@127.0.0.1 SIP/2.0\r\nX-Long: " + b"a" * 60000 + b"\r\n\r\n",
    b"INVITE \x00\x00 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK5\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnobody\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n",
    b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;" + b";".join(b"p%d=v" % i for i in range(2000))
    + b"\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:bot@127.0.0.1>\r\nCall-ID: vias\r\nCSeq: 1 INVITE\r\n\r\n",
    b"\r\n\r\n",
]


async def test_malformed_and_oversized_messages_are_dropped_or_refused(topo, tmp_path) -> None:
    edge = topo.edge.address
    steady = short_call(tmp_path, edge, "steady-2", seconds=8)
    node = await asyncio.to_thread(topo.node_of_call, "steady-2")
    targets = [("127.0.0.1", topo.edge.port)]
    for n in topo.nodes:
        targets += [("127.0.0.1", n.sip_port), ("127.0.0.1", n.sip_port + 1)]  # front, worker
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for target in targets:
            for datagram in GARBAGE:
                s.sendto(datagram, target)
    huge = {f"huge-{i}": run_sipp(tmp_path, "abuse_huge_sdp.xml", t, f"huge-{i}", extra=["-m", "1", "-timeout", "20s"])
            for i, t in enumerate([edge, f"127.0.0.1:{node.sip_port}"])}
    for name, proc in huge.items():
        await finish(proc)
        assert "413 Request Entity Too Large" in (tmp_path / f"{name}.msg.log").read_text(), sipp_log(tmp_path, name)
    assert reached_workers(topo, "huge") == 0
    out = await finish(steady)
    assert steady.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'steady-2')}"
    untouched(node, "steady-2", 8)
    everyone_alive(topo)
    await an_honest_call_gets_through(topo, tmp_path, "after-garbage")


@pytest.mark.parametrize("via_edge", [True, False], ids=["through-the-edge", "at-the-node"])
async def test_a_reinvite_storm_leaves_the_call_and_its_neighbours_up(topo, tmp_path, via_edge) -> None:
    edge = topo.edge.address
    where = "edge" if via_edge else "node"  # Call-IDs unique over the package's topology logs
    steady = short_call(tmp_path, edge, f"steady-{where}", seconds=10)
    node = await asyncio.to_thread(topo.node_of_call, f"steady-{where}")
    target = edge if via_edge else f"127.0.0.1:{node.sip_port}"
    if not (tmp_path / "caller.ulaw").exists():
        raise AssertionError("short_call writes caller.ulaw")
    storm = run_sipp(tmp_path, "abuse_reinvite_storm.xml", target, "storm", subst={"STORM": "40"},
                     extra=["-m", "1", "-timeout", "60s"])
    out = await finish(storm)
    answers = (tmp_path / "storm.msg.log").read_text()
    assert storm.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'storm')}"  # its BYE got a 200
    if via_edge:  # the edge's limit: 20 re-INVITEs a dialog in 10 s, then 403
        assert answers.count("SIP/2.0 403 Too Many re-INVITEs") == 20, answers[-3000:]
    else:  # the gateway answers each one itself, and the call lives on
        assert answers.count("SIP/2.0 200 OK") >= 20
    out = await finish(steady)
    assert steady.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, f'steady-{where}')}"
    untouched(node, f"steady-{where}", 10)
    everyone_alive(topo)
    await an_honest_call_gets_through(topo, tmp_path, f"after-storm-{where}")


async def _ended(topo: Topology, prefix: str, seconds: float = 15.0) -> None:
    """Every call whose Call-ID starts with ``prefix`` that a worker took has ended."""
    deadline = time.monotonic() + seconds
    while True:
        logs = "\n".join(n.log() for n in topo.nodes)
        taken = set(re.findall(rf"call ({re.escape(prefix)}\S*) from .* ringing", logs))
        left = [cid for cid in taken if f"call {cid} ended" not in logs]
        if not left:
            return
        assert time.monotonic() < deadline, f"calls left up: {left}\n{topo.diagnostics()}"
        await asyncio.sleep(0.3)


async def test_cancel_races_and_byes_for_unknown_dialogs_get_clean_answers(topo, tmp_path) -> None:
    edge = ("127.0.0.1", topo.edge.port)
    steady = short_call(tmp_path, topo.edge.address, "steady-4", seconds=20)
    steady_node = await asyncio.to_thread(topo.node_of_call, "steady-4")
    node = topo.nodes[0]
    front, worker = ("127.0.0.1", node.sip_port), ("127.0.0.1", node.sip_port + 1)
    peer = RawPeer()
    try:
        for target in (edge, front):
            for _ in range(3):  # INVITE and CANCEL back to back: whichever wins, the call ends cleanly
                _, cid, branch, tag = peer.invite(target)
                cancel = peer.request("CANCEL", f"sip:bot@{target[0]}:{target[1]}", call_id=cid, branch=branch,
                                      cseq=1, from_tag=tag)
                peer.send(cancel, target)
                got = peer.answers(0.5)
                peer.send(cancel, target)  # retransmitted as a UA does (timer E): the edge's processes
                got += peer.answers(2.5)   # may see the CANCEL before its INVITE's transaction exists
                finals = [m for m in got if m.status >= 200 and m.cseq_method == "INVITE"]
                cancelled = [m for m in got if m.cseq_method == "CANCEL"]
                assert finals and {m.status for m in finals} <= {200, 487}, [m.start for m in got]
                assert cancelled and cancelled[0].status in (200, 481), [m.start for m in got]
                final = finals[0]
                if final.status == 487:
                    peer.send(peer.request("ACK", f"sip:bot@{target[0]}:{target[1]}", call_id=cid, branch=branch,
                                           cseq=1, from_tag=tag, to_tag=dialog_of(final).to_tag), target)
                else:  # the answer won: ACK it and hang up, along the route set
                    d = dialog_of(final)
                    hop = target if d.routes else worker
                    peer.send(peer.request("ACK", d.contact, call_id=cid, branch=uuid.uuid4().hex[:12], cseq=1,
                                           from_tag=tag, to_tag=d.to_tag, routes=d.routes), hop)
                    peer.send(peer.request("BYE", d.contact, call_id=cid, branch=uuid.uuid4().hex[:12], cseq=2,
                                           from_tag=tag, to_tag=d.to_tag, routes=d.routes), hop)
                    assert any(m.status == 200 and m.cseq_method == "BYE" for m in peer.answers(3.0))

        # a CANCEL and BYEs nobody can match get 481, from the edge, the front and the worker alike
        unknown = [(edge, []), (front, []), (worker, []), (edge, [f"<sip:127.0.0.1:{topo.edge.port};lr>"])]
        for target, routes in unknown:
            cid = f"nobody-{uuid.uuid4().hex[:8]}"
            uri = f"sip:gateway@127.0.0.1:{node.sip_port + 1}"  # loose-routed on to a worker
            peer.send(peer.request("BYE", uri, call_id=cid, branch=uuid.uuid4().hex[:12], cseq=2, from_tag="x",
                                   to_tag="y", routes=routes), target)
            got = peer.answers(3.0, until=1)
            assert got and got[0].status == 481, (target, routes, [m.start for m in got])
        peer.send(peer.request("CANCEL", f"sip:bot@127.0.0.1:{topo.edge.port}", call_id="nobody", branch="nothing",
                               cseq=1, from_tag="x"), edge)
        assert [m.status for m in peer.answers(3.0, until=1)] == [481]
    finally:
        peer.close()
    await _ended(topo, "raw-")  # no call of the races was left behind
    out = await finish(steady)
    assert steady.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'steady-4')}"
    untouched(steady_node, "steady-4", 20)
    everyone_alive(topo)
    await an_honest_call_gets_through(topo, tmp_path, "after-races")


async def test_rtp_from_a_stranger_breaks_nothing(topo, tmp_path) -> None:
    """RTP sent to a call's port from another address: the call lives on, nothing crashes. The
    stranger must not get the call's audio either; that one is a known defect (see the end)."""
    edge = topo.edge.address
    # the caller's tone plays once (2 s), then the caller is silent, as a phone on mute
    victim = short_call(tmp_path, edge, "muted", seconds=10, loops=1)
    node = await asyncio.to_thread(topo.node_of_call, "muted")
    deadline = time.monotonic() + 10
    port = 0
    while not port and time.monotonic() < deadline:
        log = (tmp_path / "muted.msg.log").read_text() if (tmp_path / "muted.msg.log").exists() else ""
        found = re.search(r"SIP/2.0 200 OK.*?m=audio (\d+)", log, re.S)
        port = int(found.group(1)) if found else 0
        await asyncio.sleep(0.1)
    assert port, sipp_log(tmp_path, "muted")
    await asyncio.sleep(3.0)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.2", 0))
    stranger.settimeout(0.02)
    received = 0
    try:
        for seq in range(200):  # 4 s of loud RTP from another address
            stranger.sendto(struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x5151) + bytes([0x00, 0x80] * 80),
                            ("127.0.0.1", port))
            try:
                stranger.recv(2048)
                received += 1
            except OSError:
                pass
    finally:
        stranger.close()
    out = await finish(victim)
    assert victim.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'muted')}"  # the call itself lived on
    everyone_alive(topo)
    assert node.alive
    await an_honest_call_gets_through(topo, tmp_path, "after-stranger")
    if received:
        pytest.xfail(f"the stranger got {received} packets of the bot's audio: pjmedia latches a call's RTP to "
                     "a new source address when the caller sends none (issue 11, media path); firewall RTP to "
                     "the PBX and trunk addresses meanwhile")
