"""What the Asterisk connectors know about live calls, shared between them in one process.

The ``voicebot`` FastAGI route registers each call it hands to AudioSocket under the UUID it
gives ``AudioSocket()``, with the channel name, caller id and dialed number from the AGI
environment (and the conversation id when the channel already carries ``VOICEGW_CONVERSATION``,
as an originated callback does). The AudioSocket server finds the call by the UUID Asterisk
sends, starts the voice session with what the route learned, and writes back the conversation
id the session opened. The AMI call control finds the channel to redirect here; without AMI,
a transfer is recorded here and the route hands it to the dialplan (``VOICEGW_TRANSFER*``
channel variables) once ``AudioSocket()`` returns.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.actions import Transfer

log = logging.getLogger(__name__)

MAX_CALLS = 100_000
"""Upper bound on remembered calls; the oldest are forgotten first."""
FAILED_ENDS = frozenset({"busy", "error", "stalled", "protocol-error", "shutdown", "timeout", "flood"})
"""How an AudioSocket call can end by the gateway's doing rather than the caller's or the journey's:
the voicebot route then tells the dialplan (``VOICEGW_STATUS=busy`` or ``error``), which sends
the caller to the agents instead of hanging up. ``timeout`` included: Asterisk passes on only the
frames the caller's leg delivers, so a phone that sends no RTP while its user is silent (silence
suppression) reaches ``audiosocket.read_timeout_seconds`` while the caller is still there (seen
with a Local channel in Asterisk 22.10.1: no frame, the call ended after 5 s)."""


@dataclass
class CallRecord:
    """One call as the Asterisk side knows it."""

    call_uuid: str
    conversation_id: str = ""
    channel: str = ""
    caller_id: str = ""
    dialed: str = ""
    uniqueid: str = ""
    outbound: bool = False
    callback: str = ""       # nonce of a call the core placed (VOICEGW_CALLBACK): proves that call
    attestation: str = ""    # STIR/SHAKEN attestation the PBX verified (VOICEGW_ATTESTATION)
    transfer: Transfer | None = None
    redirected: bool = False  # AMI already moved the channel to the agents (VOICEGW_STATUS=transferred)
    end_reason: str = ""
    connected: bool = False
    created: float = field(default_factory=time.monotonic)


class CallRegistry:
    """AudioSocket UUID -> :class:`CallRecord` (and conversation id -> record), bounded."""

    def __init__(self, max_calls: int = MAX_CALLS):
        self.max_calls = max_calls
        self._calls: dict[str, CallRecord] = {}
        self._by_conversation: dict[str, str] = {}

    def add(self, record: CallRecord) -> CallRecord:
        self.discard(record.call_uuid)
        self._calls[record.call_uuid] = record
        if record.conversation_id:
            self._by_conversation[record.conversation_id] = record.call_uuid
        while len(self._calls) > self.max_calls:
            self.discard(next(iter(self._calls)))
        return record

    def by_uuid(self, call_uuid: str) -> CallRecord | None:
        return self._calls.get(call_uuid)

    def by_conversation(self, conversation_id: str) -> CallRecord | None:
        key = self._by_conversation.get(conversation_id)
        return self._calls.get(key) if key else None

    def by_channel(self, channel: str) -> CallRecord | None:
        for record in self._calls.values():
            if record.channel == channel:
                return record
        return None

    def set_conversation(self, record: CallRecord, conversation_id: str) -> None:
        """The session opened (or resumed) ``conversation_id`` for this call."""
        if record.conversation_id and self._by_conversation.get(record.conversation_id) == record.call_uuid:
            del self._by_conversation[record.conversation_id]
        record.conversation_id = conversation_id
        if conversation_id:
            self._by_conversation[conversation_id] = record.call_uuid

    def discard(self, call_uuid: str) -> None:
        record = self._calls.pop(call_uuid, None)
        if record is not None and self._by_conversation.get(record.conversation_id) == call_uuid:
            del self._by_conversation[record.conversation_id]

    def __len__(self) -> int:
        return len(self._calls)


def audiosocket_uuid(conversation_id: str = "") -> str:
    """The UUID to give ``AudioSocket()``.

    A conversation id that is a UUID is used as is (so the UUID Asterisk sends back *is* the
    conversation id); another id is mapped to a stable UUID5; no id gives a fresh UUID4.
    """
    if not conversation_id:
        return str(uuidlib.uuid4())
    try:
        return str(uuidlib.UUID(conversation_id))
    except ValueError:
        return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "voicegw:conversation:" + conversation_id))


class LiveCall(Protocol):
    """A call in progress as its call control names it."""

    call_id: str


class DialplanCallControl:
    """Call control without AMI: a transfer is handed to the dialplan after ``AudioSocket()``.

    ``transfer`` records the decision and returns True; the session then hangs up, the AudioSocket
    server sends 0x00, ``AudioSocket()`` returns, and the ``voicebot`` route sets
    ``VOICEGW_TRANSFER=1`` and friends so the dialplan goes to the agents' context. Works only
    for calls the route registered (``AudioSocket()`` reached through ``AGI(.../voicebot)``).
    """

    def __init__(self, calls: CallRegistry, call: LiveCall):
        self.calls = calls
        self.call = call

    async def call_started(self, conversation_id: str) -> None:
        """Nothing to tag without AMI: the voicebot route sets the variables after the call."""

    async def transfer(self, conversation_id: str, action: Transfer) -> bool:
        record = self.calls.by_uuid(self.call.call_id)
        if record is None:
            log.warning("call %s: cannot transfer without AMI: AudioSocket was not reached through "
                        "the voicebot AGI route", self.call.call_id)
            return False
        record.transfer = action
        return True
