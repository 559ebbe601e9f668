"""Events out: every conversation event to webhooks (signed, retried, dead letters, replay) and,
with Redis, in a Redis Stream read by consumer groups. The schema is ``docs/events.md``.

- ``schema``: the versioned envelope and the HMAC signature (sans-IO);
- ``deliveries``: each webhook's cursor in the feed and the dead-letter store (SQLite or Redis);
- ``publisher``: the delivery loops ``voicegw serve`` runs; ``cli``: ``voicegw events``.
"""
