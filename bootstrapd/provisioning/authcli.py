"""``bootstrapd hash-password``: the scrypt hash to put in an ``[[auth]]`` entry's ``password``."""

from __future__ import annotations

import argparse
import getpass
import sys

from bootstrapd.provisioning.auth import hash_password


def cmd_hash_password(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("bootstrapd: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")  # scripts: one line on standard input
    if not password:
        print("bootstrapd: empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def setup_hash_password(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(func=cmd_hash_password)
