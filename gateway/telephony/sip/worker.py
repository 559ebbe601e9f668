"""A SIP worker process: one pjsua2 endpoint whose calls' voice sessions run in the gateway.

The ``pjsua2-python`` wheel holds ``CALLS_PER_PROCESS`` calls per endpoint and pjsua2 allows one
endpoint per process, so a gateway that takes more calls runs several of these behind its SIP
front (``front.py``; ``pool.py`` starts and supervises them). A worker is the usual
``SipEndpoint``; only its pipeline differs: ``RemotePipeline`` hands each call's session to the
gateway process over the link (``ipc.py``), where the real ``VoiceSession`` runs with the core,
the recognizers and the synthesizer that all workers share.

Per call, caller frames go up as they arrive; bot frames come down on credit: the worker asks
for one frame each time pjmedia's clock takes one (``KIND_PULL``), with ``PREFILL`` frames
asked ahead, so the queue between the two processes stays ``PREFILL`` frames deep and a
barge-in cuts the bot within a few frames. The session's events come down as messages
(``clear``, ``hangup``, ``ended``; a transfer as a request) and are the ``RemoteSession``'s own
events, so the call's media leg here carries them out as it would a local session's.

Run by the pool as ``python -m gateway.telephony.sip.worker FD INDEX`` (FD: its end of the
link). The first message on the link is its spec: ``settings`` (``sip`` settings, credentials
included, which is why they are not on the command line), ``index``, ``front``, ``register``.
The worker ends when the link closes: a gateway that dies takes its workers' calls down with
it instead of leaving them mute.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import sys
import types
from typing import TYPE_CHECKING, Any

from gateway.context.redaction.logs import install as install_log_redaction
from gateway.core.actions import Transfer
from gateway.telephony.sip import ipc
from gateway.telephony.sip.runtime import SipError
from gateway.voice.port import CallOpened, ClearAudio, EventStream, HangUp, SessionEnded, SessionEvent, TransferCall

if TYPE_CHECKING:
    from gateway.telephony.sip.endpoint import SipEndpoint

log = logging.getLogger(__name__)

PREFILL = 2
"""Bot frames asked ahead of pjmedia's clock (40 ms)."""
OPEN_TIMEOUT_S = 20.0
"""How long a call waits for the gateway to open its session."""
STOP_TIMEOUT_S = 10.0
TRANSFER_TIMEOUT_S = 25.0
"""A transfer the gateway asks for is answered within this (a REFER is given 15 s)."""
REPORT_S = 0.5
"""How often the worker reports its calls to the pool when they changed."""


class RemoteSession:
    """A call's voice session as the worker's media leg sees it (``gateway.voice.port.CallAudio``),
    backed by the real session in the gateway."""

    def __init__(self, worker: "WorkerSide", sid: int, **fields: Any) -> None:
        self.worker = worker
        self.sid = sid
        self.call_id: str = fields["call_id"]
        self.sample_rate: int = fields["sample_rate"]
        self.frame_bytes = self.sample_rate // 50 * 2
        self.conversation_id: str = fields["conversation_id"]
        self.fields = fields
        self.events = EventStream(self.call_id)
        self.silence = bytes(self.frame_bytes)
        self.ready: collections.deque[bytes] = collections.deque(maxlen=50)
        self.starved = 0
        self._stopped = False
        self._stop_ack: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Open the session in the gateway; raises ``SipError`` when the gateway refuses."""
        fut = asyncio.get_running_loop().create_future()
        self.worker.opening[self.sid] = fut
        f = self.fields
        self.worker.link.send_json(t="open", sid=self.sid, call_id=self.call_id, rate=self.sample_rate,
                                   caller_id=f["caller_id"], dialed=f["dialed"],
                                   conversation_id=self.conversation_id, outbound=f["outbound"],
                                   channel=f["channel"], callback=f["callback"], attestation=f["attestation"])
        try:
            reply = await asyncio.wait_for(fut, OPEN_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise SipError("the gateway did not open the voice session in time") from None
        finally:
            self.worker.opening.pop(self.sid, None)
        if reply.get("error"):
            raise SipError(f"the gateway refused the call: {reply['error']}")
        self.conversation_id = reply.get("conversation_id", "") or self.conversation_id
        self.events.emit(CallOpened(self.conversation_id))  # an outbound call is answered on it
        self.worker.link.send(ipc.KIND_PULL, ipc.pull_payload(self.sid, PREFILL))

    def push_audio(self, pcm: bytes) -> None:
        if not self._stopped:
            self.worker.link.send(ipc.KIND_AUDIO_IN, ipc.audio_payload(self.sid, pcm))

    def push_dtmf(self, digit: str) -> None:
        if not self._stopped:
            self.worker.link.send_json(t="dtmf", sid=self.sid, digit=digit)

    def pull_frame(self) -> bytes:
        """The next bot frame (silence while the gateway's is on its way); asks for one more."""
        if self._stopped:
            return self.silence
        self.worker.link.send(ipc.KIND_PULL, ipc.pull_payload(self.sid, 1))
        try:
            return self.ready.popleft()
        except IndexError:
            self.starved += 1
            return self.silence

    def next_events(self) -> list[SessionEvent]:
        return self.events.drain()

    async def wait_events(self) -> list[SessionEvent]:
        return await self.events.wait()

    def cleared(self) -> None:
        """The gateway's session was cut short: the frames already here are dropped too."""
        self.ready.clear()
        self.events.emit(ClearAudio("barge-in"))

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        """The gateway's session asks to transfer the call: this worker's leg carries it out."""
        reply: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.events.emit(TransferCall(conversation_id, action, reply))
        return await asyncio.wait_for(reply, TRANSFER_TIMEOUT_S)

    async def stop(self, reason: str = "hangup") -> None:
        """The call is over: stop the gateway's session and wait (bounded) until it has."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_ack = asyncio.get_running_loop().create_future()
        self.worker.link.send_json(t="stop", sid=self.sid, reason=reason)
        if self.worker.quitting:  # the gateway is shutting down: it stops its sessions itself
            self._stop_ack.set_result(None)
        try:
            await asyncio.wait_for(self._stop_ack, STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("call %s: the gateway did not confirm the end of its session", self.call_id)
        finally:
            self.worker.sessions.pop(self.sid, None)
            self.events.emit(SessionEnded(reason))

    @property
    def stats(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "starved": self.starved}


class RemotePipeline:
    """What the worker's ``SipEndpoint`` takes for a voice pipeline."""

    def __init__(self, worker: "WorkerSide") -> None:
        self.worker = worker

    def session(self, *, call_id: str, sample_rate: int = 8000, caller_id: str = "", dialed: str = "",
                conversation_id: str = "", outbound: bool = False, channel: str = "voice", callback: str = "",
                attestation: str = "", admitted: bool = False) -> RemoteSession:
        # the gateway's end takes the call's slot of voice.max_calls when it opens the session
        self.worker.next_sid += 1
        session = RemoteSession(self.worker, self.worker.next_sid, call_id=call_id, sample_rate=sample_rate,
                                caller_id=caller_id, dialed=dialed, conversation_id=conversation_id,
                                outbound=outbound, channel=channel, callback=callback, attestation=attestation)
        self.worker.sessions[session.sid] = session
        return session


class WorkerSide:
    """The worker's end of the link: sessions by id, requests from the gateway."""

    def __init__(self, link: ipc.Link) -> None:
        self.link = link
        self.endpoint: SipEndpoint | None = None  # set once started (run_worker)
        self.next_sid = 0
        self.sessions: dict[int, RemoteSession] = {}
        self.opening: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.quitting = False  # the gateway said quit: it no longer answers a call's stop

    async def serve(self) -> None:
        """Read the gateway's messages until the link closes."""
        while True:
            try:
                kind, payload = await self.link.read()
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if kind == ipc.KIND_AUDIO_OUT:
                sid, pcm = ipc.split_audio(payload)
                session = self.sessions.get(sid)
                if session is not None:
                    session.ready.append(pcm)
            elif kind == ipc.KIND_JSON:
                msg = ipc.decode_json(payload)
                if msg["t"] == "quit":
                    self.quitting = True
                    return
                self._control(msg)
            else:
                raise ipc.LinkError(f"unexpected message kind {kind}")

    def _control(self, msg: dict[str, Any]) -> None:
        t = msg["t"]
        sid = int(msg.get("sid", 0))
        session = self.sessions.get(sid)
        if t == "opened":
            fut = self.opening.get(sid)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif t == "clear" and session is not None:
            session.cleared()
        elif t == "hangup" and session is not None:
            session.events.emit(HangUp(str(msg.get("reason", "completed"))))
        elif t == "ended" and session is not None:
            session.events.emit(SessionEnded(str(msg.get("reason", "hangup"))))
        elif t == "stopped" and session is not None:
            if session._stop_ack is not None and not session._stop_ack.done():
                session._stop_ack.set_result(None)
        elif t == "req":
            self._spawn(self._request(msg))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _request(self, msg: dict[str, Any]) -> None:
        rid = msg.get("rid", 0)
        try:
            value = await self._do(msg)
        except Exception as exc:  # noqa: BLE001 - one request fails, the worker goes on
            self.link.send_json(t="reply", rid=rid, ok=False, error=str(exc) or type(exc).__name__)
        else:
            self.link.send_json(t="reply", rid=rid, ok=True, value=value)

    async def _do(self, msg: dict[str, Any]) -> Any:
        op = msg.get("op")
        assert self.endpoint is not None
        if op == "originate":
            session = await self.endpoint.originate(msg["target"], msg.get("conversation_id", ""),
                                                    timeout=float(msg.get("timeout_s", 60.0)),
                                                    callback=str(msg.get("callback", "")))
            assert isinstance(session, RemoteSession)
            return session.sid
        if op == "stats":
            return self.report()
        session = self.sessions.get(int(msg.get("sid", 0)))
        if session is None:
            raise SipError("the call has already ended")
        if op == "transfer":
            action = Transfer(**{k: tuple(v) if isinstance(v, list) else v for k, v in msg["action"].items()})
            return await session.transfer(msg.get("conversation_id", ""), action)
        raise SipError(f"unknown request {op!r}")

    def report(self) -> dict[str, Any]:
        ep = self.endpoint
        assert ep is not None
        return {"calls": sorted(leg.sip_call_id for leg in ep.legs.values() if leg.sip_call_id),
                "rejected": ep.rejected, "registered": ep.registered.is_set(), "media": ep.media_stats(),
                "rtp_timeouts": ep.rtp_timeouts}

    async def report_calls(self) -> None:
        """Tell the pool which calls this worker holds, whenever that changes (its load)."""
        last: Any = None
        while True:
            ep = self.endpoint
            assert ep is not None
            now = (sorted(leg.sip_call_id for leg in ep.legs.values() if leg.sip_call_id), ep.rejected,
                   ep.registered.is_set(), ep.rtp_timeouts)
            if now != last:
                self.link.send_json(t="calls", calls=now[0], rejected=now[1], registered=now[2],
                                    rtp_timeouts=now[3])
                last = now
            await asyncio.sleep(REPORT_S)


async def run_worker(fd: int) -> None:
    """The worker's life: read its spec, start the endpoint, report ready, serve until the link closes."""
    from gateway.telephony.sip.endpoint import SipEndpoint

    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock, limit=ipc.MAX_MESSAGE * 2)
    link = ipc.Link(reader, writer)
    try:  # the spec comes over the link, not the command line: it holds the SIP password
        kind, payload = await asyncio.wait_for(link.read(), OPEN_TIMEOUT_S)
        spec = ipc.decode_json(payload) if kind == ipc.KIND_JSON else {}
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ipc.LinkError) as exc:
        log.error("SIP worker: no spec from the gateway: %s", exc or type(exc).__name__)
        link.close()
        return
    logging.getLogger().setLevel(spec.get("log_level", "INFO"))
    side = WorkerSide(link)
    try:
        settings = worker_settings(spec["settings"])
        endpoint = SipEndpoint(settings, RemotePipeline(side), front=spec.get("front", ""),  # type: ignore[arg-type]
                               register=bool(spec.get("register", True)))
        side.endpoint = endpoint
        await endpoint.start()
    except (SipError, OSError, ValueError, KeyError) as exc:
        link.send_json(t="failed", error=str(exc))
        await link.drain()
        link.close()
        return
    link.send_json(t="ready", port=endpoint.port, ports=endpoint.ports)
    reporter = asyncio.create_task(side.report_calls())
    try:
        await side.serve()
    except ipc.LinkError as exc:
        log.error("SIP worker %s: bad message from the gateway: %s", spec.get("index"), exc)
    finally:
        reporter.cancel()
        await endpoint.close()
        for task in list(side.tasks):
            task.cancel()
        link.close()


def worker_settings(fields: dict[str, Any]) -> types.SimpleNamespace:
    """The gateway's ``sip`` settings as the worker reads them: validated by the gateway
    (``SipSettings``, dumped to JSON), so the worker does not load pydantic and the settings
    models for them (14 MB of every worker); lists come back as the tuples they were."""
    return types.SimpleNamespace(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def main() -> None:
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        sys.exit("usage: python -m gateway.telephony.sip.worker FD INDEX (started by the gateway)")
    logging.basicConfig(level="INFO", stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s sip-worker-{sys.argv[2]} %(name)s: %(message)s")
    install_log_redaction()
    asyncio.run(run_worker(int(sys.argv[1])))


if __name__ == "__main__":
    main()
