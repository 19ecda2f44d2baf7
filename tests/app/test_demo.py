"""fastload.app.demo.run_demo: writes records, loads them, reports figures."""

import os

from fastload.app.demo import run_demo


def test_run_demo_in_a_given_root(tmp_path, capsys):
    out = run_demo(str(tmp_path), epochs=2, n_images=300, batch_size=64)
    assert [e["samples"] for e in out["epochs"]] == [300, 300]
    assert out["batch_shape"] == (64, 3, 64, 64) and out["best_samples_per_s"] > 0
    assert all(e["mb_per_s"] > 0 for e in out["epochs"])
    assert os.listdir(out["folder"])  # kept: the caller owns root
    printed = capsys.readouterr().out
    assert "epoch 1:" in printed and "samples/s" in printed and "MB/s" in printed


def test_run_demo_temp_folder_is_removed():
    out = run_demo(None, epochs=1, n_images=100, batch_size=32)
    assert not os.path.exists(out["folder"])
