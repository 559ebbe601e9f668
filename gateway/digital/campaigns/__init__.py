"""Outbound campaigns: a list of reminders run with pacing, quiet hours, a do-not-call list,
retries with backoff, SMS first and a call only when needed, and an outcome code per attempt.

- :mod:`.model`: campaigns, contacts, attempts, outcome codes;
- :mod:`.rules`: quiet hours, backoff, what a conversation's log says about an attempt (no I/O);
- :mod:`.store`: the SQLite file (``<data_dir>/campaigns.db``) and the atomic claim;
- :mod:`.lease`: one runner at a time (a row in that file, or a key in the shared Redis);
- :mod:`.runner`: the tick that settles attempts and launches new ones through the core;
- :mod:`.csv_import`, :mod:`.manage`: contacts from CSV; create, start, pause, status;
- :mod:`.api`: ``/api/campaigns`` and ``/api/dnc``; :mod:`.cli`: ``voicegw campaign`` and ``voicegw dnc``.

Calls are never placed here: the runner asks the core (``CallAccepted(channel="outreach")``),
which calls the number on file under its outbound policy and budgets (docs/trust.md).
"""

from gateway.digital.campaigns.manage import CampaignAdmin
from gateway.digital.campaigns.runner import Campaigns
from gateway.digital.campaigns.store import CAMPAIGNS_FILE, CampaignError, CampaignStore

__all__ = ["CAMPAIGNS_FILE", "CampaignAdmin", "CampaignError", "CampaignStore", "Campaigns"]
