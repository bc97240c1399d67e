"""Passwords in URLs and secret parameters are masked wherever they are shown (explain, sim reports, events)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bootstrapd.redact import MASK, is_secret, mask_url


def test_mask_url() -> None:
    assert mask_url("http://u:p@h/x") == "http://u:********@h/x"
    assert mask_url("http://floor3:s%40cret@10.77.0.1:8080/floor3/") == "http://floor3:********@10.77.0.1:8080/floor3/"
    assert mask_url("ftp://anonymous@h/") == "ftp://anonymous@h/"  # no password: nothing to mask
    assert mask_url("tftp://h/x") == "tftp://h/x"
    assert mask_url("http://[::1") == "http://[::1"  # not a URL urlsplit accepts: returned as it is


def test_secret_keys() -> None:
    assert is_secret("account.1.password") and is_secret("static.auto_provision.aes_key_16.com")
    assert not is_secret("account.1.user_name")


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="@/:[]?#"), min_size=1),
       st.text(min_size=1, alphabet="abcdefghij0123456789-."))
def test_a_password_never_survives(password: str, host: str) -> None:
    masked = mask_url(f"http://user:{password}@{host}/path")
    assert masked == f"http://user:{MASK}@{host}/path"


@given(st.text())
def test_never_raises(text: str) -> None:
    assert isinstance(mask_url(text), str)
