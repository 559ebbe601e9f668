"""What became of a call the gateway placed, as each telephony channel learns it.

A channel places a call when the core emits ``Originate``; an answered call shows itself (the
voice session's ``CallStarted`` with ``outbound``). A call that is not answered is reported to
its conversation as :class:`~gateway.core.events.CallFailed` with one of the reasons in
:data:`~gateway.core.events.CALL_FAILURES`, mapped here from what the PBX or the far end said:

- AMI: the ``Reason`` of the ``OriginateResponse`` event, which is the ``AST_CONTROL_*`` value
  of the dialled channel's last state (``include/asterisk/frame.h``): 4 answered, 3 still
  ringing when the originate timeout hit (no answer), 5 busy, 8 congestion; 1 (hung up) and 0
  (no such channel or number, nothing reached) are failures.
- SIP: the final response to the INVITE. 486 Busy Here and 600 Busy Everywhere are busy, and so
  is 603 Decline (the person refused the call now: like busy, worth another try later); 408,
  480, 483 and 487 (the gateway's own CANCEL after its ring timeout) are no answer; 503 and the
  other 5xx are congestion (Asterisk's own mapping of causes 34 and 42); anything else failed.
- FreeSWITCH: the ``-ERR <CAUSE>`` of the ``originate``'s ``BACKGROUND_JOB`` result, a name
  from FreeSWITCH's Hangup Cause Code Table (Q.850 with FreeSWITCH's own additions):
  ``USER_BUSY`` (17, SIP 486/600) and ``CALL_REJECTED`` (21, SIP 603, busy as above) are busy;
  ``NO_ANSWER`` (19, the ``originate_timeout`` ran out), ``NO_USER_RESPONSE`` (18, SIP 480),
  ``ORIGINATOR_CANCEL`` (487) and ``RECOVERY_ON_TIMER_EXPIRE`` (102, SIP 408) are no answer;
  ``NORMAL_CIRCUIT_CONGESTION`` (34), ``SWITCH_CONGESTION`` (42) and
  ``NORMAL_TEMPORARY_FAILURE`` (41, SIP 503) are congestion; anything else
  (``UNALLOCATED_NUMBER``, ``GATEWAY_DOWN``, ``DESTINATION_OUT_OF_ORDER``, ...) failed.

The report goes to the core from a task of its own: a channel's ``Originate`` sink runs while
the core holds the conversation, so reporting from inside it would wait on itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from gateway.core.events import CallFailed

log = logging.getLogger(__name__)

AMI_ANSWERED = "4"
AMI_REASONS = {"3": "no_answer", "5": "busy", "8": "congestion"}
"""OriginateResponse ``Reason`` codes that say more than "failed"."""

SIP_BUSY = frozenset({486, 600, 603})
SIP_NO_ANSWER = frozenset({408, 480, 483, 487})
_SIP_STATUS = re.compile(r"not answered: (\d{3})\b")
_SIP_TIMEOUT = re.compile(r"not answered within")

FREESWITCH_CAUSES = {
    "USER_BUSY": "busy", "CALL_REJECTED": "busy",
    "NO_ANSWER": "no_answer", "NO_USER_RESPONSE": "no_answer", "ORIGINATOR_CANCEL": "no_answer",
    "RECOVERY_ON_TIMER_EXPIRE": "no_answer",
    "NORMAL_CIRCUIT_CONGESTION": "congestion", "SWITCH_CONGESTION": "congestion",
    "NORMAL_TEMPORARY_FAILURE": "congestion",
}
"""Hangup causes of a failed ``originate`` that say more than "failed"."""

CallFailedReport = Callable[[str, str, str], Awaitable[None]]
"""``async f(conversation_id, reason, detail)``: a call placed for that conversation was not answered."""


@dataclass(frozen=True)
class OriginateOutcome:
    """How one placed call ended before (or at) answer. True when answered."""

    answered: bool
    reason: str = ""
    """'' when answered, else one of ``CALL_FAILURES``."""
    detail: str = ""

    def __bool__(self) -> bool:
        return self.answered


def ami_outcome(response: str, reason_code: str) -> OriginateOutcome:
    """The outcome an ``OriginateResponse`` (``Response``, ``Reason``) reports."""
    code = str(reason_code or "").strip()
    if response == "Success" and code in ("", AMI_ANSWERED):
        return OriginateOutcome(True, detail=f"reason {code or '?'}")
    return OriginateOutcome(False, AMI_REASONS.get(code, "failed"), f"reason {code or '?'}")


def sip_status_reason(status: int) -> str:
    """The failure reason of a final SIP response ``status`` (>= 300)."""
    if status in SIP_BUSY:
        return "busy"
    if status in SIP_NO_ANSWER:
        return "no_answer"
    if 500 <= status < 600:
        return "congestion"
    return "failed"


def sip_outcome(error: str) -> OriginateOutcome:
    """The outcome of an outbound SIP call that ended in ``error`` (the endpoint's message,
    which carries the final status: "call not answered: 486 Busy Here", also through the SIP
    workers' link, or the ring timeout: "... not answered within 60 s")."""
    match = _SIP_STATUS.search(error)
    if match:
        return OriginateOutcome(False, sip_status_reason(int(match.group(1))), f"sip {match.group(1)}")
    if _SIP_TIMEOUT.search(error):
        return OriginateOutcome(False, "no_answer", "ring timeout")
    return OriginateOutcome(False, "failed", error[:120])


def freeswitch_outcome(result: str) -> OriginateOutcome:
    """The outcome of a ``BACKGROUND_JOB`` body: ``+OK <uuid>`` answered, ``-ERR <CAUSE>`` not."""
    text = result.strip()
    if text.startswith("+OK"):
        return OriginateOutcome(True, detail=text[:80])
    cause = text[4:].split()[0] if text.startswith("-ERR") and len(text.split()) > 1 else ""
    return OriginateOutcome(False, FREESWITCH_CAUSES.get(cause, "failed"), (cause or text)[:80])


def report_to_core(core: Any) -> CallFailedReport:
    """A report that feeds ``CallFailed`` to the conversation in ``core`` (errors are logged)."""

    async def report(conversation_id: str, reason: str, detail: str) -> None:
        if not conversation_id:
            return
        try:
            await core.handle(conversation_id, CallFailed(reason=reason, detail=detail))
        except Exception as exc:  # the conversation may be gone (erased); the call is over either way
            log.warning("conversation %s: call outcome %s not recorded: %s", conversation_id, reason, exc)

    return report


class OutcomeTasks:
    """Background tasks of one channel: placing calls and reporting what became of them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
