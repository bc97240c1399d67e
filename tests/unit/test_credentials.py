"""``"credential:NAME"`` path settings: checked when the file loads, resolved in $CREDENTIALS_DIRECTORY at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrapd.configfile import ConfigError, Source
from bootstrapd.credentials import CredentialError, SecretFile, secret_file


def _read(text: str) -> SecretFile | None:
    table = Source("bootstrapd.toml", text).root().table("http")
    value = secret_file(table, "tls_key")
    table.finish()
    return value


def test_a_path_stays_a_path() -> None:
    value = _read('[http]\ntls_key = "/etc/bootstrapd/tls.key"\n')
    assert value == SecretFile("http.tls_key", path=Path("/etc/bootstrapd/tls.key"))
    assert value.resolve({}) == Path("/etc/bootstrapd/tls.key")
    assert _read("[http]\n") is None


def test_a_credential_resolves_in_the_credentials_directory(tmp_path: Path) -> None:
    value = _read('[http]\ntls_key = "credential:tls.key"\n')
    assert value == SecretFile("http.tls_key", credential="tls.key")
    (tmp_path / "tls.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    assert value.resolve({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == tmp_path / "tls.key"


@pytest.mark.parametrize("name", ["", "../tls.key", "a/b", ".", "..", "tls key", "x" * 256])
def test_a_bad_name_is_refused_on_its_line(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _read(f'[http]\nenabled = false\ntls_key = "credential:{name}"\n')
    assert str(caught.value).startswith("bootstrapd.toml:3: http.tls_key: ")
    assert "must name a credential" in str(caught.value)


def test_an_empty_path_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"bootstrapd.toml:2: http.tls_key: must be a file path"):
        _read('[http]\ntls_key = ""\n')


def test_missing_credentials_say_what_to_do(tmp_path: Path) -> None:
    value = _read('[http]\ntls_key = "credential:tls.key"\n')
    assert value is not None
    with pytest.raises(CredentialError, match=r"\$CREDENTIALS_DIRECTORY is not set: run bootstrapd under systemd "
                                              r"with LoadCredential=tls.key:"):
        value.resolve({})
    with pytest.raises(CredentialError, match=r"no credential 'tls.key' in .*LoadCredential=tls.key:SOURCE"):
        value.resolve({"CREDENTIALS_DIRECTORY": str(tmp_path)})
