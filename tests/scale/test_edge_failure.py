"""Kamailio stopped in the middle of a call, then started again.

Kamailio keeps no dialog state (record-route, stateless in-dialog relaying) and RTP never passes
through it. Asserted: a call in progress keeps its audio both ways while the edge is down; new
calls to the edge fail (nothing answers there) while a call sent straight to a node's SIP front
(a PBX's second route) is answered; once Kamailio is back, the call in progress hangs up through
it (its BYE, retransmitted meanwhile, gets its 200) and new calls through the edge are answered.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.scale.calls import short_call, sipp_log
from tests.scale.conversations import media_stats
from tests.scale.topology import Topology, sip_options

pytestmark = [pytest.mark.scale, pytest.mark.timeout(240)]

EDGE_DOWN_S = 6.0


async def _finish(proc, timeout: float = 90) -> str:
    out, _ = await asyncio.to_thread(proc.communicate, timeout=timeout)
    return out


async def test_kamailio_down_and_back_leaves_calls_up(topo: Topology, tmp_path: Path) -> None:
    assert topo.edge is not None
    edge = topo.edge.address
    ongoing = short_call(tmp_path, edge, "edge-ongoing", seconds=12)
    node = await asyncio.to_thread(topo.node_of_call, "edge-ongoing")
    await asyncio.sleep(2.0)
    topo.edge.stop()
    down_at = time.monotonic()
    try:
        assert sip_options(topo.edge.port, timeout=0.5) == 0  # nothing answers at the edge
        lost = short_call(tmp_path, edge, "edge-down", seconds=1, extra=["-recv_timeout", "3000"])
        direct = short_call(tmp_path, f"127.0.0.1:{node.sip_port}", "edge-bypass", seconds=1)
        out = await _finish(direct)
        assert direct.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'edge-bypass')}"
        await _finish(lost)
        assert lost.returncode != 0  # no edge, no call: the PBX needs its second route
        await asyncio.sleep(max(0.0, EDGE_DOWN_S - (time.monotonic() - down_at)))
    finally:
        topo.edge.start()
    out = await _finish(ongoing)
    # the call outlived the outage: its audio never passed through Kamailio, its BYE did (after)
    assert ongoing.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'edge-ongoing')}\n{topo.diagnostics()}"
    stats = media_stats(node, "edge-ongoing")
    assert stats["frames_in"] >= 50 * 11 and stats["frames_out"] >= 50 * 11, stats
    assert stats["underruns"] <= stats["frames_out"] / 100, stats
    after = short_call(tmp_path, edge, "edge-back", seconds=1)
    out = await _finish(after)
    assert after.returncode == 0, f"{out[-1500:]}\n{sipp_log(tmp_path, 'edge-back')}\n{topo.diagnostics()}"
