"""Reading a capture (pcap or pcapng, from tcpdump, Wireshark or the recorder) into per-phone timelines.

scapy reads the file and dissects Ethernet, IP, UDP, TCP, DHCP and DHCPv6; the provisioning payloads (TFTP, SIP,
HTTP, FTP) are small enough to read here. Imported only by ``bootstrapd trace``: scapy takes seconds to load.

Which phone a packet belongs to: DHCP by its ``chaddr`` (DHCPv6 by the client DUID's link-layer address), anything
else by the Ethernet address of the side that is the client (the sender of a request, the receiver of a response);
an address seen in a DHCP ACK, or as the source of a client's frame, maps to that MAC for the rest of the capture.
TFTP transfers are followed as Wireshark does: from the client's address and port of the RRQ/WRQ.

Secrets never reach the output: a FTP ``PASS`` is shown as ``PASS ****``, an HTTP ``Authorization`` header only as
"sent".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bootstrapd.journal.diagnose import Ev
from bootstrapd.journal.steps import clean, normal_mac

TFTP_ERRORS = {0: "Not defined", 1: "File not found", 2: "Access violation", 3: "Disk full or allocation exceeded",
               4: "Illegal TFTP Operation", 5: "Unknown transfer ID", 6: "File already exists", 7: "No such user",
               8: "Option negotiation failed"}
DHCP_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE", 8: "INFORM"}
DHCP6_TYPES = {1: "SOLICIT", 2: "ADVERTISE", 3: "REQUEST", 4: "CONFIRM", 5: "RENEW", 6: "REBIND", 7: "REPLY",
               8: "RELEASE", 9: "DECLINE", 10: "RECONFIGURE", 11: "INFORMATION-REQUEST"}
HTTP_METHODS = (b"GET ", b"HEAD ", b"PUT ", b"POST ", b"DELETE ", b"OPTIONS ")
_SIP_MAC = re.compile(r"sip:MAC([0-9A-Fa-f]{12})@")
SIP_METHODS = (b"SUBSCRIBE ", b"NOTIFY ", b"OPTIONS ", b"REGISTER ", b"INVITE ", b"ACK ", b"BYE ")


def _mac(value: object) -> str | None:
    text = str(value).lower()
    if len(text) != 17 or text in ("ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00") or int(text[:2], 16) & 1:
        return None  # broadcast, multicast or nothing
    return text


class Decoder:
    """Turns packets into :class:`Ev` one at a time, keeping the little state the protocols need."""

    def __init__(self) -> None:
        self.ip_mac: dict[str, str] = {}
        self.tftp: dict[tuple[str, int], dict[str, Any]] = {}  # client (ip, port) -> the transfer
        self.http: dict[tuple[str, int, str, int], list[dict[str, Any]]] = {}  # connection -> requests waiting
        self.ftp: dict[tuple[str, int], dict[str, Any]] = {}  # client (ip, port) -> last command
        self.number = 0

    def packet(self, pkt: Any, when: float) -> Iterator[Ev]:
        from scapy.layers.dhcp import BOOTP
        from scapy.layers.inet import IP, TCP, UDP
        from scapy.layers.inet6 import IPv6
        from scapy.layers.l2 import Ether

        self.number += 1
        if Ether not in pkt:
            return
        eth = pkt[Ether]
        if IP in pkt:
            ip = pkt[IP]
        elif IPv6 in pkt:
            ip = pkt[IPv6]
        else:
            return
        src, dst, esrc, edst = str(ip.src), str(ip.dst), _mac(eth.src), _mac(eth.dst)
        if UDP in pkt:
            udp = pkt[UDP]
            payload = bytes(udp.payload)
            sport, dport = int(udp.sport), int(udp.dport)
            if BOOTP in pkt:
                yield from self._dhcp(pkt, when, src, dst)
            elif sport in (546, 547) or dport in (546, 547):
                yield from self._dhcp6(pkt, when, src, dst, esrc)
            elif payload[:4] == b"SIP/" or payload.startswith(SIP_METHODS):
                yield from self._sip(payload, when, src, dst, sport, dport, esrc, edst)
            else:
                yield from self._tftp(payload, when, src, dst, sport, dport, esrc, edst)
        elif TCP in pkt:
            tcp = pkt[TCP]
            payload = bytes(tcp.payload)
            if payload:
                yield from self._tcp(payload, when, src, dst, int(tcp.sport), int(tcp.dport), esrc, edst)

    def _ev(self, when: float, mac: str | None, proto: str, src: str, dst: str, info: str, **facts: Any) -> Ev:
        return Ev(when, mac, proto, src, dst, info, facts, self.number)

    def _client_mac(self, ip: str, eth: str | None) -> str | None:
        if eth is not None and ip not in ("0.0.0.0", "::"):
            self.ip_mac.setdefault(ip, eth)
        return self.ip_mac.get(ip) or eth

    # -- DHCP ---------------------------------------------------------------------------------------------------
    def _dhcp(self, pkt: Any, when: float, src: str, dst: str) -> Iterator[Ev]:
        from scapy.layers.dhcp import BOOTP, DHCP

        bootp = pkt[BOOTP]
        mac = _mac(":".join(f"{b:02x}" for b in bytes(bootp.chaddr)[:6]))
        options: dict[str, Any] = {}
        codes: list[int] = []
        if DHCP in pkt:
            from scapy.layers.dhcp import DHCPRevOptions

            for opt in pkt[DHCP].options:
                if isinstance(opt, tuple) and len(opt) >= 2:
                    name = str(opt[0])
                    options[name] = opt[1]
                    code = DHCPRevOptions.get(name, (None,))[0]
                    if isinstance(code, int):
                        codes.append(code)
                    elif name.startswith("unknown") or name.isdigit():
                        codes.append(int(name.rsplit("_", 1)[-1]) if not name.isdigit() else int(name))
        kind = DHCP_TYPES.get(int(options.get("message-type", 0) or 0), "BOOTP")
        prl = options.get("param_req_list") or []
        if isinstance(prl, int):
            prl = [prl]
        yiaddr = str(bootp.yiaddr)
        server = options.get("server_id")
        facts: dict[str, Any] = {"type": kind, "xid": int(bootp.xid), "options": sorted(set(codes)),
                                 "prl": [int(c) for c in prl]}
        if kind in ("OFFER", "ACK"):
            facts["address"] = yiaddr
            facts["server"] = str(server) if server else src
            if mac:
                self.ip_mac[yiaddr] = mac
        info = f"DHCP {kind.title()} - Transaction ID {int(bootp.xid):#010x}"
        if kind in ("OFFER", "ACK"):
            shown = " ".join(str(c) for c in facts["options"])
            boot = options.get("tftp_server_name") or options.get("boot-file-name")
            info += f", {yiaddr} from {facts['server']} (options {shown})"
            if boot:
                info += f", 66 {clean(boot if isinstance(boot, str) else bytes(boot).decode(errors='replace'), 80)}"
        elif kind in ("DISCOVER", "REQUEST") and facts["prl"]:
            info += f", asks for {' '.join(str(c) for c in facts['prl'])}"
        yield self._ev(when, mac, "DHCP", src, dst, info, from_phone=kind in ("DISCOVER", "REQUEST", "DECLINE",
                                                                               "RELEASE", "INFORM"), **facts)

    def _dhcp6(self, pkt: Any, when: float, src: str, dst: str, esrc: str | None) -> Iterator[Ev]:
        from scapy.layers import dhcp6

        layer = next((pkt[c] for c in (dhcp6.DHCP6_Solicit, dhcp6.DHCP6_Advertise, dhcp6.DHCP6_Request,
                                         dhcp6.DHCP6_Reply, dhcp6.DHCP6_Renew, dhcp6.DHCP6_Rebind,
                                         dhcp6.DHCP6_InfoRequest, dhcp6.DHCP6_Release, dhcp6.DHCP6_Confirm)
                      if c in pkt), None)
        if layer is None:
            return
        kind = DHCP6_TYPES.get(int(layer.msgtype), str(layer.msgtype))
        mac = None
        if dhcp6.DHCP6OptClientId in pkt:
            duid = pkt[dhcp6.DHCP6OptClientId].duid
            lladdr = getattr(duid, "lladdr", None)
            mac = _mac(lladdr) if lladdr else None
        from_phone = kind not in ("ADVERTISE", "REPLY", "RECONFIGURE")
        if mac is None and from_phone:
            mac = esrc
        address = str(pkt[dhcp6.DHCP6OptIAAddress].addr) if dhcp6.DHCP6OptIAAddress in pkt else None
        if address and mac:
            self.ip_mac[address] = mac
        info = f"{kind} XID: {int(layer.trid):#x}" + (f", {address}" if address else "")
        if dhcp6.DHCP6OptBootFileUrl in pkt:
            info += f", boot-file-url {clean(bytes(pkt[dhcp6.DHCP6OptBootFileUrl].optdata).decode(errors='replace'))}"
        yield self._ev(when, mac, "DHCPv6", src, dst, info, type=kind, address=address, from_phone=from_phone)

    # -- SIP ----------------------------------------------------------------------------------------------------
    def _sip(self, payload: bytes, when: float, src: str, dst: str, sport: int, dport: int, esrc: str | None,
             edst: str | None) -> Iterator[Ev]:
        text = payload.decode("utf-8", errors="replace")
        head, _, body = text.replace("\r\n", "\n").partition("\n\n")
        lines = head.split("\n")
        first = lines[0]
        headers: dict[str, str] = {}
        compact = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "o": "event", "c":
                   "content-type", "l": "content-length"}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            headers.setdefault(compact.get(key, key), value.strip())
        cseq_number, _, cseq_method = headers.get("cseq", "").partition(" ")
        facts: dict[str, Any] = {"call_id": headers.get("call-id"), "cseq": cseq_number.strip(),
                                 "cseq_method": cseq_method.strip().upper()}
        if first.startswith("SIP/"):
            parts = first.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            facts["status"] = status
            from_phone = facts["cseq_method"] == "NOTIFY"
            info = f"Status: {clean(first[8:], 60)} ({facts['cseq_method']})"
        else:
            method = first.split(" ", 1)[0]
            facts["method"] = method
            from_phone = method != "NOTIFY"
            info = f"Request: {clean(first.rsplit(' ', 1)[0], 100)}"
            if method == "SUBSCRIBE" and headers.get("event"):
                info += f", Event: {clean(headers['event'], 100)}"
            if method == "NOTIFY" and body.strip():
                info += f", URL {clean(body.strip().splitlines()[0], 120)}"
        # A PnP phone names its MAC in its SIP URIs (sip:MAC001565aabbcc@…): the journal keys it by that one too.
        named = _SIP_MAC.search(" ".join((first, headers.get("from", ""), headers.get("to", ""))))
        phone_ip = src if from_phone else dst
        if named:
            mac: str | None = normal_mac(named.group(1))
            assert mac is not None
            self.ip_mac[phone_ip] = mac
        else:
            mac = self._client_mac(src, esrc) if from_phone else (self.ip_mac.get(dst) or edst)
        yield self._ev(when, mac, "SIP", src, dst, info, from_phone=from_phone, **facts)

    # -- TFTP ---------------------------------------------------------------------------------------------------
    def _tftp(self, payload: bytes, when: float, src: str, dst: str, sport: int, dport: int, esrc: str | None,
              edst: str | None) -> Iterator[Ev]:
        if len(payload) < 4:
            return
        opcode = int.from_bytes(payload[:2], "big")
        if opcode in (1, 2):
            parts = payload[2:].split(b"\0")
            if len(parts) < 2:
                return
            name = clean(parts[0].decode("utf-8", errors="replace"))
            options = {parts[i].decode(errors="replace").lower(): parts[i + 1].decode(errors="replace")
                       for i in range(2, len(parts) - 1, 2) if parts[i]}
            self.tftp[(src, sport)] = {"file": name, "op": "RRQ" if opcode == 1 else "WRQ", "answered": False}
            mac = self._client_mac(src, esrc)
            shown = "".join(f", {k}: {clean(v, 20)}" for k, v in options.items())
            verb = "Read" if opcode == 1 else "Write"
            yield self._ev(when, mac, "TFTP", src, dst, f"{verb} Request, File: {name}, Transfer type: "
                                                        f"{clean(parts[1].decode(errors='replace'), 10)}{shown}",
                           op="RRQ" if opcode == 1 else "WRQ", file=name, options=options, conv=f"{src}:{sport}",
                           request_file=name if opcode == 1 else None, from_phone=True)
            return
        from_phone = (src, sport) in self.tftp
        key = (src, sport) if from_phone else (dst, dport)
        transfer = self.tftp.get(key)
        if transfer is None:
            return
        mac = self._client_mac(src, esrc) if from_phone else (self.ip_mac.get(dst) or edst)
        conv = f"{key[0]}:{key[1]}"
        name = transfer["file"]
        facts: dict[str, Any] = {"conv": conv, "file": name, "from_phone": from_phone}
        first_answer = not from_phone and not transfer["answered"]
        if opcode == 3:
            block = int.from_bytes(payload[2:4], "big")
            size = len(payload) - 4
            facts.update(op="DATA", block=block, size=size)
            info = f"Data Packet, Block: {block}" + (" (last)" if size < 512 else "")
        elif opcode == 4:
            block = int.from_bytes(payload[2:4], "big")
            facts.update(op="ACK", block=block)
            info = f"Acknowledgement, Block: {block}"
        elif opcode == 5:
            code = int.from_bytes(payload[2:4], "big")
            message = clean(payload[4:].split(b"\0", 1)[0].decode("utf-8", errors="replace"), 100)
            facts.update(op="ERROR", code=code, message=message)
            info = f"Error Code, Code: {TFTP_ERRORS.get(code, str(code))}, Message: {message}"
            if first_answer:
                facts.update(result_for=name, not_found=code == 1, ok=False)
        elif opcode == 6:
            parts = payload[2:].split(b"\0")
            options = {parts[i].decode(errors="replace").lower(): parts[i + 1].decode(errors="replace")
                       for i in range(0, len(parts) - 1, 2) if parts[i]}
            facts.update(op="OACK", options=options)
            info = "Option Acknowledgement" + "".join(f", {k}: {clean(v, 20)}" for k, v in options.items())
        else:
            return
        if first_answer:
            transfer["answered"] = True
            if opcode in (3, 6) and transfer["op"] == "RRQ":
                facts.update(result_for=name, ok=True)
        yield self._ev(when, mac, "TFTP", src, dst, info, **facts)

    # -- HTTP and FTP -------------------------------------------------------------------------------------------
    def _tcp(self, payload: bytes, when: float, src: str, dst: str, sport: int, dport: int, esrc: str | None,
             edst: str | None) -> Iterator[Ev]:
        if payload.startswith(HTTP_METHODS):
            head = payload.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            method, path = parts[0], clean(parts[1] if len(parts) > 1 else "", 200)
            auth = any(line.lower().startswith("authorization:") for line in lines[1:])
            self.http.setdefault((src, sport, dst, dport), []).append({"path": path, "auth": auth})
            mac = self._client_mac(src, esrc)
            yield self._ev(when, mac, "HTTP", src, dst, f"{method} {path} {parts[-1] if len(parts) > 2 else ''}"
                           .rstrip() + (" (Authorization sent)" if auth else ""), method=method, from_phone=True,
                           request_file=path.split("?", 1)[0].lstrip("/") if method == "GET" else None)
            return
        if payload.startswith(b"HTTP/1."):
            waiting = self.http.get((dst, dport, src, sport))
            request = waiting.pop(0) if waiting else None
            line = clean(payload.split(b"\r\n", 1)[0].decode("latin-1"), 100)
            parts = line.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            facts: dict[str, Any] = {"status": status, "from_phone": False}
            if request is not None:
                name = str(request["path"]).split("?", 1)[0].lstrip("/")
                facts.update(result_for=name, not_found=status == 404, ok=200 <= status < 300,
                             authorization=request["auth"])
            mac = self.ip_mac.get(dst) or edst
            yield self._ev(when, mac, "HTTP", src, dst, line, **facts)
            return
        if dport == 21 or sport == 21:
            yield from self._ftp(payload, when, src, dst, sport, dport, esrc, edst)

    def _ftp(self, payload: bytes, when: float, src: str, dst: str, sport: int, dport: int, esrc: str | None,
             edst: str | None) -> Iterator[Ev]:
        text = payload.decode("utf-8", errors="replace").strip()
        if not text:
            return
        if dport == 21:
            command, _, arg = text.split("\r\n", 1)[0].partition(" ")
            command = command.upper()
            if command == "PASS":
                arg = "****"
            self.ftp[(src, sport)] = {"command": command, "arg": clean(arg, 200)}
            mac = self._client_mac(src, esrc)
            yield self._ev(when, mac, "FTP", src, dst, f"Request: {command} {clean(arg, 200)}".rstrip(),
                           command=command, from_phone=True, request_file=clean(arg, 200) if command == "RETR"
                           else None)
            return
        line = clean(text.split("\r\n")[-1], 120)
        code = int(line[:3]) if line[:3].isdigit() else 0
        last = self.ftp.get((dst, dport), {})
        facts: dict[str, Any] = {"ftp_code": code, "from_phone": False}
        if last.get("command") == "RETR" and code >= 200:
            facts.update(result_for=last.get("arg"), not_found=code == 550, ok=code == 226)
        mac = self.ip_mac.get(dst) or edst
        yield self._ev(when, mac, "FTP", src, dst, f"Response: {line}", **facts)


def read_capture(path: Path, progress: Callable[[int], None] | None = None) -> list[Ev]:
    """Every event of a pcap/pcapng file, in capture order; raises OSError or ValueError for unreadable files.
    ``progress`` is called with the number of packets read every 5,000 packets (scapy reads a few thousand a
    second)."""
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.error import Scapy_Exception
    from scapy.layers import dhcp, dhcp6, inet, inet6, l2  # noqa: F401  (registers the dissectors)
    from scapy.utils import PcapReader

    decoder = Decoder()
    events: list[Ev] = []
    try:
        with PcapReader(str(path)) as reader:
            for pkt in reader:
                events.extend(decoder.packet(pkt, float(pkt.time)))
                if progress is not None and decoder.number % 5000 == 0:
                    progress(decoder.number)
    except Scapy_Exception as exc:
        raise ValueError(f"{path}: not a pcap or pcapng capture ({exc})") from None
    return events
