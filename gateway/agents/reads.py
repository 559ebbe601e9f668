"""Every read of a conversation by a person goes through here: authorize, audit, then read.

The REST context API, the screen-pop over the desktop socket and any page showing a
conversation call :meth:`ConversationReader.read`. It fetches the context, asks
:func:`~gateway.agents.access.authorize` with the conversation's queue and assignments, and
writes the read (or the refusal) to the audit log *before* the context leaves: when the audit
log cannot be written, nothing is shown (:class:`~gateway.context.store.StoreError`).
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.agents.access import ConversationFacts, Permission, Via, authorize
from gateway.agents.accounts import Principal, Role
from gateway.agents.assignments import Assignments
from gateway.context.audit import AuditLog
from gateway.core.port import ConversationPort
from gateway.metrics import Metrics

log = logging.getLogger(__name__)


class ReadRefused(Exception):
    """``principal`` may not read that conversation; ``reason`` is safe to show them."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConversationReader:
    """Authorized, audited reads of conversations, and the record of who they were routed to."""

    def __init__(self, core: ConversationPort, assignments: Assignments, audit: AuditLog, metrics: Metrics) -> None:
        self._core = core
        self.assignments = assignments
        self.audit = audit
        self._metrics = metrics

    async def facts(self, conversation_id: str, context: dict[str, Any]) -> ConversationFacts:
        return ConversationFacts.from_context(conversation_id, context,
                                              await self.assignments.agents_for(conversation_id))

    async def read(self, principal: Principal, conversation_id: str, *, via: Via, address: str = "") -> dict[str, Any]:
        """The context of ``conversation_id`` for ``principal``; :class:`LookupError` when there is
        no such conversation, :class:`ReadRefused` when they may not see it, ``StoreError`` when
        the audit log or the assignments cannot be reached."""
        context = await self._core.context(conversation_id)
        privileged = principal.role in (Role.SUPERVISOR, Role.ADMIN)
        facts = (ConversationFacts.from_context(conversation_id, context) if privileged
                 else await self.facts(conversation_id, context))
        decision = authorize(principal, Permission.READ_CONVERSATION, facts)
        detail = {"via": via.value, "address": address, "reason": decision.reason}
        if not decision:
            self._metrics.inc("voicegw_conversation_reads_refused_total", via=via.value)
            log.warning("conversation %s: %s %s refused (%s) from %s", conversation_id, principal.role.value,
                        principal.name, via.value, address or "-")
            await self.audit.write(actor=principal.name, role=principal.role.value, action="read_refused",
                                   conversation_id=conversation_id, detail=detail)
            raise ReadRefused(decision.reason)
        await self.audit.write(actor=principal.name, role=principal.role.value, action="read",
                               conversation_id=conversation_id, detail=detail)
        self._metrics.inc("voicegw_conversation_reads_total", via=via.value)
        return context

    async def assign(self, conversation_id: str, agent: str, *, how: str) -> None:
        """Record that ``conversation_id`` was routed to ``agent`` (every node sees it)."""
        await self.assignments.assign(conversation_id, agent, how=how)
        await self.audit.write(actor="system", role="system", action="assigned", conversation_id=conversation_id,
                               detail={"agent": agent, "how": how})
