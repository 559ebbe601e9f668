"""Data governance: retention, erasure, subject access, and QA on every conversation.

- ``retention``: the purge ``voicegw serve`` runs on schedule (days per kind of data);
- ``erasure``: ``voicegw erase --customer ID`` across every store, with a report;
- ``subject_access``: ``voicegw export --customer ID``, the subject-access bundle;
- ``side_stores``: the outbox, used links, counters and assignments as those reach them;
- ``scorecards``, ``qa``, ``qa_store``, ``qa_job``, ``review_page``: QA scorecards (YAML beside
  the journeys) evaluated on every ended conversation, stored, reviewed and overridden;
- ``cli``: ``voicegw erase``, ``voicegw export``, ``voicegw retention``, ``voicegw qa``.
"""
