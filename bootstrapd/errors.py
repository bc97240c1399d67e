"""The one error family for bad input from the wire.

Every codec and protocol core raises a subclass of :class:`ProtocolError` for anything a peer sent that it cannot
accept; adapters catch exactly this family, count the datagram as dropped and go on. Anything else escaping a core
is a bug in bootstrapd, not in the peer.
"""


class ProtocolError(Exception):
    """Input from the network that cannot be accepted."""
