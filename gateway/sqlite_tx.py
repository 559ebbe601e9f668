"""Write transactions on SQLite connections opened in autocommit mode (``isolation_level=None``).

Shared by the SQLite files the gateway keeps itself (the context store, the sample CRM): every
write is one ``BEGIN IMMEDIATE ... COMMIT``, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` before the block, ``COMMIT`` after it, ``ROLLBACK`` when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def write(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn(conn)`` in one immediate transaction; its result."""
    with immediate(conn):
        return fn(conn)


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute a schema script statement by statement (statements end with ``;`` and a newline),
    inside the caller's transaction (unlike ``executescript``, which commits first)."""
    for statement in script.split(";\n"):
        if statement.strip():
            conn.execute(statement)
