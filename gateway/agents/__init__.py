"""The people around the AI: agents, supervisors and admins.

- ``tokens``: the ``<account>.<secret>`` sign-in tokens and their scrypt hashes;
- ``accounts``: roles, queues and where accounts come from (configuration, accounts file,
  the generated admin of the embedded default); ``cli``: ``voicegw agents``;
- ``access``: the one authorization function (who may read, take or audit what);
- ``throttle``: failed sign-ins per address and per account; ``signin``: form, cookie, Bearer;
- ``assignments``: who a conversation was routed to (shared by nodes); ``reads``: every read of
  a conversation authorized and audited; ``api``: the REST context and audit API;
- ``registry`` and ``desktop``: presence, routing by queue, skills and language, screen-pops;
- ``queue`` and ``queue_store``: conversations waiting for a person, shared by every node
  (SQLite or Redis), changed by atomic transitions; ``dispatch``: offers, lapsed offers,
  dropped desktops, queue views and the customer's place in line;
- ``live``: every turn, typing and receipts across nodes (the core's observer, the fan-out);
- ``desk_protocol``: the desktop's and the supervisor page's frames; ``work``: what an agent
  does (accept, chat, follow up, hand back, close); ``supervision``: the supervisor page (watch,
  take over, whisper, steer); ``human_side``: all of it wired to the web app.
"""
