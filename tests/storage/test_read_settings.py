"""ReadSettings (fastload.storage.read_settings): the per-scheme defaults chosen by measurement."""

from __future__ import annotations

import numpy as np

from fastload.storage.read_settings import ReadSettings, network_inflight


def test_defaults_per_scheme():
    rs = ReadSettings()
    assert (rs.part_size_for("file"), rs.inflight_for("file")) == (8 << 20, 4)
    assert (rs.part_size_for("s3"), rs.part_size_for("https")) == (32 << 20, 32 << 20)


def test_network_parts_in_flight_follow_the_size_of_the_parts():
    """About 256 MiB in flight, 8 to 32 parts: many small objects keep 32 transfers,
    one huge object in 32 MiB parts 8."""
    rs = ReadSettings()
    big = np.array([1 << 30])
    small = np.full(2000, 128 << 10)
    mid = np.full(4, 16 << 20)
    assert rs.inflight_for_parts("s3", big) == 8
    assert rs.inflight_for_parts("s3", small) == 32
    assert rs.inflight_for_parts("http", mid) == 16
    assert rs.inflight_for_parts("file", big) == 4  # local: reader threads, unchanged
    assert network_inflight(1) == 32 and network_inflight(1 << 40) == 8
    # an explicit knob always wins, and parts smaller than asked count as asked
    assert ReadSettings(max_inflight_parts=3).inflight_for_parts("s3", small) == 3
    assert ReadSettings(part_size=1 << 20).inflight_for_parts("s3", big) == 32
