"""The gateway's HTTP server: application assembly (``app``), ``/metrics`` (``metrics``), the
shared page layout (``html``) and the static files of the chat and the agent desktop."""
