"""ReadSettings (fastload.storage.read_settings): the per-scheme defaults chosen by measurement."""

from __future__ import annotations

import os

import numpy as np

from fastload.storage.read_settings import (
    ReadSettings,
    default_cache_fit,
    memory_limit,
    network_inflight,
)


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


def test_cache_fit_defaults_to_half_the_memory_a_container_may_use(tmp_path):
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory_limit((str(tmp_path / "none"),)) == machine
    (tmp_path / "v2").write_text("max\n")  # cgroup v2 without a limit
    assert memory_limit((str(tmp_path / "v2"),)) == machine
    (tmp_path / "lim").write_text(f"{1 << 30}\n")
    assert memory_limit((str(tmp_path / "lim"), str(tmp_path / "v2"))) == min(machine, 1 << 30)
    assert ReadSettings().cache_fit_bytes == default_cache_fit() <= machine // 2
    assert ReadSettings(cache_fit=0).cache_fit_bytes == 0
