"""bootstrapd: a network bootstrap appliance for SIP desk phones."""

__version__ = "0.1.0"
