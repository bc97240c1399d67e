"""``bootstrapd check``, ``explain``, ``encrypt`` and ``decrypt``: the provisioning model's commands.

Exit codes: 0 fine, 1 problems found / the command failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bootstrapd.configfile import ConfigError
from bootstrapd.provisioning import yealink_aes
from bootstrapd.provisioning.names import parse_mac

if TYPE_CHECKING:
    from bootstrapd.config import Settings

Setup = Callable[[argparse.ArgumentParser], None]


def _fail(message: str, code: int) -> int:
    print(f"bootstrapd: {message}", file=sys.stderr)
    return code


def _settings(path: str) -> Settings:
    from bootstrapd import config

    return config.load(path)


def cmd_check(args: argparse.Namespace) -> int:
    from bootstrapd.provisioning.check import as_json, check, format_text
    from bootstrapd.provisioning.explain import try_interface

    try:
        settings = _settings(args.config)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    report = check(settings, try_interface(settings))
    if args.json:
        json.dump(as_json(report), sys.stdout, indent=2)
        print()
    else:
        sys.stdout.write(format_text(report))
    return 1 if report.errors else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from bootstrapd.provisioning.explain import explain, format_text, try_interface
    from bootstrapd.provisioning.models import table
    from bootstrapd.provisioning.tree import Provisioning

    mac = parse_mac(args.mac)
    if mac is None:
        return _fail(f"--mac {args.mac!r} is not a MAC address (such as 00:15:65:aa:bb:cc)", 2)
    preset: dict[str, str] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            return _fail(f"--set {item!r}: expected KEY=VALUE", 2)
        preset[key.strip()] = value.strip()
    try:
        settings = _settings(args.config)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    provisioning = Provisioning(settings, create_keys=False)
    provisioning.rendered.refresh(force=True)
    listed = provisioning.rendered.inventory.find(mac)
    if args.model:
        model = table().find(args.model)
        if model is None:
            hint = table().suggest(args.model)
            return _fail(f"--model {args.model!r}: unknown model" + (f" (try {', '.join(hint)})" if hint else ""), 2)
    elif listed is not None:
        model = listed.model
    else:
        return _fail(f"{mac} is not in the inventory: give its --model", 2)
    result = explain(settings, mac, model, inventory=listed, firmware=args.firmware, preset=preset, url=args.url,
                     show_secrets=args.show_secrets, iface=try_interface(settings), provisioning=provisioning)
    if args.json:
        json.dump(result.as_json(), sys.stdout, indent=2)
        print()
    else:
        sys.stdout.write(format_text(result))
    return 0


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically: a temporary file beside it, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key_from(args: argparse.Namespace) -> str | None:
    if args.key is not None:
        problem = yealink_aes.key_problem(args.key)
        if problem:
            raise ValueError(f"--key: the key {problem}")
        return str(args.key)
    if args.key_file is not None:
        return yealink_aes.decrypt_key(Path(args.key_file).read_bytes())
    return None


def cmd_encrypt(args: argparse.Namespace) -> int:
    try:
        key = _key_from(args)
    except (ValueError, OSError) as exc:
        return _fail(str(exc), 2)
    if args.write_key_file:
        if key is None or args.files:
            return _fail("--write-key-file needs --key (or --key-file) and no FILE", 2)
        _write(Path(args.write_key_file), yealink_aes.encrypt_key(key), 0o600)
        print(f"wrote {args.write_key_file}")
        return 0
    if not args.files:
        return _fail("no FILE to encrypt", 2)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in args.files:
        source = Path(name)
        target = out_dir / source.name
        try:
            if target.resolve() == source.resolve():
                raise ValueError("the output would replace the input: choose another --out-dir")
            data = source.read_bytes()
            file_key = key or yealink_aes.generate_key()
            _write(target, yealink_aes.encrypt(data, file_key), 0o644)
            written = [str(target)]
            if not args.no_key_file:
                key_path = out_dir / yealink_aes.security_name(source.name)
                _write(key_path, yealink_aes.encrypt_key(file_key), 0o600)
                written.append(str(key_path))
            print(f"{name}: wrote {', '.join(written)}")
        except (OSError, ValueError) as exc:
            failed += 1
            print(f"bootstrapd: {name}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
    return 1 if failed else 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    try:
        key = _key_from(args)
    except (ValueError, OSError) as exc:
        return _fail(str(exc), 2)
    if args.show_key:
        if key is None:
            return _fail("--show-key needs --key-file FILE_Security.enc", 2)
        print(key)  # asked for explicitly; never logged
        return 0
    if not args.files:
        return _fail("no FILE to decrypt", 2)
    failed = 0
    for name in args.files:
        source = Path(name)
        try:
            file_key = key
            if file_key is None:
                key_path = source.with_name(yealink_aes.security_name(source.name))
                try:
                    blob = key_path.read_bytes()
                except OSError:
                    raise ValueError(f"no --key, no --key-file, and no {key_path.name} beside it") from None
                file_key = yealink_aes.decrypt_key(blob)
            plain = yealink_aes.decrypt(source.read_bytes(), file_key)
            if args.strip:
                plain = plain.rstrip(b" ")
            if args.stdout:
                sys.stdout.buffer.write(plain)
                continue
            out_dir = Path(args.out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            target = out_dir / source.name
            if target.resolve() == source.resolve():
                raise ValueError("the output would replace the input: choose another --out-dir")
            _write(target, plain, 0o600)  # plain text holds the secrets the encryption protected
            print(f"{name}: wrote {target}")
        except (OSError, ValueError) as exc:
            failed += 1
            print(f"bootstrapd: {name}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
    return 1 if failed else 0


def setup_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_check)


def setup_explain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--mac", required=True, help="the phone's MAC address")
    p.add_argument("--model", help="its model (default: the inventory's)")
    p.add_argument("--firmware", type=int, help="its firmware major version, e.g. 83 (default: new enough for all)")
    p.add_argument("--url", help="the server URL it was given (default: from this configuration, in the guide's "
                                 "priority)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a parameter the phone already has (e.g. static.auto_provision.aes_key_in_file=1)")
    p.add_argument("--show-secrets", action="store_true", help="show passwords and keys instead of ********")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_explain)


def _key_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--key", help="the 16-character AES key")
    group.add_argument("--key-file", help="a <name>_Security.enc holding the key")


def setup_encrypt(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE")
    _key_options(p)
    p.add_argument("--out-dir", default="encrypted", help="where encrypted files go (default: ./encrypted)")
    p.add_argument("--no-key-file", action="store_true", help="do not write <name>_Security.enc")
    p.add_argument("--write-key-file", metavar="PATH", help="only write the key file of --key to PATH")
    p.set_defaults(func=cmd_encrypt)


def setup_decrypt(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE")
    _key_options(p)
    p.add_argument("--out-dir", default="decrypted", help="where plain files go (default: ./decrypted)")
    p.add_argument("--stdout", action="store_true", help="write the plain text to standard output")
    p.add_argument("--strip", action="store_true", help="remove the trailing space padding")
    p.add_argument("--show-key", action="store_true", help="print the key inside --key-file")
    p.set_defaults(func=cmd_decrypt)


def register(extra: dict[str, tuple[str, Setup]]) -> None:
    extra["check"] = ("lint the provisioning tree, inventory and templates as phones read them", setup_check)
    extra["explain"] = ("what one phone downloads and the value each parameter ends up with", setup_explain)
    extra["encrypt"] = ("Yealink AES-encrypt configuration files (compatibility mode), offline", setup_encrypt)
    extra["decrypt"] = ("decrypt Yealink AES-encrypted configuration files, offline", setup_decrypt)
