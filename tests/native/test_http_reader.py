"""The http reader bridge (fastload._native.http_reader) binds the libcurl ABI pycurl knows."""

from __future__ import annotations

import pycurl
import pytest

from fastload._native import http_reader

pytestmark = pytest.mark.http


def test_abi_constants_match_pycurl():
    names = {"CURLOPT_": "", "CURLINFO_": "", "CURLMOPT_": "M_", "CURLE_": "E_"}
    checked = 0
    for name, value in http_reader.abi_constants().items():
        for prefix, py in names.items():
            if name.startswith(prefix):
                pyname = py + name[len(prefix) :]
                if hasattr(pycurl, pyname):
                    assert getattr(pycurl, pyname) == value, name
                    checked += 1
    assert checked >= 25


def test_a_user_agent_with_a_control_character_is_refused_by_the_bridge():
    """Checked in C too, whoever builds the context: a CR LF would inject a header."""
    from fastload.errors import InvalidRequestError
    from fastload.storage import libcurl

    libcurl.load()
    with pytest.raises(InvalidRequestError, match="user_agent holds a control character"):
        http_reader.HttpContext(user_agent="fastload\r\nX-Injected: 1")
    http_reader.HttpContext(user_agent="fastload\t(tab is fine)").close()
