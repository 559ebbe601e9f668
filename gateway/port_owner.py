"""Who holds a TCP port: this gateway, another voicegw, or another program (for ``voicegw doctor``).

``voicegw doctor`` run beside a running gateway finds its ports taken; that is no failure when
the holder is the gateway this configuration describes. Linux tells which process listens on a
port: ``/proc/net/tcp{,6}`` gives the listening socket's inode, ``/proc/<pid>/fd`` the process
that has it open, ``/proc/<pid>/cmdline`` and ``cwd`` what it is. "This gateway" is a
``voicegw serve`` started from the same directory with the same ``--config``; another voicegw
and anything else are named as such. Processes of other users are not visible to an
unprivileged doctor: their ports are "held by a process this user cannot see".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
LISTEN = "0A"
"""``st`` of a listening socket in /proc/net/tcp."""
MAX_PROCESSES = 100_000
"""Processes looked at when searching a socket's owner (a bound on a pathological /proc)."""


@dataclass(frozen=True)
class PortOwner:
    pid: int
    command: tuple[str, ...]
    cwd: str

    @property
    def is_voicegw_serve(self) -> bool:
        words = " ".join(self.command)
        return "serve" in self.command and ("gateway.cli" in words or "voicegw" in words)

    @property
    def config(self) -> str:
        """The ``--config`` file it was started with ("" when none)."""
        args = list(self.command)
        for i, arg in enumerate(args):
            if arg == "--config" and i + 1 < len(args):
                return str(Path(self.cwd, args[i + 1]).resolve()) if self.cwd else args[i + 1]
            if arg.startswith("--config="):
                value = arg.split("=", 1)[1]
                return str(Path(self.cwd, value).resolve()) if self.cwd else value
        return ""

    def describe(self) -> str:
        words = " ".join(self.command)
        return f"pid {self.pid}: {words[:120]}" + (f" (in {self.cwd})" if self.cwd else "")


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTEN:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                inodes.add(fields[9])
    return inodes


def port_owner(port: int) -> PortOwner | None:
    """The process listening on TCP ``port``, when this user can see it."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for count, entry in enumerate(PROC.iterdir()):
        if count > MAX_PROCESSES:
            break
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in inodes:
                return _owner(int(entry.name))
    return None


def _owner(pid: int) -> PortOwner:
    base = PROC / str(pid)
    try:
        command = tuple(a.decode("utf-8", "replace") for a in (base / "cmdline").read_bytes().split(b"\0") if a)
    except OSError:
        command = ()
    try:
        cwd = os.readlink(base / "cwd")
    except OSError:
        cwd = ""
    return PortOwner(pid, command, cwd)


def is_this_gateway(owner: PortOwner, config_path: str | None) -> bool:
    """A ``voicegw serve`` of this installation: same working directory, same ``--config``."""
    if not owner.is_voicegw_serve or owner.pid == os.getpid():
        return False
    mine = str(Path(config_path).resolve()) if config_path else ""
    return owner.config == mine and (not owner.cwd or Path(owner.cwd).resolve() == Path.cwd().resolve())
