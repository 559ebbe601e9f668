"""Digital channels: web chat, SMS, follow-up links, proactive outreach.

- ``chat_protocol``: the chat's wire format and limits (sans-IO); ``chat``: the WebSocket
  channel; ``chat_relay``: chat pushes across gateway nodes.
- ``sms``: Twilio outbound and the signed inbound webhook; ``outbox``: the local SMS outbox and
  thread map; ``outbox_page``: ``/outbox``; ``cli``: ``voicegw outbox``.
- ``links``: signed, expiring, single-use tokens; ``link_pages``: the pages behind them;
  ``followup``: the ``SendFollowUp`` sink.
- ``outreach``: scheduled reminders, SMS first, a call when unanswered.
- ``terminal``: ``voicegw chat``, the terminal as a channel to the real core.
"""
