"""The transcript people read (agents, supervisors): one line per entry of the conversation's log.

A line says who (customer, bot, agent, system), on which channel, what (the text as logged,
redacted), and where it stands in the log (``seq``), so a page merging a transcript read once
with lines arriving live shows each line once. What people did (an agent joined, a hand-back,
a supervisor's steering) is worded as a system line, never as the customer's words.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from gateway.context.store import LoggedEvent
from gateway.core.channels import Channel


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


STAFF_LINES = {
    "AgentConnected": lambda p: f"{p.get('name') or p.get('agent_id', '')} joined",
    "HandBack": lambda p: f"{p.get('agent_id', '')} handed back to the bot at {p.get('journey', '')}"
                          f"{'/' + p['step'] if p.get('step') else ''}",
    "Disposition": lambda p: f"{p.get('agent_id', '')} closed it: {p.get('code', '')}",
    "AgentFollowUp": lambda p: f"{p.get('agent_id', '')} sent a follow-up ({p.get('via', '')}"
                               f"{' ' + p['purpose'] if p.get('purpose') else ''})",
    "AgentDropped": lambda p: f"{p.get('agent_id', '')} disconnected; back in the queue",
    "TakeOver": lambda p: f"supervisor {p.get('supervisor', '')} took it over"
                          f"{' for ' + p['agent'] if p.get('agent') else ''}",
    "Steer": lambda p: f"supervisor {p.get('supervisor', '')} steered the bot: {p.get('instruction', '')}"
                       f"{' ' + p['step'] if p.get('step') else ''}",
    "QueueChoice": lambda p: f"the customer chose: {p.get('choice', '')}",
}
"""Transcript wording of what people did (never shown as the customer's words)."""
NOT_IN_TRANSCRIPT = frozenset({"AgentSay", "AgentJoined", "AgentLeft", "StaffNotice", "ScreenPop"})
"""Actions whose event is already in the transcript (an agent's message), or that are no line."""


def transcript_line(event: LoggedEvent) -> dict[str, Any] | None:
    """One line of the transcript an agent or supervisor reads (``seq``: its place in the log)."""
    line = _transcript_line(event)
    if line is not None:
        line["seq"] = event.seq
    return line


def _transcript_line(event: Any) -> dict[str, Any] | None:
    payload = event.payload
    channel = Channel.of(event.channel)
    who = "bot" if channel is Channel.BOT else "customer"
    text = payload.get("text") or ""
    if event.kind in NOT_IN_TRANSCRIPT:
        return None
    if event.kind == "AgentMessage":
        return {"at": _iso(event.at), "channel": "agent", "who": "agent", "kind": event.kind,
                "agent": payload.get("agent_id", ""), "text": text, "message_id": payload.get("message_id", "")}
    if event.kind in STAFF_LINES:
        return {"at": _iso(event.at), "channel": event.channel, "who": "system", "kind": event.kind,
                "text": STAFF_LINES[event.kind](payload)}
    if channel is Channel.SYSTEM:  # what the core noted itself: a lock, a refused call
        reason = payload.get("reason") or ""
        return {"at": _iso(event.at), "channel": "system", "who": "system", "kind": event.kind,
                "text": event.kind + (f" ({reason})" if reason else "")}
    if event.kind == "DtmfPressed":
        text = f"[DTMF {payload.get('digit', '')}]"
    elif event.kind in ("CallStarted", "ChatStarted", "ChannelClosed", "LinkOpened", "FormSubmitted",
                        "CallAccepted", "CallFailed", "OptOut", "TransferFailed"):
        who, text = "system", event.kind + (f" ({payload.get('reason') or payload.get('purpose') or ''})"
                                            if payload.get("reason") or payload.get("purpose") else "")
    elif event.kind in ("Transfer", "SendFollowUp", "Originate", "Hangup", "OfferCall"):
        who = "system"
        detail = payload.get("queue") or payload.get("template") or payload.get("reason") or payload.get("text") or ""
        text = f"{event.kind}: {detail}" if detail else event.kind
    if not text:
        return None
    line = {"at": _iso(event.at), "channel": event.channel, "who": who, "kind": event.kind, "text": text}
    if payload.get("message_id"):
        line["message_id"] = payload["message_id"]
    return line
