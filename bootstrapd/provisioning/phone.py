"""The phone's side of the Yealink guide: what a phone downloads, in which order, and what it ends up with.

One implementation for ``check``, ``explain`` and the simulated phones. No I/O: :func:`provision` is a generator
that yields :class:`Fetch` requests (a URL) and is sent the bytes (or None: not found / failed); it returns an
:class:`Outcome` (every download, every parameter with file, line and what it overrode, findings). A network client
drives it step by step (:class:`Session`), the CLI with the resolver as fetcher (:func:`run`).

The rules, with the guide's sections:

- Where from: the server URL (Zero Touch > PnP > DHCP > flash, "Obtaining the Provisioning Server Address") with
  ``$PN``/``$MAC`` replaced ("Configuring Wildcard of the Provisioning Server URL"); a URL naming a ``.boot`` file
  makes the phone request only that boot file. The guide documents the wildcards in the server URL; the model also
  replaces them in include URLs (``include:config "$MAC.cfg"``, common in deployments: unverified).
- Order ("Downloading Boot, Configuration and Resource Files"): ``<mac>.boot``, else ``y000000000000.boot``, then
  the files its ``include:config`` lines name, top to bottom; without a boot file (or on firmware older than the
  model's boot-file support, "Supported Phones") the old mechanism: the model's common CFG then ``<mac>.cfg``; then
  resource files named by parameters; then ``<mac>-local.cfg`` ("Using MAC-local CFG File").
- Model filters and modes ("Editing Common Boot File", items 4 and specific_model.excluded_mode): append mode
  downloads the phone's model-specific and the unspecified includes in listed order; exclude mode (firmware with
  it, "Supported Phones") downloads the model-specific ones and, only when none of them is found on the server,
  the unspecified ones.
- Values ("Resolving and Updating Configurations"): later files override earlier ones; ``[MODEL]``-prefixed lines
  apply to those models only; with ``overwrite_mode = 1`` (the default with a boot file) a blank value sets the
  factory default, with 0 it keeps the earlier value. Without a boot file overwrite mode does not exist: a blank
  value keeps the earlier one.
- ``<mac>-local.cfg`` is downloaded when ``static.auto_provision.custom.sync = 1`` (from
  ``static.auto_provision.custom.sync.path`` when set) and applied last when ``static.auto_provision.custom.protect
  = 1``.
- Encrypted CFG files (compatibility mode): the key comes from ``<name>_Security.enc`` when
  ``static.auto_provision.aes_key_in_file = 1``, else ``static.auto_provision.aes_key_16.com`` / ``.mac``.
- The MD5 check ("Resolving and Updating Configurations"): the phone computes the MD5 of every CFG file it
  downloaded; when they all equal those of its last provisioning (:attr:`Phone.last_md5`), it completes without a
  repeated update (:attr:`Outcome.updated` is False). Unverified: the guide names the common and MAC-oriented files;
  the model compares every CFG file it read, boot-file includes included, as downloaded (before decryption).

Where the guide is silent the choice is written where it is made (marked "unverified").
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from bootstrapd.provisioning import yealink_aes
from bootstrapd.provisioning.bootfile import BootFile, parse_boot
from bootstrapd.provisioning.cfgfile import parse_cfg
from bootstrapd.provisioning.findings import Finding, error, warning
from bootstrapd.provisioning.models import COMMON_BOOT, Model, table
from bootstrapd.provisioning.names import file_class

AES_IN_FILE = "static.auto_provision.aes_key_in_file"
AES_COMMON = "static.auto_provision.aes_key_16.com"
AES_MAC = "static.auto_provision.aes_key_16.mac"
PN = "static.auto_provision.url_wildcard.pn"
SYNC = "static.auto_provision.custom.sync"
SYNC_PATH = "static.auto_provision.custom.sync.path"
PROTECT = "static.auto_provision.custom.protect"


class Kind(enum.StrEnum):
    BOOT = "boot"
    CFG = "cfg"
    KEY = "key"  # <name>_Security.enc
    RESOURCE = "resource"
    LOCAL = "local"  # <mac>-local.cfg


@dataclass(frozen=True)
class Phone:
    mac: str  # 12 lower-case hex digits
    model: Model
    firmware: int | None = None  # major firmware version (81, 83, ...); None: new enough for everything
    preset: Mapping[str, str] = field(default_factory=dict)  # parameters the phone has before this run
    last_md5: Mapping[str, str] = field(default_factory=dict)  # URL -> MD5 (hex) of each CFG file last provisioned


@dataclass(frozen=True)
class Fetch:
    url: str
    kind: Kind
    why: str


@dataclass
class Download:
    url: str
    kind: Kind
    why: str
    found: bool = False
    size: int = 0
    applied: bool = False
    encrypted: bool = False
    note: str = ""
    md5: str = ""  # of the bytes as downloaded (CFG and MAC-local files): what the phone compares next time
    data: bytes | None = field(default=None, repr=False)  # the plain text of a usable CFG file


@dataclass(frozen=True)
class Assignment:
    value: str  # "" with applied=True: the factory default (a blank value under overwrite mode)
    file: str  # the URL it came from
    line: int
    applied: bool = True
    note: str = ""


@dataclass
class Param:
    key: str
    history: list[Assignment] = field(default_factory=list)

    @property
    def final(self) -> Assignment:
        return [a for a in self.history if a.applied][-1]

    @property
    def value(self) -> str:
        return self.final.value

    @property
    def overridden(self) -> list[Assignment]:
        applied = [a for a in self.history if a.applied]
        return applied[:-1]


@dataclass
class Outcome:
    phone: Phone
    server_url: str  # after $PN/$MAC expansion
    mechanism: str = ""  # "boot" (a boot file was used) or "old" (common CFG + MAC CFG)
    boot: str | None = None  # the boot file's URL
    overwrite_mode: int | None = None  # None: no boot file
    excluded_mode: int | None = None
    exclude_supported: bool = False
    downloads: list[Download] = field(default_factory=list)
    params: dict[str, Param] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    local_url: str | None = None  # where the phone reads (and uploads) <mac>-local.cfg; None: custom.sync is not 1
    updated: bool = True  # False: every CFG file has the MD5 of the last provisioning, nothing is updated

    def cfg_md5(self) -> dict[str, str]:
        """URL -> MD5 of every CFG file found this run: what the phone remembers for its next MD5 check."""
        return {d.url: d.md5 for d in self.downloads if d.kind is Kind.CFG and d.found}

    def value(self, key: str) -> str | None:
        """What the phone has for ``key`` after this run: a downloaded value, else its preset, else None."""
        param = self.params.get(key)
        if param is not None and any(a.applied for a in param.history):
            return param.value
        return self.phone.preset.get(key)

    def as_json(self) -> dict[str, Any]:
        return {
            "mac": self.phone.mac, "model": self.phone.model.id, "product": self.phone.model.product,
            "firmware": self.phone.firmware, "server_url": self.server_url, "mechanism": self.mechanism,
            "boot": self.boot, "overwrite_mode": self.overwrite_mode, "excluded_mode": self.excluded_mode,
            "exclude_supported": self.exclude_supported,
            "downloads": [{k: v for k, v in vars(d).items() if k != "data"} | {"kind": d.kind.value}
                          for d in self.downloads],
            "parameters": {
                key: {"value": p.value, "file": p.final.file, "line": p.final.line,
                      "overridden": [vars(a) for a in p.overridden],
                      "ignored": [vars(a) for a in p.history if not a.applied]}
                for key, p in self.params.items() if any(a.applied for a in p.history)
            },
            "findings": [f.as_json() for f in self.findings],
            "notes": self.notes,
            "local_url": self.local_url,
            "updated": self.updated,
        }


Expand = Callable[[str, Phone], str]


def expand_wildcards(url: str, phone: Phone) -> str:
    """``$PN`` -> static.auto_provision.url_wildcard.pn (default: the model's directory name), ``$MAC`` -> the MAC."""
    pn = phone.preset.get(PN) or phone.model.pn
    return url.replace("$PN", pn).replace("$MAC", phone.mac)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def server_base(url: str) -> tuple[str, str | None]:
    """(the directory URL ending in '/', the boot file URL when the URL names one)."""
    url = url.strip()
    if not _SCHEME.match(url):
        url = "tftp://" + url  # a bare host (option 66's classic form) is a TFTP server
    parts = urlsplit(url)
    path = parts.path or "/"
    if path.lower().endswith(".boot"):
        folder = path.rpartition("/")[0] + "/"
        return urlunsplit(parts._replace(path=folder)), urlunsplit(parts._replace(path=path))
    if not path.endswith("/"):
        path += "/"  # "tftp://host/$PN" names a directory (guide's wildcard example)
    return urlunsplit(parts._replace(path=path)), None


def join(base: str, ref: str) -> str:
    """``ref`` relative to ``base`` (RFC 3986), for any scheme: urljoin only resolves schemes it knows (no tftp)."""
    ref = ref.strip()
    if _SCHEME.match(ref):
        return ref
    scheme, sep, rest = base.partition("://")
    if not sep:
        return urljoin(base, ref)
    joined = urljoin("http://" + rest, ref)
    return scheme + "://" + joined[len("http://"):]


class _Run:
    def __init__(self, phone: Phone, server_url: str) -> None:
        self.phone = phone
        self.out = Outcome(phone, server_url)
        self.overwrite = False  # blank values keep the earlier value unless a boot file says otherwise

    def value(self, key: str) -> str | None:
        return self.out.value(key)

    def record(self, fetch: Fetch) -> Download:
        download = Download(fetch.url, fetch.kind, fetch.why)
        self.out.downloads.append(download)
        return download

    def fetch_cfg(self, url: str, kind: Kind, why: str) -> Generator[Fetch, bytes | None, Download]:
        """Download (and decrypt) one CFG file; the result's ``data`` is the plain text, None when unusable."""
        fetch = Fetch(url, kind, why)
        data = yield fetch
        download = self.record(fetch)
        if data is None:
            return download
        download.found, download.size = True, len(data)
        download.md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        download.data = yield from self._plain(url, download, data)
        return download

    def _plain(self, url: str, download: Download, data: bytes) -> Generator[Fetch, bytes | None, bytes | None]:
        if not yealink_aes.looks_encrypted(data):
            return data
        download.encrypted = True
        key, source = None, ""
        if self.value(AES_IN_FILE) == "1":
            key_url = join(url, yealink_aes.security_name(urlsplit(url).path.rpartition("/")[2]))
            key_fetch = Fetch(key_url, Kind.KEY, f"the key of {url.rpartition('/')[2]}")
            blob = yield key_fetch
            key_download = self.record(key_fetch)
            if blob is not None:
                key_download.found, key_download.size = True, len(blob)
                try:
                    key, source = yealink_aes.decrypt_key(blob), "its _Security.enc"
                except yealink_aes.AesError as exc:
                    self.out.findings.append(error(key_url, None, "bad-key-file", str(exc)))
        setting = AES_MAC if file_class(urlsplit(url).path) == "mac" else AES_COMMON
        if key is None:
            key, source = self.value(setting) or None, setting
        if key is None:
            download.note = "encrypted, and the phone has no key for it: ignored"
            self.out.findings.append(error(
                url, None, "no-key",
                f"encrypted, but the phone has neither {AES_IN_FILE} = 1 (with a key file on the server) nor "
                f"{setting} from an earlier file or its own settings: it cannot read it"))
            return None
        try:
            plain = yealink_aes.decrypt(data, key)
        except yealink_aes.AesError as exc:
            download.note = f"cannot be decrypted: {exc}"
            self.out.findings.append(error(url, None, "bad-encryption", str(exc)))
            return None
        download.note = f"decrypted with the key from {source}"
        return plain

    def apply(self, download: Download, *, local: bool = False) -> None:
        url = download.url
        cfg = parse_cfg(download.data or b"", url)
        self.out.findings += cfg.findings
        if not cfg.header_ok:
            download.note = (download.note + "; " if download.note else "") + "ignored: no header line"
            return
        download.applied = True
        for entry in cfg.entries:
            if entry.models and not self.phone.model.matches(entry.models, self.phone.firmware):
                continue
            param = self.out.params.setdefault(entry.key, Param(entry.key))
            if entry.value == "" and not self.overwrite:
                why = "overwrite_mode = 0" if self.out.overwrite_mode == 0 else "no boot file, no overwrite mode"
                param.history.append(Assignment("", url, entry.line, applied=False,
                                                note=f"blank: the earlier value is kept ({why})"))
                continue
            note = "blank: the factory default (overwrite_mode = 1)" if entry.value == "" else ""
            if local:
                note = "MAC-local: takes precedence over every other file"
            param.history.append(Assignment(entry.value, url, entry.line, note=note))


def _modes(boot: BootFile, phone: Phone) -> tuple[int, int]:
    values = {"overwrite_mode": 1, "specific_model.excluded_mode": 0}  # guide: the defaults with a boot file
    for key, settings in boot.settings.items():
        for setting in settings:
            if not setting.models or phone.model.matches(setting.models, phone.firmware):
                values[key] = setting.value
    return values["overwrite_mode"], values["specific_model.excluded_mode"]


def provision(phone: Phone, server_url: str, *,
              expand: Expand = expand_wildcards) -> Generator[Fetch, bytes | None, Outcome]:
    """The guide's download algorithm for one phone; see the module docstring."""
    expanded = expand(server_url, phone)
    run = _Run(phone, expanded)
    out = run.out
    folder, boot_url = server_base(expanded)
    mac = phone.mac

    boot: BootFile | None = None
    if phone.model.reads_boot_files(phone.firmware):
        candidates = [(boot_url, "the boot file the server URL names")] if boot_url else [
            (folder + f"{mac}.boot", "MAC-oriented boot file"), (folder + COMMON_BOOT, "common boot file")]
        for url, why in candidates:
            fetch = Fetch(url, Kind.BOOT, why)
            data = yield fetch
            download = run.record(fetch)
            if data is None:
                continue
            download.found, download.size = True, len(data)
            parsed = parse_boot(data, url)
            out.findings += parsed.findings
            if not parsed.header_ok:
                # Unverified: a boot file without its header is taken as unusable, and the phone goes on.
                download.note = "ignored: no header line"
                continue
            download.applied = True
            boot, out.boot = parsed, url
            break
        if boot is None and boot_url:
            out.notes.append("the server URL names a boot file that is not there: the phone downloads nothing else")
            out.mechanism = "boot"
            return out
    else:
        out.notes.append(f"firmware {phone.firmware} of the {phone.model.product} reads no boot files (from "
                         f"{phone.model.boot_since}): the old mechanism")

    if boot is not None and out.boot is not None:
        out.mechanism = "boot"
        overwrite, excluded = _modes(boot, phone)
        out.overwrite_mode, out.excluded_mode = overwrite, excluded
        out.exclude_supported = phone.model.has_exclude_mode(phone.firmware)
        run.overwrite = overwrite == 1
        if excluded and not out.exclude_supported:
            out.notes.append(f"specific_model.excluded_mode = 1, but the {phone.model.product} has no exclude mode"
                             " on this firmware: append mode")
        specific = [i for i in boot.includes if i.models and phone.model.matches(i.models, phone.firmware)]
        plain = [i for i in boot.includes if not i.models]
        exclude = bool(excluded and out.exclude_supported)
        first = specific if exclude else [i for i in boot.includes if i in specific or not i.models]
        found_specific = False
        for inc in first:
            url = join(out.boot, expand(inc.url, phone))
            why = (f"include, {out.boot.rpartition('/')[2]} line {inc.line}"
                   + (f" [{','.join(inc.models)}]" if inc.models else ""))
            got = yield from run.fetch_cfg(url, Kind.CFG, why)
            if not got.found:
                out.findings.append(error(out.boot, inc.line, "include-missing",
                                          f"include:config {inc.url!r}: {url} is not on the server", url))
                continue
            found_specific = found_specific or bool(inc.models)
            if got.data is not None:
                run.apply(got)
        if exclude:
            if specific and found_specific:
                out.notes.append("exclude mode: model-specific files were found, the unspecified ones are skipped")
            else:
                out.notes.append("exclude mode: no model-specific file found on the server, so the unspecified "
                                 "ones are downloaded")
                for inc in plain:
                    url = join(out.boot, expand(inc.url, phone))
                    got = yield from run.fetch_cfg(url, Kind.CFG, f"include, {out.boot.rpartition('/')[2]} line "
                                                   f"{inc.line} (exclude mode fallback)")
                    if not got.found:
                        out.findings.append(error(out.boot, inc.line, "include-missing",
                                                  f"include:config {inc.url!r}: {url} is not on the server", url))
                    elif got.data is not None:
                        run.apply(got)
    else:
        out.mechanism = "old"
        for name, why in ((phone.model.common_cfg, f"common CFG of the {phone.model.product}"),
                          (f"{mac}.cfg", "MAC-oriented CFG")):
            url = folder + name
            got = yield from run.fetch_cfg(url, Kind.CFG, why)
            if got.data is not None:
                run.apply(got)

    # Resource files named by the parameters in force, in the order they were first set. Unverified: a relative
    # resource URL is taken relative to the server URL.
    for key, param in list(out.params.items()):
        value = out.value(key)
        if value and table().is_resource_key(key):
            url = join(folder, value)
            fetch = Fetch(url, Kind.RESOURCE, f"{key} ({param.final.file.rpartition('/')[2]} line "
                                              f"{param.final.line})")
            data = yield fetch
            download = run.record(fetch)
            if data is not None:
                download.found, download.size = True, len(data)
            else:
                out.findings.append(warning(param.final.file, param.final.line, "resource-missing",
                                            f"{key} = {value}: {url} is not on the server", url))

    if out.value(SYNC) == "1":
        base = out.value(SYNC_PATH) or folder
        url = join(base if base.endswith("/") else base + "/", f"{mac}-local.cfg")
        out.local_url = url
        got = yield from run.fetch_cfg(url, Kind.LOCAL, f"MAC-local CFG ({SYNC} = 1)")
        if got.data is not None:
            if out.value(PROTECT) == "1":
                run.apply(got, local=True)
            else:
                got.note = f"downloaded, not applied: {PROTECT} is not 1"
    else:
        out.notes.append(f"<mac>-local.cfg is not requested: {SYNC} is not 1")
    md5 = out.cfg_md5()
    if phone.last_md5 and md5 and md5 == dict(phone.last_md5):
        out.updated = False
        out.notes.append("every CFG file has the MD5 of the last provisioning: completed without a repeated update")
    return out


def run(phone: Phone, server_url: str, fetch: Callable[[str], bytes | None], *,
        expand: Expand = expand_wildcards) -> Outcome:
    """Drive :func:`provision` with a synchronous fetcher (the CLI's resolver, a test's dict)."""
    steps = provision(phone, server_url, expand=expand)
    try:
        request = next(steps)
        while True:
            request = steps.send(fetch(request.url))
    except StopIteration as done:
        result: Outcome = done.value
        return result


class Session:
    """The same algorithm step by step, for a driver that fetches asynchronously (simulated phones):
    ``request = session.start()``, then ``request = session.feed(data)`` until it returns None; then ``outcome``."""

    def __init__(self, phone: Phone, server_url: str, *, expand: Expand = expand_wildcards) -> None:
        self._steps = provision(phone, server_url, expand=expand)
        self.outcome: Outcome | None = None

    def start(self) -> Fetch | None:
        return self._advance(None, first=True)

    def feed(self, data: bytes | None) -> Fetch | None:
        return self._advance(data, first=False)

    def _advance(self, data: bytes | None, *, first: bool) -> Fetch | None:
        try:
            return next(self._steps) if first else self._steps.send(data)
        except StopIteration as done:
            self.outcome = done.value
            return None
