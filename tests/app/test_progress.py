"""The progress bar of the command line (fastload.app.progress)."""

import io
import sys

from fastload.app.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_only_on_a_terminal(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain bar, even where tqdm exists
    tty = FakeTTY()
    p = Progress(1000, "blob", tty)
    p.update(500)
    p.update(500)
    p.close()
    assert "100.0%" in tty.getvalue() and "#" * 30 in tty.getvalue()
    plain = io.StringIO()
    q = Progress(1000, "blob", plain)
    q.update(1000)
    q.close()
    assert plain.getvalue() == ""
