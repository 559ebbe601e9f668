"""Redaction of log lines: a card number or a PIN never reaches a log handler.

:class:`RedactingFilter` is a :class:`logging.Filter` put on the handlers that ``voicegw``
sets up (:func:`install`). For every record it formats the message with its arguments,
redacts the result and, when something was masked, replaces ``msg`` by the redacted text and
drops ``args``; the text of an exception or stack attached to the record is redacted the same
way, and so is a URL-encoded secret (a client's query string logged as received). Log lines
mask every kind whatever ``settings.redaction`` says: the switches choose what
a transcript keeps, not what an operator's log may hold.

What a log line cannot show this way: a single DTMF digit (one digit is not a secret by its
shape). Log statements that handle key presses say that a key was pressed, never which.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

from gateway.context.redaction import Redactor

_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Masks secrets in every record that passes through the handler it is attached to."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - else logging's error report prints the raw arguments
            message = f"{record.msg} (log arguments that do not fit the format: {record.args!r})"
            record.msg, record.args = message, ()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True

    def _redact(self, text: str) -> str:
        """``text`` redacted; a URL-encoded secret (a query string a client sent, logged as
        received: ``?note=card%204111%201111...``) is looked for in the decoded text, and the
        line is then logged decoded and redacted."""
        redacted = self.redactor.redact_text(text)
        if "%" in text or "+" in text:
            decoded = unquote_plus(text)
            if decoded != text:
                decoded_redacted = self.redactor.redact_text(decoded)
                if decoded_redacted != decoded:
                    return decoded_redacted
        return redacted


def install(logger: logging.Logger | None = None) -> RedactingFilter:
    """Put one :class:`RedactingFilter` on every handler of ``logger`` (the root logger by
    default) that has none yet; returns the filter."""
    logger = logger or logging.getLogger()
    existing = next((f for h in logger.handlers for f in h.filters if isinstance(f, RedactingFilter)), None)
    found = existing or RedactingFilter()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(found)
    return found
