"""SIP worker processes behind the SIP front: more simultaneous calls than one pjsua2 endpoint holds.

``SipWorkerPool`` (``sip.workers`` > 0) starts the front on ``sip.host:sip.port`` and that many
worker processes (``worker.py``), each a ``SipEndpoint`` on the next ports up (``port + 1 + i``;
ephemeral ports when ``sip.port`` is 0). The calls' voice sessions run here, in the gateway
process, with the shared core and recognizers; a worker carries SIP and RTP only.

A worker that dies (a crash in pjsip, a kill) costs only its own calls: their sessions are
stopped, the front stops sending it calls, and it is started again after a short pause.
``originate`` places outbound calls on the least loaded worker.

Per worker, ``WorkerLink`` is the gateway's end of the link: it opens a ``VoiceSession`` for each
call the worker announces, feeds it the caller's frames, answers the worker's frame credits with
the session's bot frames, and passes the session's events on (``_follow``): a cut-in, a hang-up
and its end as messages, a transfer as a request the worker's media leg carries out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import socket
import sys
from typing import Any, Callable, TypeVar

from gateway.config import SipSettings
from gateway.telephony.sip import ipc
from gateway.telephony.sip.endpoint import peer_allowed
from gateway.telephony.sip.front import SipFront
from gateway.telephony.sip.runtime import CALLS_PER_PROCESS, SipError
from gateway.voice.port import (
    CallAudio,
    CallOpened,
    CallsFull,
    ClearAudio,
    HangUp,
    SessionEnded,
    SessionEvent,
    TransferCall,
    VoiceSessions,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

READY_TIMEOUT_S = 30.0
"""A worker's endpoint starts in well under a second; this bounds a stuck one."""
RESTART_DELAY_S = 1.0
REQUEST_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class WorkerLink:
    """The gateway's end of one worker's link (see the module docstring)."""

    def __init__(self, index: int, pipeline: VoiceSessions, link: ipc.Link, proc: asyncio.subprocess.Process) -> None:
        self.index = index
        self.pipeline = pipeline
        self.link = link
        self.proc = proc
        self.sessions: dict[int, CallAudio] = {}
        self.ports: dict[str, int] = {}
        self.calls: list[str] = []
        self.rejected = 0
        self.rtp_timeouts = 0  # its calls hung up for want of RTP
        self.registered = False
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.on_calls: Any = None  # pool callback: (index, call ids)
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._rids = itertools.count(1)
        self.serving: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def request(self, op: str, *, timeout: float = REQUEST_TIMEOUT_S, **fields: Any) -> Any:
        """Ask the worker to do ``op``; its answer, or ``SipError``."""
        if self.link.closed:
            raise SipError(f"SIP worker {self.index} is gone")
        rid = next(self._rids)
        fut = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        self.link.send_json(t="req", rid=rid, op=op, **fields)
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise SipError(f"SIP worker {self.index} did not answer {op} within {timeout:.0f} s") from None
        finally:
            self._replies.pop(rid, None)
        if not reply.get("ok"):
            raise SipError(reply.get("error", f"{op} failed"))
        return reply.get("value")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(self) -> None:
        """Read the worker's messages until its link closes; then end its calls' sessions."""
        try:
            while True:
                try:
                    kind, payload = await self.link.read()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if kind == ipc.KIND_AUDIO_IN:
                    sid, pcm = ipc.split_audio(payload)
                    session = self.sessions.get(sid)
                    if session is not None:
                        self._guard(sid, session.push_audio, pcm)
                elif kind == ipc.KIND_PULL:
                    sid, frames = ipc.split_pull(payload)
                    session = self.sessions.get(sid)
                    for _ in range(min(frames, 50) if session is not None else 0):
                        pcm = self._guard(sid, session.pull_frame)
                        if pcm is None:
                            break
                        self.link.send(ipc.KIND_AUDIO_OUT, ipc.audio_payload(sid, pcm))
                elif kind == ipc.KIND_JSON:
                    self._control(ipc.decode_json(payload))
                else:
                    raise ipc.LinkError(f"unexpected message kind {kind}")
        except ipc.LinkError as exc:
            log.error("SIP worker %d: bad message: %s; dropping the link", self.index, exc)
        finally:
            self.link.close()
            if not self.ready.done():
                self.ready.set_exception(SipError(f"SIP worker {self.index} exited before it was ready"))
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_result({"ok": False, "error": f"SIP worker {self.index} is gone"})
            for session in list(self.sessions.values()):
                self._spawn(self._stop(session, "SIP worker lost"))
            self.sessions.clear()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=STOP_TIMEOUT_S + 2)

    def _guard(self, sid: int, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - one call's session error must not stop the others
            log.exception("SIP worker %d call %d: voice session failed; hanging up", self.index, sid)
            session = self.sessions.pop(sid, None)
            if session is not None:
                self.link.send_json(t="ended", sid=sid, reason="error")
                self._spawn(self._stop(session, "error"))
            return None

    def _control(self, msg: dict[str, Any]) -> None:
        t = msg["t"]
        if t == "open":
            self._spawn(self._open(msg))
        elif t == "dtmf":
            session = self.sessions.get(int(msg["sid"]))
            if session is not None:
                self._guard(int(msg["sid"]), session.push_dtmf, str(msg.get("digit", ""))[:1])
        elif t == "stop":
            sid = int(msg["sid"])
            session = self.sessions.pop(sid, None)
            self._spawn(self._stop(session, str(msg.get("reason", "hangup")), sid))
        elif t == "reply":
            fut = self._replies.get(int(msg.get("rid", 0)))
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif t == "calls":
            self.calls = [str(c) for c in msg.get("calls", [])]
            self.rejected = int(msg.get("rejected", 0))
            self.rtp_timeouts = int(msg.get("rtp_timeouts", 0))
            self.registered = bool(msg.get("registered", False))
            if self.on_calls is not None:
                self.on_calls(self.index, self.calls)
        elif t == "ready" and not self.ready.done():
            self.ports = {str(k): int(v) for k, v in msg.get("ports", {}).items()}
            self.ready.set_result(msg)
        elif t == "failed" and not self.ready.done():
            self.ready.set_exception(SipError(f"SIP worker {self.index} failed to start: {msg.get('error')}"))

    async def _open(self, msg: dict[str, Any]) -> None:
        sid = int(msg["sid"])
        try:
            session = self.pipeline.session(
                call_id=str(msg["call_id"]), sample_rate=int(msg.get("rate", 8000)),
                caller_id=str(msg.get("caller_id", "")), dialed=str(msg.get("dialed", "")),
                conversation_id=str(msg.get("conversation_id", "")), outbound=bool(msg.get("outbound", False)),
                channel=str(msg.get("channel", "voice")), callback=str(msg.get("callback", "")),
                attestation=str(msg.get("attestation", "")))
            self.sessions[sid] = session
            await session.start()
        except Exception as exc:  # noqa: BLE001 - this call fails alone
            log.log(logging.WARNING if isinstance(exc, CallsFull) else logging.ERROR,
                    "SIP worker %d call %s: voice session failed to start: %s", self.index, msg.get("call_id"), exc)
            self.sessions.pop(sid, None)
            self.link.send_json(t="opened", sid=sid, error=str(exc) or type(exc).__name__)
            return
        events = session.next_events()
        opened = next((e.conversation_id for e in events if isinstance(e, CallOpened)), "")
        self.link.send_json(t="opened", sid=sid, conversation_id=opened)
        await self._follow(sid, session, [e for e in events if not isinstance(e, CallOpened)])

    async def _follow(self, sid: int, session: CallAudio, events: list[SessionEvent]) -> None:
        """Pass the session's events to the worker until the session has ended."""
        while True:
            for event in events:
                if isinstance(event, ClearAudio):
                    self.link.send_json(t="clear", sid=sid)
                elif isinstance(event, TransferCall):
                    self._spawn(self._transfer(sid, event))
                elif isinstance(event, HangUp):
                    self.link.send_json(t="hangup", sid=sid, reason=event.reason)
                elif isinstance(event, SessionEnded):
                    if self.sessions.get(sid) is session:
                        self.link.send_json(t="ended", sid=sid, reason=event.reason)
                    return
            if self.link.closed:
                return
            events = await session.wait_events()

    async def _transfer(self, sid: int, event: TransferCall) -> None:
        try:
            ok = bool(await self.request("transfer", sid=sid, conversation_id=event.conversation_id,
                                         action=dataclasses.asdict(event.action), timeout=REQUEST_TIMEOUT_S))
        except SipError as exc:
            log.warning("transfer on worker %d failed: %s", self.index, exc)
            ok = False
        event.answer(ok)

    async def _stop(self, session: CallAudio | None, reason: str, sid: int = 0) -> None:
        if session is not None:
            try:
                await asyncio.wait_for(session.stop(reason), STOP_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - the call is over either way
                log.warning("SIP worker %d: session stop failed: %s", self.index, exc)
        if sid:
            self.link.send_json(t="stopped", sid=sid)


class SipWorkerPool:
    """The SIP front and its worker processes; the same surface as ``SipEndpoint`` for the channel."""

    def __init__(self, settings: SipSettings, pipeline: VoiceSessions) -> None:
        self.settings = settings
        self.pipeline = pipeline
        node = getattr(pipeline, "calls", None)  # VoicePipeline's voice.max_calls (a test's stand-in has none)

        def node_full() -> bool:  # SIP calls whose session is not open yet count too
            if node is None:
                return False
            unopened = self.front.load() - sum(len(link.sessions) for link in self.links.values())
            return bool(node.full or node.active + max(0, unopened) >= node.limit)
        self.front = SipFront(settings.host, settings.port, capacity=CALLS_PER_PROCESS,
                              max_calls=settings.max_calls,
                              peer_allowed=lambda source: settings.mode != "trunk"
                              or peer_allowed(source, settings.peers),
                              new_calls_per_second=settings.max_new_calls_per_second,
                              source_calls_per_second=settings.source_calls_per_second,
                              rate_exempt=lambda source: bool(settings.peers) and peer_allowed(source, settings.peers),
                              node_full=node_full)
        self.links: dict[int, WorkerLink] = {}
        self._supervisors: dict[int, asyncio.Task[None]] = {}
        self._closing = False
        self.restarts = 0
        self.registered = asyncio.Event()

    # ---- the SipEndpoint surface used by the channel, tests and benches -------------------------
    @property
    def port(self) -> int:
        return self.front.port

    @property
    def ports(self) -> dict[str, int]:
        return {"udp": self.front.port}

    @property
    def rejected(self) -> int:
        return sum(link.rejected for link in self.links.values()) + self.front.counters["busy"] \
            + self.front.counters["forbidden"]

    @property
    def rtp_timeouts(self) -> int:
        """Calls the workers hung up because their far end sent no more RTP."""
        return sum(link.rtp_timeouts for link in self.links.values())

    def _on_calls(self, index: int, calls: list[str]) -> None:
        self.front.report(index, calls)
        if any(link.registered for link in self.links.values()):
            self.registered.set()
        else:
            self.registered.clear()

    @property
    def legs(self) -> dict[str, Any]:
        """Calls in progress, by SIP Call-ID, across the workers."""
        return {cid: link.index for link in self.links.values() for cid in link.calls}

    def worker_stats(self) -> list[dict[str, Any]]:
        """Per worker: its process id, its SIP port and the calls it holds."""
        return [{"index": link.index, "pid": link.proc.pid, "port": link.ports.get("udp", 0),
                 "calls": len(link.calls), "alive": link.proc.returncode is None}
                for link in sorted(self.links.values(), key=lambda lk: lk.index)]

    async def media_stats(self) -> list[dict[str, float]]:
        out: list[dict[str, float]] = []
        for link in list(self.links.values()):
            try:
                out.extend((await link.request("stats", timeout=5.0)).get("media", []))
            except SipError:
                pass
        return out

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the front, start every worker and wait until all are ready (raises ``SipError``)."""
        if "udp" not in self.settings.transports:
            raise SipError("sip.workers needs the udp transport: the SIP front listens on UDP")
        try:
            await self.front.start()
        except OSError as exc:
            raise SipError(f"cannot bind the SIP front on {self.settings.host}:{self.settings.port}: {exc}") from None
        try:
            await asyncio.gather(*(self._start_worker(i) for i in range(self.settings.workers)))
        except BaseException:
            await self.close()
            raise
        for index in range(self.settings.workers):
            self._supervisors[index] = asyncio.create_task(self._supervise(index), name=f"sip-worker-{index}")
        log.info("SIP %s mode on %s (front, UDP) with %d workers of %d calls; workers on %s",
                 self.settings.mode, self.front.address, self.settings.workers, CALLS_PER_PROCESS,
                 ", ".join(str(link.ports.get("udp")) for link in self.links.values()))

    def _worker_spec(self, index: int) -> dict[str, Any]:
        s = self.settings
        worker_settings = s.model_dump(mode="json")
        worker_settings.update(workers=0, max_calls=CALLS_PER_PROCESS,
                               port=s.port + 1 + index * 2 if s.port else 0)
        return {"settings": worker_settings, "index": index, "front": self.front.address,
                "register": index == 0, "log_level": logging.getLevelName(logging.getLogger().level)}

    async def _start_worker(self, index: int) -> WorkerLink:
        parent, child = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.telephony.sip.worker", str(child.fileno()), str(index),
                pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            child.close()
        reader, writer = await asyncio.open_connection(sock=parent, limit=ipc.MAX_MESSAGE * 2)
        link = WorkerLink(index, self.pipeline, ipc.Link(reader, writer), proc)
        link.link.send_json(t="config", **self._worker_spec(index))
        link.on_calls = self._on_calls
        self.links[index] = link
        link.serving = asyncio.create_task(link.serve(), name=f"sip-worker-link-{index}")
        try:
            await asyncio.wait_for(asyncio.shield(link.ready), READY_TIMEOUT_S)
        except (asyncio.TimeoutError, SipError) as exc:
            await self._kill(link)
            raise SipError(f"SIP worker {index} did not start: {exc or 'timeout'}") from None
        self.front.set_worker(index, (self._worker_host(), link.ports["udp"]))
        return link

    def _worker_host(self) -> str:
        host = self.settings.host
        return host if host not in ("", "0.0.0.0") else "127.0.0.1"

    async def _supervise(self, index: int) -> None:
        """Restart a worker that went away (its calls are already ended by its link)."""
        while not self._closing:
            link = self.links[index]
            await link.proc.wait()
            if link.serving is not None:
                await link.serving
            self.front.set_worker(index, None)
            if self._closing:
                return
            log.error("SIP worker %d exited with %s; its calls have ended; restarting it", index,
                      link.proc.returncode)
            self.restarts += 1
            await asyncio.sleep(RESTART_DELAY_S)
            while not self._closing:
                try:
                    await self._start_worker(index)
                    break
                except (SipError, OSError) as exc:
                    log.error("SIP worker %d did not restart: %s; retrying in %.0f s", index, exc,
                              RESTART_DELAY_S * 5)
                    await asyncio.sleep(RESTART_DELAY_S * 5)

    async def _kill(self, link: WorkerLink) -> None:
        link.link.close()
        if link.proc.returncode is None:
            link.proc.kill()
            await link.proc.wait()

    async def close(self) -> None:
        """Stop the workers (each hangs up its calls and unregisters), then the front."""
        self._closing = True
        for task in self._supervisors.values():
            task.cancel()
        for link in self.links.values():
            link.link.send_json(t="quit")
            await link.link.drain()
        for link in self.links.values():
            try:
                await asyncio.wait_for(link.proc.wait(), 15)
            except asyncio.TimeoutError:
                log.warning("SIP worker %d did not stop; killing it", link.index)
                await self._kill(link)
            if link.serving is not None:
                await asyncio.wait({link.serving}, timeout=STOP_TIMEOUT_S + 3)
        self.front.close()

    # ---- calls ----------------------------------------------------------------------------------
    async def originate(self, target: str, conversation_id: str = "", *, timeout: float = 60.0,
                        callback: str = "") -> CallAudio:
        """Place a call on the least loaded worker; returns its started voice session."""
        if self.front.node_full():  # not placed: its session would be refused when the callee answers
            raise SipError("busy: the node holds its most calls (voice.max_calls)")
        ready = [link for link in self.links.values() if not link.link.closed and link.ready.done()
                 and not link.ready.exception()]
        if not ready:
            raise SipError("no SIP worker is running")
        link = min(ready, key=lambda lk: (len(lk.calls) + len(lk.sessions), lk.index))
        sid = await link.request("originate", target=target, conversation_id=conversation_id, timeout=timeout + 5,
                                 callback=callback, **{"timeout_s": timeout})
        session = link.sessions.get(int(sid))
        if session is None:
            raise SipError("the call ended as soon as it was answered")
        return session
