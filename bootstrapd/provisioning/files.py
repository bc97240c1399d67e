"""The resolver every file service shares, built from the settings in force (and again on reload)."""

from __future__ import annotations

from bootstrapd.config import Settings
from bootstrapd.provisioning.access import AccessRules, Owners
from bootstrapd.provisioning.auth import AuthTable
from bootstrapd.provisioning.names import TEMPLATE_SUFFIX
from bootstrapd.provisioning.resolver import Resolver
from bootstrapd.provisioning.uploads import UploadStore


def build_resolver(settings: Settings, owners: Owners | None, *, admin: bool = False) -> Resolver:
    """Raises ValueError for an impossible layout (the upload store inside the tree).

    ``admin``: the administrator's view for ``check`` and ``explain`` (every file, no [[auth]], no MAC-file rule).
    """
    prov = settings.provisioning
    uploads = UploadStore(settings.server.state_dir / "uploads", prov.upload_patterns, enabled=prov.uploads,
                          max_size=prov.upload_max_size, total_max_size=prov.upload_total_max_size,
                          max_receiving=prov.max_uploads)
    access = AccessRules() if admin else AccessRules(AuthTable(settings.auth), prov.mac_files, owners)
    # The hot-file cache is TFTP's (tftp.cache_size, tftp.large_file_size) and now serves HTTP and FTP too.
    # Template sources are never served (what they render is): the provisioning service plugs the rendered files
    # in as overlays once it has built them.
    return Resolver(settings.server.root, settings.tftp.cache_size, settings.tftp.large_file_size, access=access,
                    uploads=uploads, hidden=(TEMPLATE_SUFFIX,))
