"""``voicegw agents``: desktop accounts, their roles, queues and tokens.

    voicegw agents                                   every account: name, role, queues, where defined
    voicegw agents add alice --role agent --queues billing,support [--interfaces PJSIP/1001]
    voicegw agents add alice ... --print-config      print an agents.accounts entry instead of writing the file
    voicegw agents rotate alice                      a new token; the old one and its sessions stop working
    voicegw agents remove alice

``add`` and ``rotate`` print the new token once; only its scrypt hash is stored (in the accounts
file in the data directory, mode 0600, which a running gateway re-reads within two seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from gateway.agents.accounts import AccountError, AccountsFile, Role, clean_queues, make_account
from gateway.agents.tokens import hash_token, new_token
from gateway.config import Settings


def _file(settings: Settings) -> AccountsFile:
    return AccountsFile(settings.data_path(settings.agents.accounts_file))


def _show_token(name: str, token: str, out: TextIO) -> None:
    print(f"token for {name} (shown once, only its hash is kept; sign in at /agent or send "
          f"Authorization: Bearer):\n{token}", file=out)


def _note_queues(name: str, role: Role, queues: frozenset[str], out: TextIO) -> None:
    if role is Role.AGENT and not queues:
        print(f"note: {name} serves no queue: they read only conversations routed to them", file=out)


def run(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """Carry out ``voicegw agents ...``; :class:`AccountError` for what cannot be done."""
    action = getattr(args, "agents_action", None) or "list"
    accounts_file = _file(settings)
    if action == "list":
        rows = [(a.name, a.role.value, ",".join(sorted(a.queues)) or "-", "agents.accounts")
                for a in (make_account(n, s, "agents.accounts") for n, s in settings.agents.accounts.items())]
        rows += [(a.name, a.role.value, ",".join(sorted(a.queues)) or "-", str(accounts_file.path))
                 for a in accounts_file.accounts().values()]
        rows += [(str(agent), "agent", "*", "agents.tokens (plain text: move to accounts)")
                 for agent in settings.agents.tokens.values()]
        if not rows:
            print("no agent accounts: `voicegw serve` generates an admin token into "
                  f"{settings.data_path('agent-token')}; add accounts with `voicegw agents add`", file=out)
        for name, role, queues, where in sorted(rows):
            print(f"{name:<20} {role:<10} {queues:<30} {where}", file=out)
        return 0
    name = args.name
    if action == "add":
        role = Role(args.role)
        queues = clean_queues(args.queues, f"agent account {name!r}")
        interfaces = frozenset(i.strip() for i in args.interfaces.split(",") if i.strip())
        if args.print_config:
            if name in settings.agents.accounts:
                raise AccountError(f"agent account {name!r} is already in agents.accounts")
            token = new_token(name)
            entry = {"role": role.value, "queues": sorted(queues), "token_hash": hash_token(token)}
            if interfaces:
                entry["interfaces"] = sorted(interfaces)
            make_account(name, entry, "the printed entry")
            _show_token(name, token, out)
            print("\nadd to the configuration (under agents: accounts:):", file=out)
            print(f"    {name}: {json.dumps(entry)}", file=out)
            _note_queues(name, role, queues, out)
            return 0
        if name in settings.agents.accounts:
            raise AccountError(f"agent account {name!r} is defined in agents.accounts; change it there")
        token = accounts_file.add(name, role, queues, interfaces)
        print(f"added {role.value} {name} (queues: {', '.join(sorted(queues)) or 'none'}) to {accounts_file.path}",
              file=out)
        _show_token(name, token, out)
        _note_queues(name, role, queues, out)
        return 0
    if action == "rotate":
        token = accounts_file.rotate(name)
        print(f"new token for {name} in {accounts_file.path}; the old token and its sessions no longer work", file=out)
        _show_token(name, token, out)
        return 0
    accounts_file.remove(name)
    print(f"removed {name} from {accounts_file.path}; their sessions end within seconds", file=out)
    return 0


def _main(args: argparse.Namespace) -> int:
    from gateway.cli import settings_from

    try:
        return run(settings_from(args), args, sys.stdout)
    except (AccountError, ValueError) as exc:
        print(f"voicegw: {exc}", file=sys.stderr)
        return 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``voicegw agents``."""
    parser = subparsers.add_parser("agents", help="agent desktop accounts: list, add, rotate, remove")
    parser.set_defaults(func=_main)
    sub = parser.add_subparsers(dest="agents_action", metavar="ACTION")
    add = sub.add_parser("add", help="create an account and print its token once")
    add.add_argument("name")
    add.add_argument("--role", choices=[r.value for r in Role], default=Role.AGENT.value)
    add.add_argument("--queues", default="", help="comma-separated queues the agent serves (* = every queue)")
    add.add_argument("--interfaces", default="", help="comma-separated AMI member interfaces that are this agent")
    add.add_argument("--print-config", action="store_true",
                     help="print an agents.accounts entry for the configuration instead of writing the accounts file")
    rotate = sub.add_parser("rotate", help="replace an account's token (printed once)")
    rotate.add_argument("name")
    remove = sub.add_parser("remove", help="delete an account; its sessions end")
    remove.add_argument("name")
