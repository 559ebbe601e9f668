"""deploy/example: the files an operator copies for two nodes behind Kamailio and HAProxy.

Each is read by the program that will run it (the gateway's own settings loader, ``kamailio -c``,
``haproxy -c``) and checked against the others: the dispatcher list names the nodes' SIP fronts,
HAProxy the nodes' FastAGI and AudioSocket ports, every node the same Redis and only Kamailio as
its SIP peer, and each node's voicebot route sends a call's audio back to that node."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.config import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "example"
KAMAILIO_CFG = EXAMPLE.parent / "kamailio" / "kamailio.cfg"
NODES = ("node-a.yaml", "node-b.yaml")


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        why = f"{name} is not installed (Debian package {package}, in the Makefile's TEST_APT)"
        if os.environ.get("MAKELEVEL") or os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return path


def _nodes():
    return [load_settings(EXAMPLE / name, environ={}) for name in NODES]


def test_the_nodes_share_redis_and_take_calls_only_from_the_edge():
    a, b = _nodes()
    kamailio = _haproxy_bind()  # the edge host runs Kamailio and HAProxy
    for node in (a, b):
        assert node.context.backend == "redis" and node.context.redis_url == a.context.redis_url
        assert node.sip.enabled and tuple(node.sip.peers) == (kamailio,) and node.sip.workers >= 1
        own = f"{node.audiosocket.host}:{node.audiosocket.port}"
        assert node.fastagi.audiosocket_address == own  # the voicebot route's audio comes back here
    assert (a.sip.host, a.fastagi.host) != (b.sip.host, b.fastagi.host)


def test_the_dispatcher_list_is_the_nodes_sip_fronts_and_kamailio_accepts_the_config():
    a, b = _nodes()
    listed = re.findall(r"^1 sip:([\d.]+:\d+) ", (EXAMPLE / "dispatcher.list").read_text(), re.M)
    assert listed == [f"{n.sip.host}:{n.sip.port}" for n in (a, b)]
    kamailio = _binary("kamailio", "kamailio")
    checked = subprocess.run([kamailio, "-c", "-f", str(KAMAILIO_CFG), "-A", f'DS_LIST="{EXAMPLE / "dispatcher.list"}"'],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr[-2000:]


def test_haproxy_balances_the_nodes_fastagi_and_audiosocket_and_accepts_the_config():
    a, b = _nodes()
    text = (EXAMPLE / "haproxy.cfg").read_text()
    servers = dict(re.findall(r"^listen (\S+)\n((?:    .*\n?)+)", text, re.M))
    agi = re.findall(r"server \w+ ([\d.]+:\d+)", servers["voicegw-agi"])
    audio = re.findall(r"server \w+ ([\d.]+:\d+)", servers["voicegw-audiosocket"])
    assert agi == [f"{n.fastagi.host}:{n.fastagi.port}" for n in (a, b)]
    assert audio == [f"{n.audiosocket.host}:{n.audiosocket.port}" for n in (a, b)]
    haproxy = _binary("haproxy", "haproxy")
    checked = subprocess.run([haproxy, "-c", "-f", str(EXAMPLE / "haproxy.cfg")], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]


def _haproxy_bind() -> str:
    binds = re.findall(r"bind ([\d.]+):\d+", (EXAMPLE / "haproxy.cfg").read_text())
    assert binds and len(set(binds)) == 1
    return binds[0]
