"""The s3dlio-compatible items name their object without the URL's credentials."""

from __future__ import annotations

from fastload.compat.s3dlio import ObjectItem


def test_an_item_repr_shows_no_password_or_signature():
    item = ObjectItem("http://user:pw-SECRET@host/x?X-Amz-Signature=SIG-SECRET", memoryview(b"ab"))
    text = repr(item)
    assert "SECRET" not in text and "user:***@host/x" in text and "2 bytes" in text
