"""The channels a conversation surfaces on, as the core knows them.

A channel names itself with a plain string on every event and in ``core.open()`` (``voice``,
``chat``, ``sms``...: what the event log and the reports keep). The core turns it into a
:class:`Channel` once, at its edge, and decides on the enum from there: what wording a prompt
uses (its :class:`Wording`), whether the party can hear a call being placed, whether the channel
is a person on the staff side. No string compares on channel names anywhere else in the core.
"""

from __future__ import annotations

from enum import Enum, StrEnum


class Wording(StrEnum):
    """Which wording of a prompt a channel uses (``Prompt.voice``, ``.chat``, ``.sms``), and the
    value ``branch: channel`` compares (``voice``, ``chat``, ``sms``, else the channel's name)."""

    VOICE = "voice"
    CHAT = "chat"
    SMS = "sms"
    OTHER = ""


class Channel(StrEnum):
    """Every surface an event comes from. A ``StrEnum``: it is stored, logged and compared as
    its name, so records and event logs written before it read the same."""

    VOICE = "voice"
    """A call: AudioSocket, SIP, ARI, FreeSWITCH, Twilio Media Streams, FastAGI."""
    CHAT = "chat"
    """The web chat."""
    WEB = "web"
    """A follow-up link page (opened, form submitted)."""
    SMS = "sms"
    """An SMS thread (inbound replies, the gateway's own reminders)."""
    OUTREACH = "outreach"
    """The gateway's own dialer: reminders and campaigns that place calls."""
    TELEPHONY = "telephony"
    """Call control reporting on a call the gateway placed (not answered, busy...)."""
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    BOT = "bot"
    """What the core itself said and did (the actions in the log)."""
    SYSTEM = "system"
    """What the core noted (a lock, a refused call) beside the conversation."""
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, name: str | "Channel") -> "Channel":
        """The channel a plain name stands for (``UNKNOWN`` for a name the core does not know)."""
        if isinstance(name, Channel):
            return name
        text = (name or "").strip().lower()
        text = _ALIASES.get(text, text)
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN

    @property
    def wording(self) -> Wording:
        return _WORDING.get(self, Wording.OTHER)

    @property
    def is_voice(self) -> bool:
        """The party hears the bot on a call (spoken wording, keys, the PBX's queues)."""
        return self.wording is Wording.VOICE

    @property
    def is_typed(self) -> bool:
        """The party types into a page the gateway serves (the chat, a link page): agents can
        write to it and a transfer waits in the gateway's own queue."""
        return self.wording is Wording.CHAT

    @property
    def is_staff(self) -> bool:
        """Never the customer: the people around the bot, and the core's own entries."""
        return self in _STAFF

    @property
    def branch_value(self) -> str:
        """What ``branch: channel`` compares with the step's ``cases``."""
        return self.wording.value or self.value


_ALIASES = {"sip": "voice", "phone": "voice"}
_WORDING: dict[Enum, Wording] = {Channel.VOICE: Wording.VOICE, Channel.CHAT: Wording.CHAT, Channel.WEB: Wording.CHAT,
                                 Channel.SMS: Wording.SMS}
_STAFF = frozenset({Channel.AGENT, Channel.SUPERVISOR, Channel.BOT, Channel.SYSTEM})
STAFF_CHANNELS = frozenset(c.value for c in _STAFF)
"""Names of the channels that are never the customer's (for code reading stored events)."""
