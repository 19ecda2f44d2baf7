"""fastload.app.demo.run_demo: writes records, loads them, reports figures."""

import os

import pytest

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


def test_jpeg_demo_trains_on_an_image_folder(tmp_path, capsys):
    pytest.importorskip("PIL")
    from fastload.app.demo import run_jpeg_demo

    out = run_jpeg_demo(str(tmp_path), epochs=2, n_images=40, batch_size=16)
    assert [e["samples"] for e in out["epochs"]] == [40, 40]
    assert out["batch_shape"] == (16, 3, 224, 224) and out["classes"][:2] == ["class00", "class01"]
    assert out["report"]["images"]["images"] == 80 and out["report"]["images"]["skipped"] == 0
    printed = capsys.readouterr().out
    assert "JPEGs" in printed and "images/s" in printed and "RandomResizedCrop" in printed


def test_cli_demo_jpeg_mode(tmp_path, capsys):
    pytest.importorskip("PIL")
    from fastload.app.cli import main

    assert (
        main(
            [
                "demo",
                "--mode",
                "jpeg",
                "--dir",
                str(tmp_path),
                "--epochs",
                "1",
                "--images",
                "20",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    assert "epoch 0: 20 images" in capsys.readouterr().out
