"""Server-rendered HTML pages: one layout, every value escaped (the chat's link pages, the
outbox, the agent sign-in, the dashboard and the QA review all use it)."""

from __future__ import annotations

from html import escape

from aiohttp import web


def page(title: str, body: str, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """An HTML response with the gateway's layout; ``body`` is trusted markup, ``title`` is escaped."""
    text = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(title)}</title><link rel=\"stylesheet\" href=\"/static/gateway.css\">"
        f"</head><body><main class=\"card\"><h1>{escape(title)}</h1>{body}</main></body></html>"
    )
    response = web.Response(text=text, status=status, content_type="text/html", headers=headers)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def refusal(title: str, message: str, *, status: int) -> web.Response:
    """A clear refusal page (403, 410, ...) with ``message`` escaped."""
    return page(title, f"<p class=\"refused\" id=\"refusal\">{escape(message)}</p>", status=status)


__all__ = ["escape", "page", "refusal"]
