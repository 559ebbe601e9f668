"""Placing the core's calls through FreeSWITCH: an inbound event socket client (mod_event_socket).

With ``freeswitch.originate_enabled`` the gateway connects to FreeSWITCH's event socket
(``esl_host``:``esl_port``, 8021 by default), answers its ``auth/request`` with ``auth
<esl_password>``, subscribes with ``event plain BACKGROUND_JOB`` and carries out each
:class:`~gateway.core.actions.Originate` the core emits as::

    bgapi originate {origination_caller_id_number=+15550001111,voicegw_conversation_id=<id>,
        voicegw_callback=<nonce>,voicegw_number=+15556667777,originate_timeout=30}
        sofia/gateway/carrier/+15556667777 '&socket(127.0.0.1:8084 async full)'
    Job-UUID: <the gateway's own id for the job>

(one line; ``dial_string`` is the template, ``{number}`` the E.164 number, ``{digits}`` the
same without ``+``). FreeSWITCH answers ``+OK Job-UUID: ...`` at once and, when the call is
over or answered, sends a ``BACKGROUND_JOB`` event with that Job-UUID whose body is the
originate's result: ``+OK <channel uuid>`` once the called party answered (the channel then runs
``socket`` and arrives at the gateway's outbound socket server, :mod:`freeswitch_server`, with
the variables above), or ``-ERR <CAUSE>``, a hangup cause mapped to the core's ``CallFailed``
reasons in :func:`~gateway.telephony.call_outcomes.freeswitch_outcome` and reported to the
conversation. The answered call hands ``voicegw_callback`` back to the core, which alone
decides whether it is the call it placed (docs/trust.md), and runs answering-machine detection
like SIP and AMI calls.

Bounded: only ``+`` and 7-15 digits are dialled, and nothing that could end a variable, the
variable block or the command (``{ } , ' & " ;`` spaces, line breaks) reaches the originate
string from the conversation id, the nonce or the caller id; connect and authentication
within ``connect_timeout_seconds``, each reply within ``command_timeout_seconds``, each result
within the ring time plus :data:`JOB_GRACE_SECONDS`; at most ``max_ringing`` calls placed and not
yet answered (one more is reported as congestion); the event socket reconnects with backoff
(1 s doubling up to ``reconnect_max_seconds``). A call that cannot be placed (the event socket
down, a refused command, a lost connection while ringing) is reported failed for its
conversation; the gateway goes on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import OrderedDict, deque
from typing import Any

from gateway.config import Settings
from gateway.core.actions import Originate
from gateway.health import ChannelHealth
from gateway.limits import SessionCap
from gateway.telephony import freeswitch as esl
from gateway.telephony.call_outcomes import (CallFailedReport, OriginateOutcome, OutcomeTasks, freeswitch_outcome,
                                             report_to_core)

log = logging.getLogger(__name__)

CALLBACK_VARIABLE = "voicegw_callback"
"""Channel variable carrying the core's nonce for the call (read back by the outbound socket server)."""
NUMBER_VARIABLE = "voicegw_number"
"""Channel variable carrying the number the gateway dialled (the far end of the answered call)."""
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
"""What the gateway dials: ``+`` and 7 to 15 digits (the core's outbound policy speaks E.164)."""
UNSAFE = frozenset("{}[],'\"&;| \t\r\n\\")
"""Characters that would end a ``{var=value}`` entry, the block, the originate's arguments or
the command; none may come from a value the gateway puts in the originate string."""
JOB_GRACE_SECONDS = 15.0
"""Beyond the ring time, how long a BACKGROUND_JOB may take (the answer, the socket application starting)."""
RECONNECT_FIRST_SECONDS = 1.0
READ_CHUNK = 65536
MAX_EARLY_RESULTS = 64
"""Results whose Job-UUID is not yet known (a FreeSWITCH that ignores the gateway's Job-UUID): kept this many."""


class OriginateRefused(ValueError):
    """The originate cannot be sent as asked (a number or value the gateway will not dial)."""


def _safe(value: str, what: str) -> str:
    if any(c in UNSAFE for c in value) or any(ord(c) < 32 for c in value):
        raise OriginateRefused(f"{what} has characters that cannot go into an originate string")
    return value


def originate_command(settings: Settings, number: str, conversation_id: str, callback: str,
                      socket_address: str) -> str:
    """The ``bgapi originate`` line for one call (validated; raises :class:`OriginateRefused`)."""
    cfg = settings.freeswitch
    if not E164.match(number):
        raise OriginateRefused(f"not an E.164 number: {number[:40]!r}")
    variables = []
    if cfg.caller_id_number:
        variables.append(f"origination_caller_id_number={_safe(cfg.caller_id_number, 'freeswitch.caller_id_number')}")
    variables.append(f"{_safe(cfg.conversation_variable, 'conversation_variable')}="
                     f"{_safe(conversation_id, 'the conversation id')}")
    if callback:
        variables.append(f"{CALLBACK_VARIABLE}={_safe(callback, 'the callback nonce')}")
    variables.append(f"{NUMBER_VARIABLE}={number}")
    variables.append(f"originate_timeout={int(cfg.originate_timeout_seconds)}")
    target = cfg.dial_string.format(number=number, digits=number[1:])
    if any(c in " \t\r\n'{}" for c in target):
        raise OriginateRefused("freeswitch.dial_string makes a target with spaces, quotes or braces")
    _safe(socket_address, "the outbound socket address")
    return f"bgapi originate {{{','.join(variables)}}}{target} '&socket({socket_address} async full)'"


def _masked(number: str) -> str:
    return "..." + number[-4:] if len(number) > 4 else "..."


class FreeSwitchOriginator:
    """The inbound event socket connection that places calls; the core's ``Originate`` sink."""

    def __init__(self, settings: Settings, socket_address: str, report: CallFailedReport | None = None,
                 node: SessionCap | None = None):
        self.settings = settings
        self.node = node  # the voice pipeline's voice.max_calls: no call placed that it would refuse
        self.cfg = settings.freeswitch
        self.socket_address = socket_address
        self.report = report
        self.connected = False
        self.ringing = 0
        self.backoff = RECONNECT_FIRST_SECONDS
        self._writer: asyncio.StreamWriter | None = None
        self._replies: deque[asyncio.Future[esl.EslMessage]] = deque()
        self._jobs: dict[str, asyncio.Future[str]] = {}
        self._early: OrderedDict[str, str] = OrderedDict()
        self._auth_request = asyncio.Event()
        self._outcomes = OutcomeTasks()
        self._runner: asyncio.Task[None] | None = None
        self.where = f"{self.cfg.esl_host}:{self.cfg.esl_port}"

    # --- connection ----------------------------------------------------------------------------
    def start(self) -> "FreeSwitchOriginator":
        """Connect in the background (and keep reconnecting): FreeSWITCH down does not stop the gateway."""
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="freeswitch-originate")
        return self

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except (OSError, asyncio.TimeoutError, TimeoutError, esl.ProtocolError) as exc:
                log.warning("FreeSWITCH event socket %s: %s; retrying in %.0f s", self.where,
                            exc or type(exc).__name__, self.backoff)
            except Exception:  # noqa: BLE001 - a bug here must not stop the reconnecting
                log.exception("FreeSWITCH event socket %s: failed; retrying in %.0f s", self.where, self.backoff)
            self._lost()
            await asyncio.sleep(self.backoff)
            self.backoff = min(self.backoff * 2, float(self.cfg.reconnect_max_seconds))

    async def _session(self) -> None:
        cfg = self.cfg
        reader, writer = await asyncio.wait_for(asyncio.open_connection(cfg.esl_host, cfg.esl_port),
                                                cfg.connect_timeout_seconds)
        self._writer = writer
        self._auth_request.clear()
        reading = asyncio.get_running_loop().create_task(self._read(reader), name="freeswitch-originate-reader")
        handshake = asyncio.get_running_loop().create_task(self._handshake(), name="freeswitch-originate-auth")
        try:
            done, _ = await asyncio.wait({handshake, reading}, timeout=cfg.connect_timeout_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
            if handshake not in done:  # silent, or the socket closed before authenticating
                handshake.cancel()
                await asyncio.gather(handshake, return_exceptions=True)
                if reading in done:
                    reading.result()
                raise TimeoutError(f"no authentication within {cfg.connect_timeout_seconds:.1f} s")
            handshake.result()
            self.connected, self.backoff = True, RECONNECT_FIRST_SECONDS
            log.info("FreeSWITCH event socket %s: authenticated; placing calls", self.where)
            await reading
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            writer.close()

    async def _handshake(self) -> None:
        await self._auth_request.wait()
        reply = await self._command(esl.encode_command(f"auth {self.cfg.esl_password}"))
        if not reply.ok:
            raise esl.ProtocolError(f"authentication refused ({reply.reply_text or 'no reply text'}): "
                                    "check freeswitch.esl_password")
        reply = await self._command(esl.encode_command("event plain BACKGROUND_JOB"))
        if not reply.ok:
            raise esl.ProtocolError(f"event subscription refused: {reply.reply_text}")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = esl.EslParser()
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                parser.receive_eof()
                raise ConnectionResetError("FreeSWITCH closed the event socket")
            for msg in parser.receive_data(data):
                self._dispatch(msg)

    def _dispatch(self, msg: esl.EslMessage) -> None:
        ctype = msg.content_type
        if ctype == "auth/request":
            self._auth_request.set()
        elif ctype in ("command/reply", "api/response"):
            while self._replies:
                fut = self._replies.popleft()
                if not fut.done():
                    fut.set_result(msg)
                    return
        elif ctype == "text/event-plain":
            event = msg.event()
            if event.name == "BACKGROUND_JOB":
                self._result(event.get("Job-UUID"), event.body.decode("utf-8", "replace"))
        elif ctype == "text/disconnect-notice":
            raise ConnectionResetError("FreeSWITCH disconnected the event socket")

    def _result(self, job: str, body: str) -> None:
        fut = self._jobs.get(job)
        if fut is not None:
            if not fut.done():
                fut.set_result(body)
            return
        self._early[job] = body  # its reply is still on the way (or another client's job)
        while len(self._early) > MAX_EARLY_RESULTS:
            self._early.popitem(last=False)

    def _lost(self) -> None:
        """The event socket went away: waiting commands and ringing calls fail."""
        self.connected = False
        self._writer = None
        for fut in [*self._replies, *self._jobs.values()]:
            if not fut.done():
                fut.set_exception(ConnectionError("the FreeSWITCH event socket was lost"))
        self._replies.clear()

    async def _command(self, data: bytes) -> esl.EslMessage:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("the FreeSWITCH event socket is not connected")
        fut: asyncio.Future[esl.EslMessage] = asyncio.get_running_loop().create_future()
        self._replies.append(fut)
        self._writer.write(data)
        return await asyncio.wait_for(fut, self.cfg.command_timeout_seconds)

    # --- placing calls -------------------------------------------------------------------------
    async def originate(self, number: str, conversation_id: str, callback: str = "") -> OriginateOutcome:
        """Place one call and wait for its result: answered (``+OK``) or the cause it failed with."""
        line = originate_command(self.settings, number, conversation_id, callback, self.socket_address)
        if not self.connected:
            raise ConnectionError(f"the FreeSWITCH event socket {self.where} is not connected")
        job = str(uuid.uuid4())
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._jobs[job] = fut
        try:
            reply = await self._command(esl.encode_command(line, {"Job-UUID": job}))
            if not reply.ok:
                return OriginateOutcome(False, "failed", f"bgapi refused: {reply.reply_text[:80]}")
            given = reply.headers.get("Job-UUID", job)
            if given != job:  # a FreeSWITCH that chose its own Job-UUID
                self._jobs[given] = self._jobs.pop(job)
                job = given
                if job in self._early:
                    fut.set_result(self._early.pop(job))
            log.info("conversation %s: FreeSWITCH originate to %s queued (job %s)", conversation_id,
                     _masked(number), job)
            body = await asyncio.wait_for(fut, self.cfg.originate_timeout_seconds + JOB_GRACE_SECONDS)
        finally:
            self._jobs.pop(job, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: a lost socket fails the reply and the job at once
        return freeswitch_outcome(body)

    async def originate_sink(self, conversation_id: str, action: Originate) -> None:
        """The core's sink for :class:`Originate`: the call rings in the background (longer than a
        sink may hold its conversation); one not answered is reported as failed."""
        conv = action.conversation_id or conversation_id
        if self.node is not None and self.node.full:  # its session would be refused once answered
            self._not_answered(conv, action.number, OriginateOutcome(
                False, "congestion", f"{self.node.active} calls in progress ({self.node.setting}); not placed"))
            return
        if self.ringing >= self.cfg.max_ringing:
            self._not_answered(conv, action.number, OriginateOutcome(
                False, "congestion", f"{self.ringing} calls ringing (freeswitch.max_ringing)"))
            return
        self.ringing += 1
        self._outcomes.spawn(self._place(conv, action), f"freeswitch-originate-{conv}")

    async def _place(self, conversation_id: str, action: Originate) -> None:
        try:
            outcome = await self.originate(action.number, conversation_id, action.callback)
        except OriginateRefused as exc:
            outcome = OriginateOutcome(False, "failed", f"refused: {exc}"[:120])
        except (ConnectionError, asyncio.TimeoutError, TimeoutError) as exc:
            outcome = OriginateOutcome(False, "failed", (str(exc) or "no result in time")[:120])
        finally:
            self.ringing -= 1
        if outcome:
            log.info("conversation %s: FreeSWITCH call to %s answered (%s)", conversation_id,
                     _masked(action.number), outcome.detail)
        else:
            self._not_answered(conversation_id, action.number, outcome)

    def _not_answered(self, conversation_id: str, number: str, outcome: OriginateOutcome) -> None:
        log.warning("conversation %s: FreeSWITCH call to %s not answered: %s (%s)", conversation_id,
                    _masked(number), outcome.reason, outcome.detail)
        if self.report is not None:
            self._outcomes.spawn(self.report(conversation_id, outcome.reason, outcome.detail),
                                 f"outcome-{conversation_id}")

    # --- running part --------------------------------------------------------------------------
    def health(self) -> ChannelHealth:
        if self.connected:
            return ChannelHealth("freeswitch_originate", True,
                                 f"event socket {self.where}, {self.ringing} calls ringing")
        return ChannelHealth("freeswitch_originate", False,
                             f"event socket {self.where} not connected (retrying; calls are reported failed)")

    async def close(self) -> None:
        self._outcomes.cancel()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        self._lost()


def outbound_socket_address(settings: Settings, socket_port: int = 0) -> str:
    """Where FreeSWITCH connects answered calls: ``outbound_socket``, or this gateway's own server."""
    cfg = settings.freeswitch
    return cfg.outbound_socket or f"{cfg.host}:{socket_port or cfg.port}"


async def start_freeswitch_originate(settings: Settings, core: Any, socket_port: int = 0,
                                     node: SessionCap | None = None) -> FreeSwitchOriginator:
    """Place the core's calls through FreeSWITCH (``freeswitch.originate_enabled``); ``socket_port``:
    the port the outbound socket server bound (when configured as 0); ``node``: the voice
    pipeline's cap (``voice.max_calls``), full: a call is not placed."""
    originator = FreeSwitchOriginator(settings, outbound_socket_address(settings, socket_port),
                                      report_to_core(core), node).start()
    core.register_sink(Originate, originator.originate_sink)
    return originator
