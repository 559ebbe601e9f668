"""The AGI protocol (sans-IO codec) and an asyncio FastAGI server with routes.

Usable on its own, without the rest of the gateway; see ``agi/README.md``.
"""

from agi.protocol import AgiConnection, AgiEnvironment, HangupNotice, ProtocolError, Response, format_command
from agi.server import AgiError, AgiSession, ChannelHungUp, FastAgiServer

__all__ = [
    "AgiConnection", "AgiEnvironment", "AgiError", "AgiSession", "ChannelHungUp", "FastAgiServer",
    "HangupNotice", "ProtocolError", "Response", "format_command",
]
