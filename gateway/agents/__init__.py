"""The people around the AI: agents, supervisors and admins.

- ``tokens``: the ``<account>.<secret>`` sign-in tokens and their scrypt hashes;
- ``accounts``: roles, queues and where accounts come from (configuration, accounts file,
  the generated admin of the embedded default); ``cli``: ``voicegw agents``;
- ``access``: the one authorization function (who may read, take or audit what);
- ``throttle``: failed sign-ins per address and per account; ``signin``: form, cookie, Bearer;
- ``assignments``: who a conversation was routed to (shared by nodes); ``reads``: every read of
  a conversation authorized and audited; ``api``: the REST context and audit API;
- ``registry`` and ``desktop``: presence, routing by queue, skills and language, screen-pops.
"""
