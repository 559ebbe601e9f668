"""Log lines: a real logger and handler with the redacting filter, ``voicegw``'s own logging
setup in a real process, and no log statement that prints DTMF digits."""

from __future__ import annotations

import ast
import io
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from gateway.context.redaction.logs import RedactingFilter, install

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("4111 1111 1111 1111", "4111", "4321", "078-05-1120", "hunter2", "482913")


def _logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    install(logger)
    return logger, stream


def test_message_and_arguments_are_redacted_before_the_handler_writes() -> None:
    log, out = _logger("voicegw.test.redaction.args")
    log.info("caller said %r on call %s", "my card is 4111 1111 1111 1111 and my pin is 4321", "c-1")
    log.warning("ssn 078-05-1120, password: hunter2, cvv %d", 737)
    log.info("order %s of %s costs $1,234.56, call 555-123-4567", 10001, "2024-03-01")
    text = out.getvalue()
    assert "caller said 'my card is [card ****1111] and my pin is [pin]' on call c-1" in text
    assert "ssn [id], password: [password], cvv [pin]" in text
    assert "order 10001 of 2024-03-01 costs $1,234.56, call 555-123-4567" in text  # nothing else touched
    for secret in SECRETS:
        assert secret not in text.replace("****1111", ""), secret


def test_exception_text_and_a_broken_format_are_redacted_too() -> None:
    log, out = _logger("voicegw.test.redaction.exc")
    try:
        raise ValueError("card 4111-1111-1111-1111 refused")
    except ValueError:
        log.exception("payment failed")
    log.error("paid with %s and %s", "5555 5555 5555 4444")  # one argument short: logging's error
    # report would print the raw arguments to stderr
    text = out.getvalue()
    assert "ValueError: card [card ****1111] refused" in text
    assert "paid with %s and %s (log arguments that do not fit the format: ('[card ****4444]',))" in text
    assert "4111-1111" not in text and "5555 5555" not in text


def test_a_url_encoded_secret_in_a_logged_url_is_found() -> None:
    log, out = _logger("voicegw.test.redaction.url")
    log.warning("refused (url %s)", "http://gw/sms/twilio?note=card%204111%201111%201111%201111+pin+is+4321")
    log.info("plain %s", "http://gw/chat?x=1%202")  # nothing secret: left encoded as it came
    text = out.getvalue()
    assert "refused (url http://gw/sms/twilio?note=card [card ****1111] pin is [pin])" in text
    assert "plain http://gw/chat?x=1%202" in text and "4321" not in text


def test_the_filter_is_installed_once_per_handler() -> None:
    log, _ = _logger("voicegw.test.redaction.once")
    first = install(log)
    assert install(log) is first
    assert sum(isinstance(f, RedactingFilter) for f in log.handlers[0].filters) == 1


def test_voicegw_logging_setup_redacts_every_line(tmp_path) -> None:
    """``voicegw``'s main() in a real process: whatever a command logs reaches stderr redacted."""
    script = tmp_path / "leak.py"
    script.write_text(textwrap.dedent("""
        import logging, sys, types
        from gateway import cli

        def register(sub):
            p = sub.add_parser("leak")
            p.set_defaults(func=lambda args: logging.getLogger("gateway.leak").warning(
                "caller said %s", "card 4111 1111 1111 1111, my pin is four three two one"))

        module = types.ModuleType("leak_cli")
        module.register = register
        sys.modules["leak_cli"] = module
        cli.AREA_CLIS = cli.AREA_CLIS + ("leak_cli",)
        sys.exit(cli.main(["leak"]))
    """))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "gateway.leak: caller said card [card ****1111], my pin is [pin]" in done.stderr
    assert "4111 1111" not in done.stderr and "four three two one" not in done.stderr


LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
DTMF_NAMES = ("digit", "dtmf")


def _names_outside_len(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len":
        return []  # how many keys, not which
    found = [node.id] if isinstance(node, ast.Name) else [node.attr] if isinstance(node, ast.Attribute) else []
    for child in ast.iter_child_nodes(node):
        found += _names_outside_len(child)
    return found


def test_no_log_statement_prints_dtmf_digits() -> None:
    """A key press can be a PIN digit: log statements say that a key was pressed, not which.
    (One digit has no shape the log filter could recognize, so this is checked in the source.)"""
    offenders = []
    for path in sorted((ROOT / "gateway").rglob("*.py")) + sorted((ROOT / "agi").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LOG_METHODS and isinstance(node.func.value, ast.Name)
                    and "log" in node.func.value.id.lower()):
                continue
            for arg in node.args[1:]:
                names = [n.lower() for n in _names_outside_len(arg)]
                if any(word in n for n in names for word in DTMF_NAMES):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
