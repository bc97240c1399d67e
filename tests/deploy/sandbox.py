"""Running a script as root on this machine without changing it: a private mount and PID namespace in which the
folders the script writes are overlays, so everything it installs, enables or removes vanishes with the namespace,
and a process it might end by mistake can only be one of its own (no other process is visible from inside)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.conftest import require_root, require_tools

_PREAMBLE = """set -euo pipefail
mount -t tmpfs tmpfs "$SANDBOX_SCRATCH"
for dir in $SANDBOX_OVERLAYS; do
  name=$(echo "$dir" | tr / _)
  mkdir -p "$SANDBOX_SCRATCH/$name.up" "$SANDBOX_SCRATCH/$name.work"
  mount -t overlay overlay -o "lowerdir=$dir,upperdir=$SANDBOX_SCRATCH/$name.up,workdir=$SANDBOX_SCRATCH/$name.work" \\
    "$dir"
done
"""


def run(script: str, scratch: Path, overlays: Sequence[str], env: Mapping[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the bash ``script`` in the sandbox; ``scratch`` (an empty folder) holds the overlays' upper layers."""
    require_root()
    require_tools("unshare")
    missing = [d for d in overlays if not os.path.isdir(d)]
    assert not missing, f"cannot overlay missing folders {missing}"
    full = dict(os.environ, **(env or {}), SANDBOX_SCRATCH=str(scratch), SANDBOX_OVERLAYS=" ".join(overlays))
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
                           "bash", "-c", _PREAMBLE + script], env=full, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
