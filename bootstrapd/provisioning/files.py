"""The resolver every file service shares, built from the settings in force (and again on reload)."""

from __future__ import annotations

from bootstrapd.config import Settings
from bootstrapd.provisioning.access import AccessRules, Owners
from bootstrapd.provisioning.auth import AuthTable
from bootstrapd.provisioning.resolver import Resolver
from bootstrapd.provisioning.uploads import UploadStore


def build_resolver(settings: Settings, owners: Owners | None) -> Resolver:
    """Raises ValueError for an impossible layout (the upload store inside the tree)."""
    prov = settings.provisioning
    uploads = UploadStore(settings.server.state_dir / "uploads", prov.upload_patterns, enabled=prov.uploads,
                          max_size=prov.upload_max_size, total_max_size=prov.upload_total_max_size)
    access = AccessRules(AuthTable(settings.auth), prov.mac_files, owners)
    # The hot-file cache is TFTP's (tftp.cache_size, tftp.large_file_size) and now serves HTTP and FTP too.
    return Resolver(settings.server.root, settings.tftp.cache_size, settings.tftp.large_file_size, access=access,
                    uploads=uploads)
