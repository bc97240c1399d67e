"""Reading the shipped systemd unit, so that tests take the daemon's privileges from it rather than from a copy."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "bootstrapd.service"


def directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, in order, a key given several times keeping each value."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def capabilities(text: str, key: str = "AmbientCapabilities") -> list[str]:
    """The capabilities a unit grants (``AmbientCapabilities=``) or allows (``CapabilityBoundingSet=``)."""
    return sorted({cap for value in directives(text).get(key, []) for cap in value.split()})


def setpriv(text: str, uid: int, gid: int, drop: str | None = None) -> list[str]:
    """A setpriv command line that runs a program as ``uid:gid`` with the unit's capabilities (less ``drop``) and no
    others, no supplementary groups and no way to gain privileges, as systemd would start it."""
    caps = [cap for cap in capabilities(text) if cap != drop]
    bounding = [cap for cap in capabilities(text, "CapabilityBoundingSet") if cap != drop]
    listed = ",".join(f"+{cap.lower().removeprefix('cap_')}" for cap in caps)
    argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
            f"--inh-caps=-all{',' + listed if listed else ''}",
            f"--ambient-caps=-all{',' + listed if listed else ''}",
            "--bounding-set=-all" + "".join(f",+{c.lower().removeprefix('cap_')}" for c in bounding)]
    if directives(text).get("NoNewPrivileges") == ["yes"]:
        argv.append("--no-new-privs")
    return [*argv, "--"]
