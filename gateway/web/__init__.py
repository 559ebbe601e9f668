"""The gateway's HTTP server: application assembly (``app``), connection bounds
(``connection_guard``), the governance routes and the static files of the chat and the agent
desktop. What channels share with it lives outside this package: ``gateway.metrics``,
``gateway.pages`` (the page layout), ``gateway.client_address``."""
