"""Journey analytics read from the one redacted event log (SQLite or Redis alike).

- ``journey_map``: what the log's step ids mean (which journey, which are tasks, where a task ends);
- ``path``: one conversation replayed into a ``ConversationPath`` (outcome, tasks, steps, effort);
- ``report``: paths counted into tables (containment, transfers, funnel, effort, latency, frustration);
- ``source``: reading a range of conversations from the store; ``tables``: text, CSV, Parquet;
- ``cli``: ``voicegw report``; ``dashboard``: the supervisors' page with server-drawn SVG charts.
"""
