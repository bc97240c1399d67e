"""The real daemon's FTP against lftp and curl from phone namespaces: anonymous and per-user logins, passive mode,
downloads, a phone's STOR, refusals, PORT/EPRT refused, path tricks, long command lines and a login flood."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.lab.httplab import MAC, OTHER_MAC, PASSWORD, USER, V4, V6, Env, build


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("ftp")
    work.chmod(0o755)
    yield from build(work)


def lftp(env: Env, node_name: str, script: str, user: str | None = None, host: str = V4) -> tuple[int, str]:
    node = env.phone if node_name == "phone" else env.intruder
    login = f"-u {user},{PASSWORD if user == USER else 'wrong'}" if user else "-u anonymous,phone@"
    target = f"[{host}]" if ":" in host else host
    commands = (f"set ftp:passive-mode on; set net:max-retries 1; set net:timeout 10; set cmd:fail-exit yes; "
                f"open {login} ftp://{target}; {script}")
    result = node.run(["lftp", "-c", commands], timeout=60)
    return result.returncode, result.stdout + result.stderr


def test_anonymous_download_and_listing(env: Env) -> None:
    dest = env.out / "lftp-common.cfg"
    code, out = lftp(env, "phone", f"get common.cfg -o {dest}; get fw.rom -o {dest}.rom; cls -1")
    assert code == 0, out
    assert dest.read_bytes() == env.files["common.cfg"]
    assert (env.out / "lftp-common.cfg.rom").read_bytes() == env.files["fw.rom"]
    listed = set(out.split())
    assert {"common.cfg", "fw.rom", "dir/", "y000000000000.boot", f"{MAC.upper()}.cfg"} <= listed, out
    assert "T46U_1/" not in listed  # [[auth]] folders are not shown to anonymous
    assert f"{OTHER_MAC}.cfg" not in listed  # nor other phones' files
    assert "link.cfg" not in listed and "linkdir/" not in listed and "fifo.cfg" not in listed
    code, out = lftp(env, "phone", f"get T46U_1/y000000000000.cfg -o {dest}")
    assert code != 0 and "550" in out
    env.outside_untouched()


def test_ipv6_and_curl(env: Env) -> None:
    code, out = lftp(env, "phone", f"get dir/sub.cfg -o {env.out}/v6.cfg", host=V6)
    assert code == 0, out
    assert (env.out / "v6.cfg").read_bytes() == env.files["dir/sub.cfg"]
    status, _, body = env.curl(env.phone, f"ftp://{V4}/dir/sub.cfg")
    assert status == 226 and body == env.files["dir/sub.cfg"]
    status, _, body = env.curl(env.phone, f"ftp://{V4}/T46U_1/y000000000000.cfg")
    assert body == b""


def test_user_sees_its_folder(env: Env) -> None:
    dest = env.out / "user.cfg"
    code, out = lftp(env, "phone", f"get y000000000000.cfg -o {dest}; cls -1", user=USER)
    assert code == 0, out
    assert dest.read_bytes() == env.files["T46U_1/y000000000000.cfg"]
    assert "common.cfg" not in out.split()  # its folder is its whole tree
    code, out = lftp(env, "phone", "cls -1", user="floor3x")
    assert code != 0 and "530" in out
    code, out = lftp(env, "phone", "cls -1", user=USER + "-wrong")
    assert code != 0
    _, _, body = env.curl(env.phone, f"ftp://{V4}/y000000000000.cfg", "-u", f"{USER}:{PASSWORD}")
    assert body == env.files["T46U_1/y000000000000.cfg"]


def test_mac_file_rule(env: Env) -> None:
    dest = env.out / "mac.cfg"
    code, out = lftp(env, "phone", f"get {MAC}.cfg -o {dest}")
    assert code == 0, out
    assert dest.read_bytes() == env.files[f"{MAC.upper()}.cfg"]
    code, out = lftp(env, "intruder", f"get {MAC}.cfg -o {dest}.x")
    assert code != 0 and "550" in out
    assert not (env.out / "mac.cfg.x").exists() or b"phone-secret" not in (env.out / "mac.cfg.x").read_bytes()


def test_stor(env: Env) -> None:
    local = env.out / "ftp-local.cfg"
    local.write_bytes(b"#!version:1.0.0.1\nftp.local = 1\n")
    code, out = lftp(env, "phone", f"put {local} -o {MAC}-local.cfg")
    assert code == 0, out
    stored = env.app.state / "uploads" / MAC / f"{MAC}-local.cfg"
    assert stored.read_bytes() == local.read_bytes()
    status, _, body = env.curl(env.phone, f"http://{V4}/{MAC}-local.cfg")
    assert status == 200 and body == local.read_bytes()
    for name in ("common.cfg", f"{OTHER_MAC}-local.cfg", "notes.txt", f"dir/{MAC.upper()}.cfg/../../common.cfg"):
        code, out = lftp(env, "phone", f"put {local} -o {name}")
        assert code != 0 and "550" in out, (name, out)
    code, out = lftp(env, "intruder", f"put {local} -o 001565bb0002-local.cfg")
    assert code != 0 and "550" in out  # no lease for that MAC
    # "../" stops at the session's root: the upload lands in the store like any other, never beside the tree.
    code, out = lftp(env, "phone", f"put {local} -o ../../{MAC}-calllog.xml")
    assert code == 0, out
    assert (env.app.state / "uploads" / MAC / f"{MAC}-calllog.xml").read_bytes() == local.read_bytes()
    code, out = lftp(env, "phone", "mkdir x; rm common.cfg")
    assert code != 0 and "550" in out
    assert env.root.joinpath("common.cfg").read_bytes() == env.files["common.cfg"]
    env.outside_untouched()


def _session(env: Env, *lines: str, node: str = "intruder") -> list[str]:
    report = env.raw(env.phone if node == "phone" else env.intruder, V4, 21, "ftp", *lines)
    return list(report["replies"])


def _healthy(env: Env) -> None:
    status, _, body = env.curl(env.intruder, f"ftp://{V4}/common.cfg")
    assert body == env.files["common.cfg"], status


def test_active_mode_refused(env: Env) -> None:
    replies = _session(env, "USER anonymous", "PASS x", "PORT 10,77,0,99,4,1", "EPRT |1|10.77.0.99|1025|")
    assert replies[3].startswith("502") and replies[4].startswith("502"), replies
    result = env.intruder.run(["lftp", "-c", f"set ftp:passive-mode off; set ftp:auto-passive-mode off; "
                               f"set net:max-retries 1; set net:timeout 5; open ftp://{V4}; cls"], timeout=60)
    assert result.returncode != 0, result.stdout  # lftp told to use PORT gets nowhere
    _healthy(env)


def test_path_tricks_stay_in_the_tree(env: Env) -> None:
    replies = _session(env, "USER anonymous", "PASS x", "CWD ../..", "PWD", "CWD /../../etc", "PWD", "SIZE /etc/passwd",
                       "SIZE ../../../etc/passwd", "SIZE linkdir/secret.cfg", "SIZE link.cfg", "CWD linkdir",
                       "SIZE common.cfg", "CWD T46U_1")
    assert replies[4].startswith('257 "/"'), replies
    assert replies[6].startswith('257 "/"'), replies
    assert all(r.startswith("550") for r in replies[7:12]), replies
    assert replies[12].startswith("213 " + str(len(env.files["common.cfg"]))), replies
    assert replies[13].startswith("550"), replies
    _, _, body = env.curl(env.intruder, f"ftp://{V4}/../../etc/passwd", "--path-as-is")
    assert body == b""
    _, _, body = env.curl(env.intruder, f"ftp://{V4}/linkdir/secret.cfg")
    assert body == b""
    _healthy(env)
    env.outside_untouched()


def test_long_command_line_and_garbage(env: Env) -> None:
    replies = _session(env, "USER anonymous", "PASS x", "RETR " + "a" * 8192, "NOOP\xff\xfe", "SYST")
    assert replies[3].startswith("500"), replies
    assert replies[5].startswith("215"), replies  # the session goes on
    _healthy(env)


def test_connection_caps_and_login_flood(env: Env) -> None:
    for _ in range(3):
        replies = _session(env, "USER floor3", "PASS guess1", "USER floor3", "PASS guess2", "USER root", "PASS x")
        assert [r[:3] for r in replies[1:]] == ["331", "530", "331", "530", "331", "530"], replies
    _healthy(env)
    # Over the per-client cap (4 here) a connection gets 421 at once.
    result = env.intruder.run(["python3", "-c", (
        "import json,socket,sys,time\n"
        "socks=[]\n"
        "for _ in range(6):\n"
        "    socks.append(socket.create_connection((sys.argv[1],21),timeout=10)); time.sleep(0.1)\n"
        "print(json.dumps([s.recv(200)[:3].decode() for s in socks]))\n"), V4], timeout=60)
    codes = json.loads(result.stdout)
    assert codes.count("220") == 4 and codes.count("421") == 2, codes
    _healthy(env)


def test_idle_session_is_closed(env: Env) -> None:
    # idle_timeout is 20 s in this lab: a logged-in client that says nothing is closed (421), however long it waits.
    result = env.intruder.run(["python3", "-c", (
        "import socket,sys\n"
        "s=socket.create_connection((sys.argv[1],21),timeout=90)\n"
        "s.recv(200); s.sendall(b'USER anonymous\\r\\n'); s.recv(200); s.sendall(b'PASS x\\r\\n'); s.recv(200)\n"
        "data=b''\n"
        "while True:\n"
        "    chunk=s.recv(200)\n"
        "    if not chunk: break\n"
        "    data+=chunk\n"
        "print(data.decode(errors='replace'))\n"), V4], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("421"), result.stdout  # told why, then closed
    _healthy(env)


def test_link_local_and_refused_size_is_an_event(env: Env) -> None:
    # FTP listens on the interface's link-local address like HTTP and TFTP (started once the kernel has it), and
    # its passive data socket binds there with the scope. A SIZE refused is an ftp.transfer event like a RETR's.
    link_local = env.lab.wait_link_local(env.app.node)
    env.app.stop()
    env.app.start("--debug")
    try:
        status, _, body = env.curl(env.phone, f"ftp://[{link_local}%25{env.phone.ifname}]/dir/sub.cfg")
        assert status == 226 and body == env.files["dir/sub.cfg"], status
        replies = _session(env, "USER anonymous", "PASS x", f"SIZE {OTHER_MAC}.cfg", "SIZE common.cfg", "QUIT")
        assert replies[3].startswith("550") and replies[4].startswith("213"), replies
    finally:
        env.app.stop()
        env.app.start()
    events = [ln for ln in env.app.log().splitlines() if "ftp.transfer" in ln]
    assert any("SIZE" in ln and f"{OTHER_MAC}.cfg" in ln and "not_owner" in ln for ln in events), events[-5:]
    assert any("RETR" in ln and "dir/sub.cfg" in ln and "fe80:" in ln for ln in events), events[-5:]
