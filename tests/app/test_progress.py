"""The progress bar of the command line (fastload.app.progress): bytes, percent, rate, ETA,
redrawn by its own thread, raised by a live byte counter."""

import io
import threading

from fastload.app.progress import Progress, human_bytes


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_line_says_bytes_percent_rate_and_eta():
    clock = Clock()
    p = Progress(100_000_000, "blob", io.StringIO(), clock=clock)
    assert "ETA --:--" in p.render() and "-- MB/s" in p.render()
    clock.now += 1.0
    p.update(25_000_000)
    line = p.render()
    assert "blob [######" in line and "25.0%" in line
    assert "23.8 MiB / 95.4 MiB" in line and "25.0 MB/s" in line and "ETA 0:03" in line
    clock.now += 3.0
    p.update(75_000_000)
    assert "100.0%" in p.render() and "in 0:04" in p.render()


def test_a_live_counter_moves_the_bar_between_chunks():
    seen = [0]
    p = Progress(1000, "x", io.StringIO(), live=lambda: seen[0], clock=Clock())
    p.update(100)
    assert "10.0%" in p.render()
    seen[0] = 400  # the native counters saw more than the chunks finished so far
    assert "40.0%" in p.render()
    seen[0] = 5000  # retried bytes may count twice: never past the total
    assert "100.0%" in p.render()


def test_the_bar_is_redrawn_while_nothing_completes():
    tty = FakeTTY()
    p = Progress(1000, "blob", tty, interval=0.01)
    assert p.enabled and any(t.name == "fastload-progress" for t in threading.enumerate())
    while p.draws < 5:  # the thread redraws by itself (elapsed time, rate, ETA move)
        threading.Event().wait(0.01)
    p.update(1000)
    p.close()
    text = tty.getvalue()
    assert text.count("\r") >= 6 and text.endswith("\n") and "100.0%" in text
    assert not any(t.name == "fastload-progress" for t in threading.enumerate())


def test_nothing_is_drawn_off_a_terminal():
    plain = io.StringIO()
    q = Progress(1000, "blob", plain)
    q.update(1000)
    q.close()
    assert plain.getvalue() == "" and not q.enabled


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1024, 3 << 20, 5 << 40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "3.0 MiB",
        "5.0 TiB",
    ]
