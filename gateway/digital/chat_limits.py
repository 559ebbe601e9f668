"""Who may send a chat message or open a chat: per conversation first, per address only as a
coarse outer bound that never refuses a quiet customer for what others at its address send.

* A conversation (all its sockets) has ``chat.messages_per_minute`` tokens (a minute's worth at
  once, then one every 60/N s); reopening it spends one like a message.
* A client address (an office behind one NAT, a proxy's customers: see
  :mod:`gateway.client_address`) has ``chat.ip_messages_per_minute`` message tokens and
  ``chat.ip_new_chats_per_minute`` open tokens, and may hold ``chat.ip_max_sessions`` open chats;
  the node holds at most ``chat.max_sessions``.
* When the address's tokens are spent (someone at it floods), a conversation that is itself
  quiet (it has *tried* to send under ``QUIET_MESSAGES_PER_MINUTE`` lately, refused attempts
  included) still gets through, on a reserve as large as the address's own allowance that busy
  conversations cannot touch. An address therefore never gets more than twice its figures,
  and a flooder, busy by definition for as long as it floods, cannot spend the quiet
  customer's share. A conversation started while its address is under pressure (over its
  bound now, or refused for it within ``PRESSURE_SECONDS``) starts unproven: it earns its
  quietness at the human pace, so a flood script that reconnects for fresh conversations
  gains nothing from the reserve either.
* What remains: a brand-new chat has no identity to tell it from the flooder's next one, so it
  is bounded by the address alone (HTTP 429 while an attacker spends the address's new chats);
  and many long-lived chats at the address each keeping to a human pace are indistinguishable
  from that many customers.

Everything here is sans-IO: decisions and the seconds to wait; the chat channel turns them into
HTTP statuses and ``refused`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gateway.config import ChatSettings
from gateway.limits import KeyedCap, SessionCap, TokenBuckets

QUIET_MESSAGES_PER_MINUTE = 20
"""One message every 3 s for a minute is faster than a person types to a bot (short answers
come in bursts, which the bucket's minute-deep burst absorbs). A conversation below this pace
is quiet: what others at its address send never refuses it."""
REFUSAL_LOGS_PER_MINUTE = 6
"""Log lines about refused chats per client address and reason: a flood of refusals must not
become a flood of log lines (``voicegw_chat_refused_total`` counts every one)."""
PRESSURE_SECONDS = 60.0
"""An address refused for its bound stays under pressure this long: conversations started at it
meanwhile start unproven. A flood that pauses between waves is still the same flood."""
FULL_RETRY_SECONDS = 5.0
"""Retry-After when the node or the address holds its most open chats (the page retries)."""


@dataclass(frozen=True)
class Refusal:
    """Why something was refused (``code``: the metrics reason and the ``refused`` frame's code),
    when to retry, and the HTTP status for a chat that was not opened."""

    code: str
    retry_after: float
    status: int = 429


class ChatLimits:
    """The rate limits and open-chat caps of the web chat on one node."""

    def __init__(self, chat: ChatSettings, *, clock: Callable[[], float], metrics: Any = None) -> None:
        self.settings = chat
        self._messages = TokenBuckets(chat.messages_per_minute, clock=clock)
        self._quiet = TokenBuckets(QUIET_MESSAGES_PER_MINUTE, clock=clock)
        self._ip_messages = TokenBuckets(chat.ip_messages_per_minute, clock=clock)
        self._ip_messages_reserve = TokenBuckets(chat.ip_messages_per_minute, clock=clock)
        self._ip_opens = TokenBuckets(chat.ip_new_chats_per_minute, clock=clock)
        self._ip_opens_reserve = TokenBuckets(chat.ip_new_chats_per_minute, clock=clock)
        self._logs = TokenBuckets(REFUSAL_LOGS_PER_MINUTE, clock=clock)
        # one token refilled over PRESSURE_SECONDS: empty while the address was refused lately
        self._pressure = TokenBuckets(60.0 / PRESSURE_SECONDS, capacity=1.0, clock=clock)
        self.sessions = SessionCap("chat", chat.max_sessions)
        self._ip_sessions = KeyedCap(chat.ip_max_sessions)
        if metrics is not None:
            self.sessions.register_metrics(metrics)

    def worth_logging(self, refusal: Refusal, client: str) -> bool:
        """Whether this refusal gets a log line (a few a minute per address and reason)."""
        return self._logs.take(f"{client} {refusal.code}")

    # --- open chats ----------------------------------------------------------------------------
    def admit(self, client: str) -> Refusal | None:
        """Hold a place for one more open chat from ``client`` (give it back with :meth:`release`)."""
        if not self.sessions.admit():
            return Refusal("node_full", FULL_RETRY_SECONDS, status=503)
        if not self._ip_sessions.admit(client):
            self.sessions.release()
            return Refusal("too_many_open_chats", FULL_RETRY_SECONDS)
        return None

    def release(self, client: str) -> None:
        self.sessions.release()
        self._ip_sessions.release(client)

    def started(self, conversation_id: str, client: str) -> None:
        """A new conversation was created for ``client``: under pressure it starts unproven."""
        if self._pressure.wait(client) > 0 or self._ip_messages.wait(client) > 0:
            self._quiet.empty(conversation_id)

    def open(self, conversation_id: str, client: str) -> Refusal | None:
        """Spend what opening a chat costs: a new one (``conversation_id`` empty) from the
        address's budget; a reopened one also from its conversation's, and on the address's
        reserve when that conversation is quiet."""
        if not conversation_id:
            if self._ip_opens.take(client):
                return None
            self._pressure.empty(client)
            return Refusal("too_many_new_chats", self._ip_opens.wait(client))
        quiet = self._quiet.take(conversation_id)
        if self._messages.wait(conversation_id) > 0:
            return Refusal("reopened_too_fast", self._messages.wait(conversation_id))
        if not self._spend(conversation_id, client, quiet, self._ip_opens, self._ip_opens_reserve):
            self._pressure.empty(client)
            return Refusal("too_many_new_chats", self._ip_opens.wait(client))
        return None

    # --- messages ------------------------------------------------------------------------------
    def message(self, conversation_id: str, client: str) -> Refusal | None:
        """Spend one message of the conversation and of its address. A refusal spends neither
        (it still counts towards the conversation's pace)."""
        quiet = self._quiet.take(conversation_id)
        wait = self._messages.wait(conversation_id)
        if wait > 0:
            return Refusal("rate_limited", wait)
        if not self._spend(conversation_id, client, quiet, self._ip_messages, self._ip_messages_reserve):
            self._pressure.empty(client)
            return Refusal("address_rate_limited", self._ip_messages.wait(client))
        return None

    def _spend(self, conversation_id: str, client: str, quiet: bool, address: TokenBuckets,
               reserve: TokenBuckets) -> bool:
        if not address.take(client) and not (quiet and reserve.take(client)):
            return False
        self._messages.take(conversation_id)
        return True
