"""Who may do what with a conversation: the one authorization function of the agent side.

Sans-IO: :func:`authorize` takes a :class:`~gateway.agents.accounts.Principal`, a
:class:`Permission` and, for conversation permissions, the :class:`ConversationFacts` that
decide it (the queue the conversation was transferred to, the agents it was routed to), and
returns a :class:`Decision` with a reason fit for a 403 and the audit log.

- An **agent** reads or takes a conversation only when it was routed to them (a screen-pop the
  router chose them for, or the call they answered, as AMI reports it) or when it was
  transferred to one of their queues (``*`` = every queue).
- A **supervisor** reads and takes every conversation and the SMS outbox.
- An **admin** does all that and reads the audit log.
- The journey dashboard and QA review (reading and overriding scores) are for supervisors and
  admins; erasing a customer's data and exporting it (``voicegw erase``, ``voicegw export``)
  for admins only.
- Outbound campaigns and the do-not-call list are run by supervisors and admins; only an admin
  takes a number off the list.

- Supervising (the live view, taking over, whispering to an agent, steering the bot) is for
  supervisors and admins; an agent accepts from the queue what they may take, and acts only in
  the conversations they hold (the queue's record says who, :mod:`gateway.agents.work`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping

from gateway.agents.accounts import ALL_QUEUES, Principal, Role


class Permission(str, enum.Enum):
    READ_CONVERSATION = "read_conversation"
    """See a conversation's context (REST, screen-pop, page)."""
    TAKE_CONVERSATION = "take_conversation"
    """Be routed a transferred conversation (the router asks before choosing an agent)."""
    READ_OUTBOX = "read_outbox"
    """See every SMS the gateway sent and received (the local outbox page)."""
    READ_AUDIT = "read_audit"
    """Read the audit log."""
    READ_ANALYTICS = "read_analytics"
    """See the journey dashboard (aggregates over every conversation)."""
    REVIEW_QA = "review_qa"
    """See QA scores of every conversation and override a score with a comment."""
    ERASE_CUSTOMER = "erase_customer"
    """Remove a customer's data from every store."""
    EXPORT_CUSTOMER = "export_customer"
    """Produce a customer's subject-access bundle."""
    MANAGE_CAMPAIGNS = "manage_campaigns"
    """Create, fill, start and pause outbound campaigns, read their outcomes, and put a number on
    the do-not-call list (a customer who asked an agent not to be called)."""
    REMOVE_DO_NOT_CALL = "remove_do_not_call"
    """Take a number off the do-not-call list (a mistaken entry): calls resume to someone who
    may have said stop, so only an admin."""
    SUPERVISE = "supervise"
    """See every live conversation on every channel and watch its transcript (the supervisor page)."""
    TAKE_OVER = "take_over"
    """Route a live conversation to an agent now, away from the bot or the queue."""
    WHISPER = "whisper"
    """Send the agent holding a conversation a private note."""
    STEER = "steer"
    """Tell the bot what to do next in a live conversation (a step, an agent offer, a polite end)."""


class Via(str, enum.Enum):
    """How a conversation was read (goes into the audit log)."""

    REST = "rest"
    SCREEN_POP = "screen-pop"
    PAGE = "page"


@dataclass(frozen=True)
class ConversationFacts:
    """What authorization needs to know about one conversation."""

    conversation_id: str
    queue: str = ""
    assigned: frozenset[str] = frozenset()

    @classmethod
    def from_context(cls, conversation_id: str, context: Mapping[str, Any],
                     assigned: frozenset[str] = frozenset()) -> "ConversationFacts":
        """Facts from the core's context (``transfer.queue``) and the recorded assignments."""
        transfer = context.get("transfer")
        queue = str(transfer.get("queue", "")) if isinstance(transfer, Mapping) else ""
        return cls(conversation_id, queue.strip().lower(), assigned)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def serves(principal: Principal, queue: str) -> bool:
    """Whether ``queue`` is one of the principal's own queues (roles aside)."""
    return bool(queue) and (queue.lower() in principal.queues or ALL_QUEUES in principal.queues)


def authorize(principal: Principal, permission: Permission,
              conversation: ConversationFacts | None = None) -> Decision:
    """May ``principal`` do ``permission`` (to ``conversation``)? Deny unless a rule allows."""
    role = principal.role
    if permission is Permission.READ_AUDIT:
        return Decision(role is Role.ADMIN, "admins read the audit log" if role is Role.ADMIN
                        else "only an admin reads the audit log")
    if permission in (Permission.ERASE_CUSTOMER, Permission.EXPORT_CUSTOMER):
        return Decision(role is Role.ADMIN, "admins erase and export customers' data" if role is Role.ADMIN
                        else "only an admin erases or exports a customer's data")
    if permission in (Permission.READ_ANALYTICS, Permission.REVIEW_QA):
        allowed = role in (Role.SUPERVISOR, Role.ADMIN)
        return Decision(allowed, f"{role.value}s see journeys and QA across every conversation" if allowed
                        else "journey analytics and QA review span every customer: supervisors and admins only")
    if permission is Permission.MANAGE_CAMPAIGNS:
        allowed = role in (Role.SUPERVISOR, Role.ADMIN)
        return Decision(allowed, f"{role.value}s run campaigns" if allowed
                        else "campaigns reach customers by phone: supervisors and admins only")
    if permission is Permission.REMOVE_DO_NOT_CALL:
        return Decision(role is Role.ADMIN, "admins correct the do-not-call list" if role is Role.ADMIN
                        else "only an admin takes a number off the do-not-call list")
    if permission is Permission.READ_OUTBOX:
        allowed = role in (Role.SUPERVISOR, Role.ADMIN)
        return Decision(allowed, f"{role.value}s see every SMS" if allowed
                        else "the outbox shows every customer's SMS: supervisors and admins only")
    if permission in (Permission.SUPERVISE, Permission.TAKE_OVER, Permission.WHISPER, Permission.STEER):
        allowed = role in (Role.SUPERVISOR, Role.ADMIN)
        return Decision(allowed, f"{role.value}s supervise live conversations" if allowed
                        else f"only a supervisor or an admin may {permission.value.replace('_', ' ')}")
    if permission in (Permission.READ_CONVERSATION, Permission.TAKE_CONVERSATION):
        if conversation is None:
            return Decision(False, "no conversation named")
        if role in (Role.SUPERVISOR, Role.ADMIN):
            return Decision(True, f"{role.value}s see every conversation")
        if principal.name in conversation.assigned:
            return Decision(True, f"routed to {principal.name}")
        if serves(principal, conversation.queue):
            return Decision(True, f"transferred to queue {conversation.queue}, served by {principal.name}")
        return Decision(False, f"conversation {conversation.conversation_id} was not routed to {principal.name} "
                               f"or to a queue they serve ({', '.join(sorted(principal.queues)) or 'none'})")
    return Decision(False, f"unknown permission {permission}")
