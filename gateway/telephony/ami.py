"""Asterisk Manager Interface client (panoramisk 1.4): originate, redirect, variables, events.

What it does for the gateway:

* **Originate** callbacks, chat-to-voice pivots and proactive outreach: ``Channel`` from
  ``ami.outbound_channel`` (``PJSIP/{number}@trunk``), into ``ami.outbound_context`` (``s``, 1)
  with ``VOICEGW_CONVERSATION`` and ``VOICEGW_OUTBOUND`` as channel variables; the dialplan
  there runs the ``voicebot`` route, which resumes that conversation. Registered as the core's
  sink for :class:`Originate`. Asterisk answers an async Originate with "successfully queued";
  the real outcome is the later ``OriginateResponse`` event with the same ActionID (Reason 4 =
  answered), which panoramisk returns as ``[Response, OriginateResponse]``. The sink lets the
  call ring in the background and reports a call not answered to ``call_failed_callbacks``
  (``CallFailed`` for the conversation, see :mod:`gateway.telephony.call_outcomes`).
* **Transfer** of a live call: ``Setvar`` of ``VOICEGW_CONVERSATION`` (inherited by the agent's
  leg as ``__VOICEGW_CONVERSATION``), ``VOICEGW_QUEUE``, ``VOICEGW_SKILLS``, ``VOICEGW_LANGUAGE``
  first, then ``Redirect`` to ``ami.agent_context``, extension = queue name, priority 1. The
  dialplan picks the queue by language and skills.
* **Events**: ``VarSet`` of ``VOICEGW_CONVERSATION`` tells which channel carries which
  conversation; ``QueueCallerJoin`` names the queue; ``AgentCalled`` the member interface the
  queue rings now (``agent_called_callbacks``: the desktop pops the conversation before the
  agent answers); ``AgentConnect`` (it comes *after* ``QueueCallerLeave``) the member interface
  that actually answered, so the conversation becomes that agent's through
  ``on_agent_connected(conversation_id, agent_interface)``; ``Hangup`` forgets. Interfaces map
  to desktop accounts by the accounts' ``interfaces``.
* **Reconnect** with exponential backoff (1 s doubling up to ``ami.reconnect_max_seconds``)
  when AMI drops or refuses the login (a bad login answers after 1 s, then Asterisk closes).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Awaitable, Callable

from panoramisk import Manager
from panoramisk.message import Message

from gateway.config import Settings
from gateway.core.actions import Originate, Transfer
from gateway.core.queue_wait import WaitEstimate, queue_wait_estimate
from gateway.telephony.call_outcomes import CallFailedReport, OriginateOutcome, OutcomeTasks, ami_outcome
from gateway.health import ChannelHealth
from gateway.limits import SessionCap
from gateway.telephony.asterisk_queues import queue_extension
from gateway.telephony.calls import CallRegistry, DialplanCallControl, LiveCall

log = logging.getLogger(__name__)
QUEUE_SUMMARY_TIMEOUT = 2.0
"""A queue that cannot be read this fast is not read: the transfer goes ahead without an offer."""

ACTION_TIMEOUT = 10.0
ORIGINATE_RING_SECONDS = 30
MAX_TRACKED_CHANNELS = 50_000
_NUMBER = re.compile(r"^\+?[0-9*#]{1,32}$")
CONVERSATION_VAR = "VOICEGW_CONVERSATION"

AgentCallback = Callable[[str, str], Awaitable[None]]


class AmiError(RuntimeError):
    """An AMI action failed or AMI is not connected."""


class _Manager(Manager):
    """panoramisk's Manager with the gateway's backoff instead of a fixed reconnect delay."""

    def __init__(self, owner: "AmiClient", **config: Any):
        super().__init__(**config)
        self._owner = owner

    def connection_made(self, f: "asyncio.Future[Any]") -> None:
        if not f.cancelled() and f.exception() is not None:
            self.reconnect_timeout = self._owner._next_delay()
            self._owner.connect_failures += 1
            log.warning("AMI %s:%s unreachable (%s); retrying in %.1f s", self.config["host"],
                        self.config["port"], f.exception(), self.reconnect_timeout)
        if self._owner.closing:
            return
        super().connection_made(f)

    def login(self, future: "asyncio.Future[Any]") -> bool:
        ok = bool(super().login(future))
        if not ok:
            log.error("AMI login as %r refused by %s:%s (check manager.conf)", self.config["username"],
                      self.config["host"], self.config["port"])
        return ok

    def connection_lost(self, exc: Any) -> None:
        self._owner._lost()
        if self._owner.closing:
            self._connected = False
            return
        self.reconnect_timeout = self._owner._next_delay()
        super().connection_lost(exc)

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if self._owner.closing:
            return None
        return super().connect(*args, **kwargs)


class AmiClient:
    """One AMI connection for the gateway process."""

    def __init__(self, settings: Settings, calls: CallRegistry | None = None, *,
                 on_agent_connected: AgentCallback | None = None,
                 initial_backoff: float = 1.0, ping_seconds: int = 10, node: SessionCap | None = None):
        self.settings = settings
        self.node = node  # the voice pipeline's voice.max_calls: no call placed that it would refuse
        self.cfg = settings.ami
        self.calls = calls if calls is not None else CallRegistry()
        self.initial_backoff = initial_backoff
        self.backoff = initial_backoff
        self.closing = False
        self.logins = 0
        self.connect_failures = 0
        self.agent_callbacks: list[AgentCallback] = [on_agent_connected] if on_agent_connected else []
        """``async f(conversation_id, agent_interface)``, called when a queue member answers."""
        self.call_failed_callbacks: list[CallFailedReport] = []
        """``async f(conversation_id, reason, detail)``, called when a call the sink placed is not answered."""
        self._outcomes = OutcomeTasks()
        self.agent_called_callbacks: list[AgentCallback] = []
        """``async f(conversation_id, agent_interface)``, called when the queue rings a member."""
        self.channel_conversations: dict[str, str] = {}
        self.queue_of: dict[str, str] = {}
        self.logged_in = asyncio.Event()
        self.manager = _Manager(
            self, host=self.cfg.host, port=self.cfg.port, username=self.cfg.username, secret=self.cfg.secret,
            events="on", ping_delay=ping_seconds, ping_interval=ping_seconds, reconnect_timeout=1,
            loop=asyncio.get_running_loop(), on_login=self._on_login,
        )
        self.manager.register_event("VarSet", self._on_varset)
        self.manager.register_event("QueueCallerJoin", self._on_queue_join)
        self.manager.register_event("AgentCalled", self._on_agent_called)
        self.manager.register_event("AgentConnect", self._on_agent_connect)
        self.manager.register_event("Hangup", self._on_hangup)

    # --- connection ------------------------------------------------------------------------

    async def start(self, wait: float = 0.0) -> "AmiClient":
        """Connect (in the background; a PBX that is down is retried with backoff)."""
        self.manager.connect()
        if wait > 0:
            try:
                await asyncio.wait_for(self.logged_in.wait(), wait)
            except asyncio.TimeoutError:
                log.warning("AMI not logged in after %.1f s; still trying", wait)
        return self

    async def close(self) -> None:
        """Log off (bounded) and stop reconnecting."""
        self.closing = True
        self._outcomes.cancel()
        if self.logged_in.is_set():
            try:
                await asyncio.wait_for(self.manager.send_action({"Action": "Logoff"}), 2.0)
            except (asyncio.TimeoutError, OSError, AttributeError):
                pass
        self.manager.close()

    @property
    def connected(self) -> bool:
        return self.logged_in.is_set()

    def health(self) -> ChannelHealth:
        """For ``/healthz``: logged in (transfers by Redirect, screen-pops and outbound calls work)."""
        where = f"{self.cfg.host}:{self.cfg.port}"
        if self.connected:
            return ChannelHealth("ami", True, f"logged in to {where}")
        return ChannelHealth("ami", False, f"not logged in to {where} (retrying; transfers go through the dialplan)")

    def _next_delay(self) -> float:
        delay = self.backoff
        self.backoff = min(self.backoff * 2, float(self.cfg.reconnect_max_seconds))
        return delay

    def _lost(self) -> None:
        if self.logged_in.is_set():
            log.warning("AMI connection to %s:%s lost", self.cfg.host, self.cfg.port)
        self.logged_in.clear()

    def _on_login(self, manager: Manager) -> None:
        self.logins += 1
        self.backoff = self.initial_backoff
        self.logged_in.set()
        log.info("AMI logged in to %s:%s as %s", self.cfg.host, self.cfg.port, self.cfg.username)

    async def action(self, action: dict[str, Any], timeout: float = ACTION_TIMEOUT) -> Any:
        """Send one action and return panoramisk's result (a Message, or a list for multi)."""
        if not self.connected or self.manager.protocol is None:
            raise AmiError(f"AMI not connected; {action.get('Action')} not sent")
        try:
            return await asyncio.wait_for(self.manager.send_action(dict(action)), timeout)
        except asyncio.TimeoutError:
            raise AmiError(f"AMI {action.get('Action')} not answered within {timeout} s") from None

    async def _ok(self, action: dict[str, Any]) -> Message:
        result = await self.action(action)
        first = result[0] if isinstance(result, list) else result
        if not first.success:
            raise AmiError(f"AMI {action['Action']} failed: {first.get('Message', first)}")
        return first

    # --- actions ---------------------------------------------------------------------------

    async def set_variable(self, channel: str, name: str, value: str) -> None:
        await self._ok({"Action": "Setvar", "Channel": channel, "Variable": name, "Value": value})

    async def get_variable(self, channel: str, name: str) -> str:
        """The value ("" when unset: Asterisk answers an empty ``Value:`` that panoramisk drops)."""
        msg = await self._ok({"Action": "Getvar", "Channel": channel, "Variable": name})
        return str(msg.get("Value", "") or "")

    async def redirect(self, channel: str, context: str, exten: str, priority: int = 1) -> None:
        await self._ok({"Action": "Redirect", "Channel": channel, "Context": context, "Exten": exten,
                        "Priority": str(priority)})

    async def hangup(self, channel: str, cause: int = 16) -> None:
        await self._ok({"Action": "Hangup", "Channel": channel, "Cause": str(cause)})

    async def originate(self, number: str, conversation_id: str, *, caller_id: str = "", callback: str = "",
                        ring_seconds: int = ORIGINATE_RING_SECONDS) -> OriginateOutcome:
        """Call ``number`` into the outbound context; the outcome the OriginateResponse reports
        (true when answered).

        ``callback`` (the core's nonce for this call) rides on the channel as ``VOICEGW_CALLBACK``;
        the voicebot route hands it back to the core, which so knows the answered call is its own."""
        if not _NUMBER.match(number):
            raise AmiError(f"refusing to originate to {number!r}: not a phone number")
        action = {
            "Action": "Originate",
            "Channel": self.cfg.outbound_channel.format(number=number),
            "Context": self.cfg.outbound_context,
            "Exten": "s",
            "Priority": "1",
            "Async": "true",
            "Timeout": str(ring_seconds * 1000),
            "Variable": [f"{CONVERSATION_VAR}={conversation_id}", "VOICEGW_OUTBOUND=1"]
            + ([f"VOICEGW_CALLBACK={callback}"] if callback else []),
        }
        if caller_id:
            action["CallerID"] = caller_id
        result = await self.action(action, timeout=ring_seconds + ACTION_TIMEOUT)
        messages = result if isinstance(result, list) else [result]
        if not messages[0].success:
            raise AmiError(f"AMI Originate refused: {messages[0].get('Message', '')}")
        final = messages[-1]
        if final.get("Event") == "OriginateResponse":
            outcome = ami_outcome(str(final.get("Response", "")), str(final.get("Reason", "")))
        else:
            outcome = OriginateOutcome(False, "failed", "no OriginateResponse")
        log.info("originate %s for conversation %s: %s (reason %s)", number, conversation_id,
                 "answered" if outcome else f"not answered: {outcome.reason}", final.get("Reason", "?"))
        return outcome

    async def transfer(self, channel: str, conversation_id: str, transfer: Transfer) -> None:
        """Tag ``channel`` for the screen-pop, then redirect it to the agents' context.
        ``VOICEGW_STATUS=transferred`` goes first: whatever ran on the channel (the voicebot
        route, a dialplan AudioSocket()) ends with -1 when it is redirected, and the variable
        is what tells the dialplan and the CDR that this was no hangup."""
        self.remember(channel, conversation_id)
        await self.set_variable(channel, f"__{CONVERSATION_VAR}", conversation_id)
        await self.set_variable(channel, "VOICEGW_QUEUE", agent_extension(transfer))
        await self.set_variable(channel, "VOICEGW_SKILLS", ",".join(transfer.skills))
        await self.set_variable(channel, "VOICEGW_LANGUAGE", transfer.language)
        await self.set_variable(channel, "VOICEGW_STATUS", "transferred")
        await self.redirect(channel, self.cfg.agent_context, agent_extension(transfer))
        log.info("conversation %s: %s redirected to %s@%s", conversation_id, channel,
                 agent_extension(transfer), self.cfg.agent_context)

    async def queue_wait(self, queue: str, family: str) -> WaitEstimate | None:
        """The core's queue probe for calls (gateway.core.queue_wait), from ``QueueSummary``:
        ``Callers`` waiting, agents ``LoggedIn`` and ``Available``, the average ``HoldTime`` (s).
        None when AMI is down or Asterisk has no such queue (the wait is not guessed)."""
        if family != "voice" or not self.connected:
            return None
        try:
            result = await self.action({"Action": "QueueSummary", "Queue": queue}, timeout=QUEUE_SUMMARY_TIMEOUT)
        except AmiError as exc:
            log.warning("QueueSummary for %s failed: %s", queue, exc)
            return None
        for message in result if isinstance(result, list) else [result]:
            if message.get("Event") == "QueueSummary" and message.get("Queue") == queue:
                def number(key: str) -> int:
                    try:
                        return int(str(message.get(key, "0") or 0))
                    except ValueError:
                        return 0
                callers, logged_in, available = number("Callers"), number("LoggedIn"), number("Available")
                seconds = queue_wait_estimate(callers, logged_in, available, float(number("HoldTime")) or None)
                return WaitEstimate(queue, seconds, callers, available, "asterisk")
        return None

    async def originate_sink(self, conversation_id: str, action: Originate) -> None:
        """The core's sink for :class:`Originate`: the call rings in the background (longer than
        a sink may hold its conversation); one not answered is reported as failed."""
        conv = action.conversation_id or conversation_id
        if not self.connected:
            self._not_answered(conv, action.number, AmiError("AMI not connected; Originate not sent"))
            return
        if self.node is not None and self.node.full:  # its AudioSocket call would be refused once answered
            self._not_answered(conv, action.number, AmiError(
                f"{self.node.active} calls in progress ({self.node.setting}); Originate not sent"))
            return
        self._outcomes.spawn(self._place(conv, action), f"originate-{conv}")

    async def _place(self, conversation_id: str, action: Originate) -> None:
        try:
            outcome = await self.originate(action.number, conversation_id, callback=action.callback)
        except AmiError as exc:
            self._not_answered(conversation_id, action.number, exc)
            return
        if not outcome:
            self._report(conversation_id, outcome)

    def _not_answered(self, conversation_id: str, number: str, exc: AmiError) -> None:
        log.warning("conversation %s: outbound call to %s failed: %s", conversation_id, number, exc)
        self._report(conversation_id, OriginateOutcome(False, "failed", str(exc)[:120]))

    def _report(self, conversation_id: str, outcome: OriginateOutcome) -> None:
        for callback in list(self.call_failed_callbacks):
            self._outcomes.spawn(callback(conversation_id, outcome.reason, outcome.detail), f"outcome-{conversation_id}")

    # --- events ----------------------------------------------------------------------------

    def remember(self, channel: str, conversation_id: str) -> None:
        if channel and conversation_id:
            self.channel_conversations[channel] = conversation_id
            while len(self.channel_conversations) > MAX_TRACKED_CHANNELS:
                self.channel_conversations.pop(next(iter(self.channel_conversations)))

    def channel_for(self, conversation_id: str) -> str:
        """The channel known to carry ``conversation_id`` ("" when none)."""
        record = self.calls.by_conversation(conversation_id)
        if record is not None and record.channel:
            return record.channel
        for channel, conv in reversed(list(self.channel_conversations.items())):
            if conv == conversation_id:
                return channel
        return ""

    def conversation_of(self, event: Message) -> str:
        """The conversation of the caller channel an event names."""
        conv = self.channel_conversations.get(str(event.get("Channel", "")), "")
        if conv:
            return conv
        record = self.calls.by_channel(str(event.get("Channel", "")))
        if record is not None:
            return record.conversation_id
        chanvars = event.get("ChanVariable", [])
        for item in chanvars if isinstance(chanvars, list) else [chanvars]:
            name, _, value = str(item).partition("=")
            if name.lstrip("_") == CONVERSATION_VAR:
                return value
        return ""

    def _on_varset(self, manager: Manager, event: Message) -> None:
        name = str(event.get("Variable", "")).lstrip("_")
        if name == CONVERSATION_VAR and event.get("Value"):
            self.remember(str(event.get("Channel", "")), str(event["Value"]))

    def _on_queue_join(self, manager: Manager, event: Message) -> None:
        conv = self.conversation_of(event)
        if conv:
            self.queue_of[conv] = str(event.get("Queue", ""))
            log.info("conversation %s waiting in queue %s (position %s)", conv, event.get("Queue"),
                     event.get("Position"))

    async def _on_agent_called(self, manager: Manager, event: Message) -> None:
        await self._agent_event("AgentCalled", "rings", event, self.agent_called_callbacks)

    async def _on_agent_connect(self, manager: Manager, event: Message) -> None:
        await self._agent_event("AgentConnect", "answered by", event, self.agent_callbacks)

    async def _agent_event(self, name: str, what: str, event: Message, callbacks: list[AgentCallback]) -> None:
        """A queue member event of the caller channel: hand (conversation, member interface) on."""
        conv = self.conversation_of(event)
        interface = str(event.get("Interface", "") or event.get("MemberName", ""))
        if not conv:
            log.debug("%s for %s: no conversation known", name, event.get("Channel"))
            return
        log.info("conversation %s %s %s (%s) in queue %s", conv, what, interface, event.get("MemberName", ""),
                 event.get("Queue", ""))
        for callback in list(callbacks):
            try:
                await callback(conv, interface)
            except Exception:  # a failing screen-pop must not stop AMI event handling
                log.exception("%s callback failed for conversation %s", name, conv)

    def _on_hangup(self, manager: Manager, event: Message) -> None:
        self.channel_conversations.pop(str(event.get("Channel", "")), None)


def agent_extension(transfer: Transfer) -> str:
    """The extension in the agents' context a transfer goes to: the queue name, dialplan-safe."""
    return queue_extension(transfer.queue)


class AmiCallControl:
    """CallControl for an AudioSocket call: AMI Redirect, else hand the transfer to the dialplan."""

    def __init__(self, ami: AmiClient, calls: CallRegistry, call: LiveCall):
        self.ami = ami
        self.calls = calls
        self.call = call
        self.dialplan = DialplanCallControl(calls, call)

    def _channel(self, conversation_id: str) -> str:
        record = self.calls.by_uuid(self.call.call_id)
        if record is not None and record.channel:
            return record.channel
        return self.ami.channel_for(conversation_id) or self.ami.channel_for(self.call.call_id)

    async def call_started(self, conversation_id: str) -> None:
        """Tag the caller's channel with the conversation id as soon as it is known."""
        channel = self._channel(conversation_id)
        if not channel or not self.ami.connected:
            return
        try:
            self.ami.remember(channel, conversation_id)
            await self.ami.set_variable(channel, CONVERSATION_VAR, conversation_id)
        except AmiError as exc:
            log.info("call %s: could not tag %s: %s", self.call.call_id, channel, exc)

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        channel = self._channel(conversation_id)
        if channel and self.ami.connected:
            try:
                await self.ami.transfer(channel, conversation_id, action)
                record = self.calls.by_uuid(self.call.call_id)
                if record is not None:
                    record.redirected = True
                return True
            except AmiError as exc:
                log.warning("call %s: AMI transfer failed (%s); handing it to the dialplan", self.call.call_id, exc)
        return await self.dialplan.transfer(conversation_id, action)
