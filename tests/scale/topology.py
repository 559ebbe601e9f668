"""Several gateway nodes behind Kamailio, sharing one Redis, on one machine (loopback).

The tests' own helper (CI starts nothing by itself): a durable ``redis-server``, N ``voicegw
serve`` processes (each its data directory, web and SIP ports, the shared Redis and links
secret) and Kamailio with ``deploy/kamailio/kamailio.cfg`` dispatching to their SIP ports. Every
daemon is started here, in its own process group, and stopped by the id it was started with.

Run it by hand to try the topology::

    .venv/bin/python -m tests.scale.topology --nodes 2     # prints the addresses; Ctrl-C stops all

Nodes use the light recognizer setup (WebRTC VAD, one Whisper worker, no cross-check): the
topology is about calls and state, not about recognition accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = ROOT / "deploy" / "kamailio" / "kamailio.cfg"
NODE_START_SECONDS = 120.0  # a node loads models and journeys; generous for a loaded 2-core machine
EDGE_START_SECONDS = 20.0
STOP_SECONDS = 20.0
LINKS_SECRET = "scale-test-secret-shared-by-every-node-0123456789"
AGENT = "ana"
AGENT_TOKEN = "ana.scale-test-token-for-ana-0123456789abcdef0123456789"
"""The agent every node knows (same accounts everywhere, as a site configures them)."""


def free_port(kind: int = socket.SOCK_DGRAM, pair: bool = False) -> int:
    """A loopback port free for UDP and TCP (``pair``: an even one whose next is free too)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 60000 or (pair and port % 2):
            continue
        try:
            for p in (port, port + 1) if pair else (port,):
                for k in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, k) as t:
                        t.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def sip_options(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> int:
    """Send one OPTIONS over UDP; the status code of the answer (0: none in ``timeout``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        me = s.getsockname()[1]
        branch, cid = uuid.uuid4().hex[:16], uuid.uuid4().hex
        s.sendto((f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{branch}\r\n"
                  f"From: <sip:probe@127.0.0.1>;tag={branch}\r\nTo: <sip:{host}:{port}>\r\nCall-ID: {cid}\r\n"
                  "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), (host, port))
        try:
            data = s.recv(65535)
        except OSError:
            return 0
    match = re.match(rb"SIP/2\.0 (\d{3})", data)
    return int(match.group(1)) if match else 0


def _stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = STOP_SECONDS) -> None:
    """Signal the process group started with ``proc`` (it leads it), then make sure it is gone."""
    if proc.poll() is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # children left behind by a killed leader
        except ProcessLookupError:
            pass
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


@dataclass
class Node:
    """One ``voicegw serve``."""

    name: str
    directory: Path
    sip_port: int
    web_port: int
    settings: dict[str, Any]
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def config_path(self) -> Path:
        return self.directory / "node.json"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / f"node-{self.starts}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        """Start (again: same data directory, same ports, so its spool is replayed). Its SIP
        worker listens on ``sip_port + 1`` (the front on ``sip_port``)."""
        self.starts += 1
        self.config_path.write_text(json.dumps(self.settings, indent=2))  # YAML is a superset of JSON
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEGW_")}  # node.json says it all
        env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "--config", str(self.config_path), "serve"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()

    def wait_ready(self, timeout: float = NODE_START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if "voicegw is running" in self.log() and sip_options(self.sip_port, timeout=0.5):
                return
            time.sleep(0.2)
        raise RuntimeError(f"node {self.name} not ready in {timeout} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the node and everything it started (its recognizer and SIP workers): a
        machine gone, no goodbye to anyone."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.directory.glob("node-*.log")))

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as resp:
            return resp.read().decode()


@dataclass
class Edge:
    """Kamailio with the deploy configuration, dispatching to the nodes."""

    directory: Path
    port: int
    nodes: list[Node]
    defines: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "kamailio.log"

    def start(self) -> None:
        binary = shutil.which("kamailio")
        if binary is None:
            raise FileNotFoundError("kamailio")
        ds = self.directory / "dispatcher.list"
        ds.write_text("".join(f"1 sip:127.0.0.1:{n.sip_port} 0 0 name={n.name}\n" for n in self.nodes))
        defines = {"DS_LIST": f'"{ds}"', "DS_PING_SECONDS": "1", "EDGE_INVITE_TIMEOUT_MS": "1000",
                   "EDGE_TRUSTED_NET": '"127.0.0.1/32"', **self.defines}
        cmd = [binary, "-f", str(KAMAILIO_CFG), "-l", f"udp:127.0.0.1:{self.port}", "-DD", "-E", "-n", "2",
               "-m", "48", "-M", "8", "-P", str(self.directory / "kamailio.pid"), "-Y", str(self.directory),
               "-w", str(self.directory)]
        for key, value in defines.items():
            cmd += ["-A", f"{key}={value}"]
        log = open(self.log_path, "ab")  # a restarted edge keeps what it logged before
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + EDGE_START_SECONDS
        while sip_options(self.port, timeout=0.3) != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kamailio did not start:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def node_settings(name: str, directory: Path, sip_port: int, web_port: int, redis_url: str,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A node's configuration: its own data and ports, everything shared in Redis."""
    from gateway.agents.tokens import hash_token

    settings: dict[str, Any] = {
        "data_dir": str(directory / "data"),
        "web": {"host": "127.0.0.1", "port": web_port, "public_url": f"http://127.0.0.1:{web_port}"},
        "context": {"backend": "redis", "redis_url": redis_url, "outage_timeout_ms": 500,
                    "outage_probe_seconds": 0.5},
        "links": {"secret": LINKS_SECRET},
        "agents": {"accounts": {AGENT: {"role": "agent", "queues": ["security", "billing", "support", "orders"],
                                        "token_hash": hash_token(AGENT_TOKEN)}},
                   "dispatch_seconds": 0.5},
        "audiosocket": {"enabled": False},
        "fastagi": {"enabled": False},
        "outreach": {"enabled": False},
        # one SIP worker behind the node's SIP front (the node's own flood guard); the edge and
        # the tests' callers are on 127.0.0.1, the only peer (other loopback addresses get 403)
        "sip": {"enabled": True, "host": "127.0.0.1", "port": sip_port, "workers": 1, "peers": ["127.0.0.1"]},
        "voice": {"vad": {"engine": "webrtc"}, "asr": {"workers": 1, "cross_check": False}},
        "retention": {"enabled": False},
    }
    for section, values in (extra or {}).items():
        if isinstance(values, dict) and isinstance(settings.get(section), dict):
            settings[section] = {**settings[section], **values}
        else:
            settings[section] = values
    return settings


class Topology:
    """Redis, ``nodes`` gateway nodes and the Kamailio edge, started together."""

    def __init__(self, directory: Path, *, nodes: int = 2, node_extra: dict[str, Any] | None = None,
                 edge_defines: dict[str, str] | None = None) -> None:
        from tests.redis_server import RedisServer

        self.directory = directory
        (directory / "redis").mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(directory / "redis", durable=True)
        self.nodes: list[Node] = []
        self.edge: Edge | None = None
        try:
            for i in range(nodes):
                name = "abcdefgh"[i]
                nd = directory / f"node-{name}"
                nd.mkdir(parents=True, exist_ok=True)
                sip, web = free_port(pair=True), free_port(socket.SOCK_STREAM)
                self.nodes.append(Node(name, nd, sip, web, node_settings(name, nd, sip, web, self.redis.url,
                                                                           node_extra)))
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_ready()
            (directory / "edge").mkdir(exist_ok=True)
            self.edge = Edge(directory / "edge", free_port(), self.nodes, dict(edge_defines or {}))
            self.edge.start()
        except BaseException:
            self.close()
            raise

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def node_of_call(self, call_id: str, timeout: float = 20.0) -> Node:
        """The node whose log says it took the SIP call whose Call-ID starts with ``call_id``."""
        pattern = re.compile(rf"call {re.escape(call_id)}\S*: conversation")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if pattern.search(node.log()):
                    return node
            time.sleep(0.2)
        raise AssertionError(f"no node took call {call_id}\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        parts = [f"--- node {n.name} (alive {n.alive}):\n{n.tail(40)}" for n in self.nodes if n.starts]
        if self.edge is not None:
            parts.append("--- kamailio:\n" + "\n".join(self.edge.log().splitlines()[-30:]))
        return "\n".join(parts)

    def close(self) -> None:
        if self.edge is not None:
            self.edge.stop()
        for node in self.nodes:
            node.stop()
        self.redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--dir", help="where data and logs go (default: a new temp directory)")
    args = parser.parse_args()
    directory = Path(args.dir or tempfile.mkdtemp(prefix="voicegw-topology-"))
    topo = Topology(directory, nodes=args.nodes)
    assert topo.edge is not None
    print(f"redis      {topo.redis.url}")
    for node in topo.nodes:
        print(f"node {node.name}     sip 127.0.0.1:{node.sip_port}  web {node.url}  log {node.log_path}")
    print(f"edge       sip:bot@{topo.edge.address}  log {topo.edge.log_path}")
    print(f"agent desktop token (every node): {AGENT_TOKEN}")
    print("Ctrl-C stops everything", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        topo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
