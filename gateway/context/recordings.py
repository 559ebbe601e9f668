"""Where call recordings live, and how retention and erasure reach them.

``<data_dir>/recordings/<conversation>/<call>.flac`` (written by :mod:`gateway.voice.recording`;
a ``.flac.part`` while the call lasts). Folder and file names are the ids with anything but
letters, digits, ``-``, ``_`` and ``.`` replaced, so an id can never point outside the folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

RECORDINGS_DIR = "recordings"
SAFE_NAME = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_."


def _safe(name: str) -> str:
    cleaned = "".join(ch if ch in SAFE_NAME else "_" for ch in name)[:80].lstrip(".")
    return cleaned or "call"


def recording_path(data_dir: Path, conversation_id: str, call_id: str) -> Path:
    """Where the recording of ``call_id`` in ``conversation_id`` goes."""
    return data_dir / RECORDINGS_DIR / _safe(conversation_id) / f"{_safe(call_id)}.flac"


def recordings_of(data_dir: Path, conversation_ids: Iterable[str]) -> list[Path]:
    """The recording files of these conversations."""
    root = data_dir / RECORDINGS_DIR
    out: list[Path] = []
    for cid in conversation_ids:
        folder = root / _safe(cid)
        if folder.is_dir():
            out += sorted(folder.glob("*.flac"))
    return out


def erase_recordings(data_dir: Path, conversation_ids: Iterable[str]) -> int:
    """Delete every recording of these conversations; how many files went."""
    root = data_dir / RECORDINGS_DIR
    removed = 0
    for cid in conversation_ids:
        folder = root / _safe(cid)
        if folder.is_dir():
            removed += sum(1 for p in folder.iterdir() if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
    return removed


def expire_recordings(data_dir: Path, before: float) -> int:
    """Delete recordings last written before ``before`` (epoch seconds); how many files went."""
    root = data_dir / RECORDINGS_DIR
    if not root.is_dir() or not before:
        return 0
    removed = 0
    for path in root.glob("*/*.flac*"):
        if path.stat().st_mtime < before:
            path.unlink(missing_ok=True)
            removed += 1
    for folder in root.iterdir():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed

