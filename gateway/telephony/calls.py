"""What the Asterisk connectors know about live calls, shared between them in one process.

The ``voicebot`` FastAGI route opens the conversation, learns the channel name and caller id
from the AGI environment and records them here under the conversation id; the AudioSocket
server then finds them by the UUID Asterisk sends (the route uses the conversation id as the
AudioSocket UUID), and the AMI call control finds the channel to redirect on transfer. A
transfer decided during the AudioSocket session is recorded here too, so the AGI route can hand
it to the dialplan (``VOICEGW_TRANSFER*`` variables) when AMI is not used.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from dataclasses import dataclass, field

from gateway.core.actions import Transfer

MAX_CALLS = 100_000
"""Upper bound on remembered calls; the oldest are forgotten first."""


@dataclass
class CallRecord:
    """One call as the Asterisk side knows it."""

    conversation_id: str
    channel: str = ""
    caller_id: str = ""
    dialed: str = ""
    uniqueid: str = ""
    outbound: bool = False
    transfer: Transfer | None = None
    call_uuid: str = ""
    created: float = field(default_factory=time.monotonic)


class CallRegistry:
    """conversation id -> :class:`CallRecord`, bounded."""

    def __init__(self, max_calls: int = MAX_CALLS):
        self.max_calls = max_calls
        self._calls: dict[str, CallRecord] = {}
        self._by_uuid: dict[str, str] = {}

    def add(self, record: CallRecord) -> CallRecord:
        """Remember ``record`` (its AudioSocket UUID is derived when not set)."""
        if not record.call_uuid:
            record.call_uuid = audiosocket_uuid(record.conversation_id)
        self.discard(record.conversation_id)
        self._calls[record.conversation_id] = record
        self._by_uuid[record.call_uuid] = record.conversation_id
        while len(self._calls) > self.max_calls:
            self.discard(next(iter(self._calls)))
        return record

    def by_uuid(self, call_uuid: str) -> CallRecord | None:
        """The call whose AudioSocket UUID is ``call_uuid``."""
        conversation_id = self._by_uuid.get(call_uuid)
        return self._calls.get(conversation_id) if conversation_id else None

    def get(self, conversation_id: str) -> CallRecord | None:
        return self._calls.get(conversation_id)

    def by_channel(self, channel: str) -> CallRecord | None:
        for record in self._calls.values():
            if record.channel == channel:
                return record
        return None

    def discard(self, conversation_id: str) -> None:
        record = self._calls.pop(conversation_id, None)
        if record is not None:
            self._by_uuid.pop(record.call_uuid, None)

    def __len__(self) -> int:
        return len(self._calls)


def audiosocket_uuid(conversation_id: str) -> str:
    """The UUID to give ``AudioSocket()`` for a conversation.

    AudioSocket needs a UUID. A conversation id that is a UUID is used as is, so the UUID
    Asterisk sends back *is* the conversation id; any other id is mapped to a stable UUID5.
    """
    try:
        return str(uuidlib.UUID(conversation_id))
    except ValueError:
        return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "voicegw:conversation:" + conversation_id))
