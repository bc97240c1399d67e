"""``pip install`` of the built wheel into a fresh venv gives a working ``bootstrapd`` with all its package data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from bootstrapd import __version__
from tests.deploy.unitfile import REPO


def _sources() -> list[str]:
    """The checkout's files as a fresh clone would have them (tracked, plus new files not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, timeout=60, check=True)
    return sorted(name for name in listed.stdout.decode().split("\0") if name and (REPO / name).is_file())


def test_the_wheel_installs_a_working_bootstrapd(tmp_path: Path) -> None:
    # Built from a clean copy: a checkout's build/ or __pycache__ must not decide what the wheel holds.
    source = tmp_path / "source"
    files = _sources()
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("bootstrapd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
    data = [name for name in files if name.startswith("bootstrapd/") and not name.endswith(".py")]
    assert "bootstrapd/data/classes.toml" in data
    assert [name for name in data if name not in inside] == []  # every data file, subfolders too
    assert not [name for name in inside if name.endswith(".pyc")]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                                str(wheel)], capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    program = venv / "bin" / "bootstrapd"
    run = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == f"bootstrapd {__version__}", run.stderr
    for example in ("bootstrapd.toml", "lab.toml"):  # with DHCPv4 on: the built-in classes come from the data
        config = REPO / "configs" / example
        run = subprocess.run([str(program), "check-config", "--config", str(config)], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        assert run.returncode == 0 and run.stdout.splitlines()[0] == f"{config}: OK", run.stderr
    # The package the venv imports is the wheel's, not this checkout's.
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import bootstrapd; print(bootstrapd.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
