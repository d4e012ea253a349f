"""`bvae train` and `bvae demo` smoke tests (tiny runs) and their error paths."""

import json

import pytest

from bvae.cli import build_parser, main

TINY = ["--width", "4", "--hidden", "16", "--latent-dim", "3", "--no-progress", "--threads", "1"]


def test_help_lists_train_and_demo(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "train" in out and "demo" in out
    args = build_parser().parse_args(["train", "--limit", "5", "--kind", "vae"])
    assert args.limit == 5 and args.kind == "vae" and callable(args.func)


def test_train_tiny_run_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--limit", "32", "--epochs", "1", "--batch-size", "16", "--out", str(out), "--backend", "cpu"]
    assert main(argv + TINY) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["params"] > 0 and metrics["test_psnr"] > 0
    assert (out / "checkpoint.pt").exists()
    text = capsys.readouterr().out
    assert "BVAE" in text and "total" in text and "test PSNR" in text
    # resuming a finished run with the same settings is a no-op that still evaluates
    assert main(argv + TINY + ["--resume", str(out / "checkpoint.pt")]) == 0
    assert "resumed from" in capsys.readouterr().out


def test_train_without_reverse_scale(tmp_path):
    out = tmp_path / "plain"
    argv = ["train", "--limit", "16", "--epochs", "1", "--batch-size", "8", "--out", str(out), "--no-reverse-scale"]
    assert main(argv + TINY) == 0
    from bvae.checkpoint import load_model

    model, _ = load_model(out / "checkpoint.pt")
    assert model.config.reverse_scale is False
    assert not any(name.endswith("reverse_log_scale") for name, _ in model.named_parameters())


def test_train_variants_and_vae_kind(tmp_path):
    for kind, variant in (("vae", "beta-tcvae"), ("bvae", "iwae")):
        out = tmp_path / f"{kind}-{variant}"
        argv = ["train", "--limit", "16", "--epochs", "1", "--batch-size", "8", "--out", str(out)]
        assert main(argv + ["--kind", kind, "--variant", variant, "--k", "2"] + TINY) == 0
        assert json.loads((out / "metrics.json").read_text())["variant"] == variant


def test_train_errors(tmp_path, capsys):
    assert main(["train", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path)] + TINY) == 2
    assert "bvae train: error: " in (err := capsys.readouterr().err) and "does not exist" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    argv = ["train", "--limit", "8", "--epochs", "1", "--out", str(tmp_path / "o"), "--resume", str(bad)]
    assert main(argv + TINY) == 2
    assert "corrupt" in capsys.readouterr().err
    argv = ["train", "--limit", "16", "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "n")]
    assert main(argv + ["--lr", "10"] + TINY) == 1  # diverges to a non-finite loss: clean stop, exit 1
    assert "non-finite loss" in capsys.readouterr().out


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--epochs", "1", "--train-size", "64", "--test-size", "16", "--batch-size", "16"]
    assert main(argv + TINY) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for kind in ("bvae", "vae"):
        assert set(metrics[kind]) >= {"params", "psnr", "ssim", "sec_per_epoch"}
    assert metrics["bvae"]["params"] <= 0.55 * metrics["vae"]["params"]
    assert (out / "reconstructions.png").stat().st_size > 1000 and (out / "samples.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "test PSNR (dB)" in text and "parameters" in text


def test_demo_runs_from_the_bundled_sample(tmp_path):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--epochs", "1", "--train-size", "32", "--test-size", "8", "--bundled"]
    assert main(argv + ["--batch-size", "16"] + TINY) == 0
    assert "bundled" in json.loads((out / "metrics.json").read_text())["setup"]["data"]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("train", "--lr", "-1"),
        ("train", "--lr", "inf"),
        ("train", "--weight-decay", "-0.1"),
        ("train", "--beta", "nan"),
        ("train", "--alpha", "-1"),
        ("train", "--gamma", "x"),
        ("train", "--kl-warmup", "1.5"),
        ("train", "--scale-lr-factor", "0"),
        ("train", "--scale-lr-factor", "inf"),
        ("demo", "--lr", "0"),
        ("demo", "--gnova-gamma", "0"),
        ("demo", "--gnova-alpha", "-0.1"),
        ("demo", "--train-size", "0"),
        ("demo", "--test-size", "-1"),
        ("train", "--threads", "0"),
        ("train", "--epochs", "1.5"),
        ("train", "--limit", "0"),
    ],
)
def test_bad_numbers_are_usage_errors(capsys, command, option, value):
    with pytest.raises(SystemExit) as exc:
        main([command, option, value])
    assert exc.value.code == 2
    assert f"argument {option}: must be" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "demo"])
def test_settings_no_model_can_have_exit_2_without_a_traceback(tmp_path, capsys, command):
    argv = [command, "--gnova-alpha", "0", "--gnova-beta", "0", "--epochs", "1", "--out", str(tmp_path / "o")]
    assert main(argv + (["--limit", "8"] if command == "train" else ["--bundled"]) + TINY) == 2
    assert f"bvae {command}: error: GNoVa: alpha and beta cannot both be 0" in capsys.readouterr().err
