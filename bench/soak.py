"""Soak: N gateway nodes behind Kamailio with Redis, a steady load of SIP calls for a while.

    .venv/bin/python -m bench.soak [--nodes 2] [--workers 1] [--load 2.0] [--minutes 10]
                                   [--call-seconds 20] [--sample-seconds 10] [--via edge|front|worker]

Brings up the test topology (``tests/scale/topology.py``: redis-server, N ``voicegw serve`` with
``sip.workers`` SIP workers each, Kamailio with ``deploy/kamailio/kamailio.cfg``) on loopback and
keeps ``load`` times the rated number of calls offered at all times (rated: 4 calls per SIP
worker, the pjsua2 wheel's call table, times workers times nodes): SIPp callers through the edge,
each playing a tone for ``call-seconds`` and hanging up, a new one started as each ends. Over
rated, the nodes answer 486 and the edge tries the next node; those calls count as refused, not
dropped.

Prints, every ``sample-seconds``: calls up, the load average, RSS and open file descriptors of
every process (Redis, each Kamailio process, each node's gateway and SIP worker processes); at
the end: calls completed / refused / dropped (answered but not ended cleanly), call setup time
p50/p95 (INVITE sent to 200 OK received, at the caller, through the edge), the gateway's media
figures per call (frames each way, underruns), events lost (a call's conversation in Redis
whose event sequence has a gap or no ``ChannelClosed``), and memory and descriptors first vs
last sample per process (flat is the target). Never fails; figures only.

``--via front`` calls the nodes' SIP fronts directly (round robin, no Kamailio on the path) and
``--via worker`` their first SIP worker (no front either): the same figures, to weigh what each
hop costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALLS_PER_WORKER = 4
"""What one SIP worker holds (pjsua2's compiled-in call table): the rated load's unit."""


@dataclass
class Outcome:
    name: str
    code: int  # SIPp's exit status (0: the call was answered, carried and hung up cleanly)
    final: int  # the INVITE's final status as the caller saw it (0: none)
    setup_s: float | None  # INVITE sent to 200 OK received


@dataclass
class Sample:
    at: float
    up: int  # callers running (SIPp processes)
    held: int  # calls the gateway holds (taken, not ended), from the nodes' logs
    load: tuple[float, float, float]
    procs: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # label: (RSS kB, fds, CPU s)


def _stamp(line: str) -> float | None:
    found = re.search(r"(\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d\.\d+)", line)
    if not found:
        return None
    return datetime.strptime(f"{found.group(1)} {found.group(2)}", "%Y-%m-%d %H:%M:%S.%f").timestamp()


def read_outcome(workdir: Path, name: str, code: int) -> Outcome:
    """The INVITE's final status and setup time, from SIPp's message trace."""
    path = workdir / f"{name}.msg.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    sent = final = None
    status = 0
    stamp = None
    for line in text.splitlines():
        if line.startswith("-----"):
            stamp = _stamp(line)
            continue
        if line.startswith("INVITE ") and sent is None:
            sent = stamp
        found = re.match(r"SIP/2\.0 (\d{3}) ", line)
        if found and int(found.group(1)) >= 200 and status == 0:
            status = int(found.group(1))
            final = stamp
    setup = final - sent if (status == 200 and sent is not None and final is not None) else None
    return Outcome(name, code, status, setup)


def _pgid_members() -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        groups.setdefault(int(fields[2]), []).append(int(entry))
    return groups


TICKS = os.sysconf("SC_CLK_TCK")


def _rss_fds(pid: int) -> tuple[int, int, float] | None:
    """(RSS kB, open descriptors, CPU seconds so far) of one process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rfind(")") + 2:].split()
        return rss, fds, (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, AttributeError, IndexError, ValueError):
        return None


def _what(pid: int) -> str:
    """A child's role: the module it runs (``sip.worker``, ``asr.worker``...) or its command."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    if b"python" in Path(argv[0].decode(errors="replace")).name.encode() and b"-m" in argv:
        module = argv[argv.index(b"-m") + 1].decode(errors="replace")
        return ".".join(module.split(".")[-2:])
    return Path(argv[0].decode(errors="replace")).name


def sample(topo, up: int) -> Sample:
    """RSS and descriptors of every daemon of the topology (by process group), the load average."""
    leaders: list[tuple[str, int]] = []
    if topo.redis.process is not None:
        leaders.append(("redis", topo.redis.process.pid))
    if topo.edge is not None and topo.edge.proc is not None:
        leaders.append(("kamailio", topo.edge.proc.pid))
    for node in topo.nodes:
        if node.proc is not None:
            leaders.append((f"node-{node.name}", node.proc.pid))
    groups = _pgid_members()
    out = Sample(time.monotonic(), up, held(topo), os.getloadavg())
    for label, leader in leaders:
        members = sorted(groups.get(leader, [leader]))
        for i, pid in enumerate(members):
            figures = _rss_fds(pid)
            if figures is None:
                continue
            name = label if pid == leader else f"{label}/{_what(pid)}#{i}"
            out.procs[name] = figures
    return out


async def run_call(workdir: Path, target: str, name: str, seconds: float) -> Outcome:
    from tests.scale.calls import short_call

    proc = short_call(workdir, target, name, seconds=seconds, caller=name.replace("-", ""))
    await asyncio.to_thread(proc.communicate)
    return read_outcome(workdir, name, proc.returncode)


def conversations(topo, names: list[str]) -> dict[str, str]:
    """Call name: the conversation id its node logged for it."""
    found: dict[str, str] = {}
    for node in topo.nodes:
        for name, cid in re.findall(r"call (soak-\d+)-\S*: conversation (\w+)", node.log()):
            found[name] = cid
    return {n: found[n] for n in names if n in found}


async def events_lost(redis_url: str, calls: dict[str, str], expected: int) -> tuple[int, int]:
    """(answered calls with no conversation, or whose events in Redis have a gap, do not start
    with CallStarted or do not end with ChannelClosed; conversations checked)."""
    from tests.scale.conversations import events_of

    lost = expected - len(calls)
    for cid in calls.values():
        deadline = time.monotonic() + 5
        while True:
            events = await events_of(redis_url, cid)
            whole = ([e.seq for e in events] == list(range(1, len(events) + 1)) and bool(events)
                     and events[0].kind == "CallStarted" and events[-1].kind == "ChannelClosed")
            if whole or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        lost += not whole
    return lost, len(calls)


def held(topo) -> int:
    """Soak calls the nodes' SIP workers took and have not ended (the gateway's own count)."""
    total = 0
    for node in topo.nodes:
        log = node.log()
        taken = set(re.findall(r"call (soak-\S+) from .* ringing", log))
        total += sum(1 for cid in taken if f"call {cid} ended" not in log)
    return total


def media_figures(topo, names: list[str]) -> dict[str, int]:
    totals = {"calls": 0, "frames_in": 0, "frames_out": 0, "underruns": 0}
    logs = [n.log() for n in topo.nodes]
    for name in names:
        for log in logs:
            found = re.search(rf"call {re.escape(name)}-\S* media stats (\{{.*\}})", log)
            if found:
                import ast

                stats = ast.literal_eval(found.group(1))
                totals["calls"] += 1
                for key in ("frames_in", "frames_out", "underruns"):
                    totals[key] += int(stats.get(key, 0))
                break
    return totals


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def soak(args: argparse.Namespace) -> None:
    from tests.scale.topology import Topology

    rated = CALLS_PER_WORKER * args.workers * args.nodes
    offered = max(1, round(rated * args.load))
    directory = Path(args.dir or tempfile.mkdtemp(prefix="voicegw-soak-"))
    print("real: redis-server, Kamailio (deploy/kamailio/kamailio.cfg), "
          f"{args.nodes} `voicegw serve` nodes with {args.workers} SIP worker(s) each (pjsua2, real RTP, "
          "the real conversation core and journeys, WebRTC VAD + one Whisper worker), SIPp callers over UDP/RTP")
    print("scripted: each caller plays a 2 s tone in a loop for --call-seconds and hangs up (no speech, "
          "so no recognition load); the load is kept constant by starting a caller as one ends")
    print(f"callers send INVITEs to: {args.via}")
    print(f"rated {rated} calls ({CALLS_PER_WORKER} per SIP worker x {args.workers} x {args.nodes} nodes), "
          f"offered {offered} at all times ({args.load:g}x), for {args.minutes:g} min; data and logs in {directory}",
          flush=True)
    topo = Topology(directory, nodes=args.nodes,
                    node_extra={"sip": {"workers": args.workers}} if args.workers != 1 else None)
    workdir = directory / "callers"
    workdir.mkdir(exist_ok=True)
    outcomes: list[Outcome] = []
    samples: list[Sample] = []
    started = time.monotonic()
    end = started + args.minutes * 60
    counter = 0
    running: set[asyncio.Task[Outcome]] = set()
    try:
        assert topo.edge is not None
        samples.append(sample(topo, 0))
        next_sample = time.monotonic() + args.sample_seconds
        print(f"{'t s':>6} {'up':>4} {'held':>4} {'load':>16}  per process: RSS MB / fds", flush=True)
        while time.monotonic() < end or running:
            while time.monotonic() < end and len(running) < offered:
                counter += 1
                node = topo.nodes[counter % len(topo.nodes)]
                target = {"edge": topo.edge.address, "front": f"127.0.0.1:{node.sip_port}",
                          "worker": f"127.0.0.1:{node.sip_port + 1}"}[args.via]
                running.add(asyncio.create_task(run_call(workdir, target, f"soak-{counter}", args.call_seconds)))
                await asyncio.sleep(0.2)  # spread the INVITEs (the edge's call rate is per second)
            done, _ = await asyncio.wait(running, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                running.discard(task)
                outcomes.append(task.result())
            if time.monotonic() >= next_sample:
                s = sample(topo, len(running))
                samples.append(s)
                next_sample += args.sample_seconds
                procs = "  ".join(f"{k} {v[0] / 1024:.0f}/{v[1]}" for k, v in s.procs.items())
                print(f"{s.at - started:6.0f} {s.up:4d} {s.held:4d} {' '.join(f'{x:.2f}' for x in s.load):>16}  {procs}",
                      flush=True)
        samples.append(sample(topo, 0))
        most = max(s.held for s in samples)
        answered = [o for o in outcomes if o.final == 200]
        completed = [o for o in answered if o.code == 0]
        dropped = [o for o in answered if o.code != 0]
        refused = [o for o in outcomes if o.final in (486, 503, 480)]
        other = [o for o in outcomes if o.final not in (200, 486, 503, 480)]
        setups = [o.setup_s for o in answered if o.setup_s is not None]
        print(f"\ncalls: {len(outcomes)} placed, {len(completed)} completed, {len(refused)} refused (nodes full), "
              f"{len(dropped)} dropped (answered, not ended cleanly: {[o.name for o in dropped][:10]}), "
              f"{len(other)} with no or another final answer ({sorted({o.final for o in other})}); "
              f"most calls held at once by the gateway {most} (rated {rated})")
        if setups:
            print(f"call setup via {args.via}, INVITE to 200 OK at the caller: p50 {pct(setups, 0.5) * 1000:.0f} ms, "
                  f"p95 {pct(setups, 0.95) * 1000:.0f} ms, max {max(setups) * 1000:.0f} ms ({len(setups)} calls)")
        media = media_figures(topo, [o.name for o in answered])
        if media["calls"]:
            print(f"gateway media ({media['calls']} calls): frames in {media['frames_in']}, out {media['frames_out']}, "
                  f"underruns {media['underruns']} ({100 * media['underruns'] / max(1, media['frames_out']):.2f} %)")
        calls = conversations(topo, [o.name for o in answered])
        lost, checked = await events_lost(topo.redis.url, calls, len(answered))
        print(f"events lost: {lost} answered calls of {len(answered)} have no conversation or an event log in Redis "
              f"with a gap or without CallStarted ... ChannelClosed ({checked} conversations read)")
        first, last = samples[0], samples[-1]
        peak = max(samples, key=lambda s: sum(v[0] for v in s.procs.values()))
        print(f"\nper process, first vs last sample (RSS MB, fds); load average at the end "
              f"{' '.join(f'{x:.2f}' for x in last.load)}, peak total RSS "
              f"{sum(v[0] for v in peak.procs.values()) / 1024:.0f} MB at t={peak.at - started:.0f} s")
        for name in sorted(set(first.procs) | set(last.procs)):
            a, b = first.procs.get(name), last.procs.get(name)
            fmt = (lambda v: f"{v[0] / 1024:7.1f} MB {v[1]:4d} fds" if v else "        (absent)")
            print(f"  {name:32s} {fmt(a)}  ->  {fmt(b)}")
        loaded = [s for s in samples if s.up]
        if len(loaded) >= 2:
            span = loaded[-1].at - loaded[0].at
            cpu = {}
            for name in set(loaded[0].procs) & set(loaded[-1].procs):
                group = name.split("/")[0]
                cpu[group] = cpu.get(group, 0.0) + loaded[-1].procs[name][2] - loaded[0].procs[name][2]
            print(f"CPU while loaded ({span:.0f} s, {len(answered)} calls answered, {len(outcomes)} placed): " +
                  ", ".join(f"{g} {100 * c / span:.1f} % of a core" for g, c in sorted(cpu.items())))
        mid = [s for s in samples[1:-1] if s.up]
        if len(mid) >= 2:
            print("growth while loaded (second sample to last loaded sample, RSS MB):")
            for name in sorted(set(mid[0].procs) & set(mid[-1].procs)):
                print(f"  {name:32s} {(mid[-1].procs[name][0] - mid[0].procs[name][0]) / 1024:+7.1f} MB, "
                      f"fds {mid[-1].procs[name][1] - mid[0].procs[name][1]:+d}")
        if setups:
            print(f"(mean setup {statistics.mean(setups) * 1000:.0f} ms)")
    finally:
        for task in running:
            task.cancel()
        topo.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="SIP workers per node")
    parser.add_argument("--load", type=float, default=2.0, help="offered calls as a multiple of the rated")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--call-seconds", type=float, default=20.0)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--via", choices=("edge", "front", "worker"), default="edge",
                        help="where callers send INVITEs: Kamailio, a node's SIP front, a node's SIP worker")
    parser.add_argument("--dir", help="data and logs (default: a new temp directory, kept)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    asyncio.run(soak(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
