"""DHCPv6 on the wire, as a client on the lab link sends it, replies decoded with scapy (issue #8 items 6-8):
messages sent to the server's unicast address (RFC 8415 16, 18.4), a relay from a link bootstrapd does not serve
(13.1), the Information Refresh Time of a stateless reply (21.23)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from scapy.layers.dhcp6 import (
    DHCP6_RelayReply,
    DHCP6_Reply,
    DHCP6OptIA_NA,
    DHCP6OptInfoRefreshTime,
    DHCP6OptRelayMsg,
    DHCP6OptStatusCode,
)

from tests.lab.netns import Lab
from tests.lab.test_dhcp6 import _start

# In the phone's namespace: requests built with bootstrapd's own codec (the server under test decodes them; the
# replies are decoded by scapy in the test), sent in order on one socket, so a reply that never comes is known
# missing once the reply to a later request has arrived.
CLIENT = textwrap.dedent("""
    import json, socket, sys
    sys.path.insert(0, {root!r})
    from ipaddress import IPv6Address
    from bootstrapd.dhcp6 import codec
    from bootstrapd.dhcp6.codec import IaNa, Message, RelayMessage
    DUID = b"\\x00\\x03\\x00\\x01" + bytes.fromhex("001565770001")
    ifindex = socket.if_nametoindex("eth0")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, 25, b"eth0")
    sock.bind(("::", 546))
    sock.settimeout(20)
    SERVER, GROUP = ("fd77::1", 547), ("ff02::1:2", 547, 0, ifindex)

    def send(xid, kind, where, *options):
        sock.sendto(Message(kind, xid, [(codec.OPT_CLIENTID, DUID), *options]).encode(), where)

    def until(xid):
        seen = {{}}
        while xid not in seen:
            data, _ = sock.recvfrom(65535)
            seen[int.from_bytes(data[1:4], "big")] = data.hex()
        return seen

    out = {{}}
    send(1, codec.INFORMATION_REQUEST, SERVER)                    # unicast: discarded
    send(2, codec.INFORMATION_REQUEST, GROUP)                     # multicast: answered
    seen = until(2)
    out["unicast_information_request"] = seen.get(1)
    out["information_reply"] = seen[2]
    server_id = Message(0, 0, codec.parse_options(bytes.fromhex(seen[2]), 4)).get(codec.OPT_SERVERID)
    ia = (codec.OPT_IA_NA, IaNa(7).encode())
    send(3, codec.RENEW, SERVER, (codec.OPT_SERVERID, server_id), ia)  # unicast Renew: UseMulticast
    out["unicast_renew"] = until(3)[3]
    # A relay on 2001:db8:99::/64 (this phone playing the relay): relay-forw to the server's unicast address.
    inner = Message(codec.SOLICIT, 4, [(codec.OPT_CLIENTID, DUID + b"r"), ia])
    relay = RelayMessage(codec.RELAY_FORW, 0, IPv6Address("2001:db8:99::1"), IPv6Address("fe80::99"), inner)
    relay_sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    relay_sock.setsockopt(socket.SOL_SOCKET, 25, b"eth0")
    relay_sock.bind(("::", 547))
    relay_sock.settimeout(20)
    relay_sock.sendto(relay.encode(), SERVER)
    out["foreign_relay"] = relay_sock.recvfrom(65535)[0].hex()
    print(json.dumps(out))
""")


def test_unicast_rules_relay_link_and_refresh_time_on_the_wire(lab: Lab, workdir: Path) -> None:
    app, [phone] = _start(lab, workdir, phones=1)
    phone_address = "fd77::50/64"
    phone.run(["ip", "-6", "addr", "add", phone_address, "dev", "eth0", "nodad"], check=True)
    script = workdir / "client6.py"
    script.write_text(CLIENT.format(root=str(Path(__file__).resolve().parents[2])))
    result = phone.run([sys.executable, str(script)], timeout=120)
    assert result.returncode == 0, result.stderr + app.log()[-2000:]
    out = json.loads(result.stdout)
    # RFC 8415 16: an Information-Request to the unicast address is discarded; the multicast one is answered, with
    # option 32 (21.23).
    assert out["unicast_information_request"] is None
    info = DHCP6_Reply(bytes.fromhex(out["information_reply"]))
    assert info[DHCP6OptInfoRefreshTime].reftime == 3600
    # RFC 8415 18.4: a unicast Renew gets a Reply with UseMulticast and nothing else but the identifiers.
    renew = DHCP6_Reply(bytes.fromhex(out["unicast_renew"]))
    assert renew[DHCP6OptStatusCode].statuscode == 5
    assert DHCP6OptIA_NA not in renew
    # RFC 8415 13.1: a relay on a link without addresses here gets NoAddrsAvail inside the IA, and no lease.
    relayed = DHCP6_RelayReply(bytes.fromhex(out["foreign_relay"]))
    advertise = relayed[DHCP6OptRelayMsg].message
    assert advertise[DHCP6OptIA_NA][DHCP6OptStatusCode].statuscode == 2
    app.stop()
    assert "2001:db8:99::1, which has no addresses here" in app.log()
