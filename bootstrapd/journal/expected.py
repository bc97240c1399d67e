"""The provisioning model's download list for a phone: what "done" means in the journal.

The journal asks once per phone, when it first learns the phone's model (its PnP SUBSCRIBE or User-Agent). The
answer is the model's own (``provisioning.explain``, the code of ``bootstrapd explain``): the files the phone
downloads, in order, from the URL it is given, as names of the served tree; a file the model tries but the tree
lacks (``<mac>.boot`` beside a common boot file, a ``-local.cfg``) is not part of it. Called from the journal's writer
thread; a model it does not know, or any failure, answers None and the journal falls back to ``<mac>.cfg``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from bootstrapd.config import Settings

log = logging.getLogger("bootstrapd.journal")


def downloads_for(settings: Callable[[], Settings], iface: Any, provisioning: Callable[[], Any]
                  ) -> Callable[[str, str | None], Sequence[str] | None]:
    from bootstrapd.provisioning.explain import explain
    from bootstrapd.provisioning.models import table

    models = table()

    def expected(mac: str, model_name: str | None) -> Sequence[str] | None:
        if not model_name:
            return None
        model = models.find(model_name)
        if model is None:
            return None
        tree = provisioning()
        if tree is None:
            return None
        found = explain(settings(), mac.replace(":", ""), model, iface=iface, provisioning=tree)
        names: list[str] = []
        for download in found.outcome.downloads:
            record = found.records.get(download.url)
            if download.found and record is not None and record.name:
                names.append(record.name)
        return names

    return expected
