"""`bvae eval`, `bvae sample`, `bvae compare` and the NLL plumbing, on small stand-in models.

The stand-ins have the model interface (encode, decode, decode_logits, likelihood, latent_dim, image_shape,
config.to_dict) so these tests do not depend on the real architectures: only the checkpoint file and the
architecture are stood in for, bvae.checkpoint.load_model itself runs. The integration tests at the end use
real models, bvae.train and bvae.data.
"""

from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch
from torch import nn

from bvae import checkpoint, cli, evaluate, figures, metrics

IMAGE_SHAPE = (1, 16, 16)


class _Config:
    def to_dict(self):
        return {"kind": "standin"}


class StandIn(nn.Module):
    """Linear encoder/decoder with a Bernoulli likelihood (a stand-in for a trained model)."""

    likelihood = "bernoulli"

    def __init__(self, latent_dim: int = 3):
        super().__init__()
        d = math.prod(IMAGE_SHAPE)
        self.latent_dim, self.image_shape, self.config = latent_dim, IMAGE_SHAPE, _Config()
        self.enc = nn.Linear(d, 2 * latent_dim)
        self.dec = nn.Linear(latent_dim, d)

    def encode(self, x):
        mu, logvar = self.enc(x.reshape(x.shape[0], -1)).chunk(2, dim=1)
        return mu * 5, logvar.clamp(-4, 1)  # spread means so several units are active

    def decode_logits(self, z):
        return self.dec(z).reshape(z.shape[0], *IMAGE_SHAPE)

    def decode(self, z):
        return torch.sigmoid(self.decode_logits(z))


class Unconditional(nn.Module):
    """q(z|x) = p(z) = N(0, I) and a decoder that ignores z: p(x) = prod Bernoulli(x; sigmoid(c)) exactly."""

    likelihood = "bernoulli"

    def __init__(self):
        super().__init__()
        self.latent_dim, self.image_shape = 2, IMAGE_SHAPE
        self.c = torch.linspace(-2, 2, math.prod(IMAGE_SHAPE)).reshape(IMAGE_SHAPE)

    def encode(self, x):
        z = torch.zeros(x.shape[0], 2)
        return z, z

    def decode_logits(self, z):
        return self.c.expand(z.shape[0], *IMAGE_SHAPE)

    def decode(self, z):
        return torch.sigmoid(self.decode_logits(z))


def _synthetic_split(n: int, seed: int):
    """Test fixture (not real data): two classes of 16x16 images, bright left or right half."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.1 * torch.rand(n, *IMAGE_SHAPE, generator=g)
    x[y == 0, :, :, :8] += 0.8
    x[y == 1, :, :, 8:] += 0.8
    return x.clamp(0, 1), y


def test_estimate_nll_exact_for_unconditional_model():
    model = Unconditional()
    x = (torch.rand(10, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    exact = -torch.nn.functional.binary_cross_entropy_with_logits(model.c.expand_as(x), x, reduction="none").sum(
        (1, 2, 3)
    )
    out = metrics.estimate_nll(model, [x[:4], x[4:]], num_samples=5, max_decode=8, progress=False)
    assert out["nll"] == pytest.approx(-exact.mean().item(), rel=1e-6)
    assert out["bits_per_dim"] == pytest.approx(out["nll"] / (256 * math.log(2)), rel=1e-9)
    assert out["n"] == 10 and out["nll_samples"] == 5


def test_interpolation_and_samplers():
    z = evaluate.interpolate_latents(torch.zeros(3), torch.ones(3) * 9, steps=10)
    assert z.shape == (10, 3)
    torch.testing.assert_close(z[:, 0], torch.arange(10.0))  # convex steps of 1/9
    with pytest.raises(ValueError, match="steps"):
        evaluate.interpolate_latents(torch.zeros(3), torch.ones(3), steps=1)
    assert evaluate.sample_latents(7, 4, "normal").shape == (7, 4)
    # GMM on two far clusters: samples land near one of the two centres
    g = torch.Generator().manual_seed(0)
    train = torch.cat([torch.randn(200, 2, generator=g) * 0.1 + 10, torch.randn(200, 2, generator=g) * 0.1 - 10])
    gmm = evaluate.fit_gmm(train, components=2)
    s = evaluate.sample_latents(100, 2, "gmm", gmm)
    assert ((s.abs() - 10).abs() < 1).all()
    with pytest.raises(ValueError, match="sampler"):
        evaluate.sample_latents(4, 2, "uniform")


def test_image_grid_layout():
    images = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.25, 0.5, 0.75, 1.0)])
    grid = figures.image_grid(images, nrow=2, pad=1)
    assert grid.shape == (3 * 3 + 1, 2 * 3 + 1)
    assert grid[1, 1] == 0.0 and grid[1, 4] == 0.25 and grid[4, 1] == 0.5 and grid[7, 1] == 1.0
    assert grid[7, 4] == 1.0 and grid[0, 0] == 1.0  # empty cell and padding are white


@pytest.fixture
def standin_env(monkeypatch, tmp_path):
    """Route checkpoint reading and model building to the stand-in model, and data loading to synthetic splits."""
    torch.manual_seed(0)
    model = StandIn()
    config = {"kind": "bvae", "dataset": "fashion-mnist", "variant": "vae", "latent_dim": 3}

    def load_checkpoint(path, map_location="cpu"):
        text = open(path).read()  # a missing file: FileNotFoundError, as from the real reader
        if text != "ok":
            raise ValueError(f"{path} is not a readable bvae checkpoint (corrupt or truncated?)")
        return {"config": dict(config), "model": model.state_dict(), "extra": {"epoch": 1}}

    def load_dataset(name, split, data_dir=None, download=False):
        if data_dir is not None and "missing" in str(data_dir):
            raise FileNotFoundError(f"no {name} files in {data_dir}")
        x, y = _synthetic_split(120 if split == "train" else 60, seed=0 if split == "train" else 1)
        return list(zip(x, y.tolist(), strict=True))

    monkeypatch.setattr(checkpoint, "load_checkpoint", load_checkpoint)
    monkeypatch.setattr(checkpoint, "build_model", lambda **config: model)
    monkeypatch.setitem(sys.modules, "bvae.data", types.SimpleNamespace(load_dataset=load_dataset))
    ckpt = tmp_path / "model.pt"
    ckpt.write_text("ok")
    return ckpt, model


def _run(argv):
    """Parse with only this module's commands and run one, as `bvae` would (without its preflight checks)."""
    import argparse

    parser = argparse.ArgumentParser(prog="bvae")
    evaluate.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_cli_writes_json_figures_and_table(standin_env, tmp_path, capsys):
    ckpt, model = standin_env
    out = tmp_path / "run"
    args = [
        "eval",
        str(ckpt),
        "--out",
        str(out),
        "--nll-samples",
        "8",
        "--tsne",
        "40",
        "--gmm-components",
        "2",
        "--metrics",
        "psnr,ssim,nll,au,acc,fid",
    ]
    assert _run(args) == 0
    payload = json.loads((out / "eval.json").read_text())
    m = payload["metrics"]
    assert payload["parameters"] == sum(p.numel() for p in model.parameters())
    assert payload["model"]["dataset"] == "fashion-mnist" and payload["label"] == "BVAE (vae)"
    assert payload["settings"]["n_test"] == 60 and payload["settings"]["n_train"] == 120
    # the metrics are those of the stand-in, recomputed here independently
    x, y = _synthetic_split(60, seed=1)
    with torch.no_grad():
        mu, _ = model.encode(x)
        recon = model.decode(mu)
    assert m["psnr"] == pytest.approx(metrics.psnr_per_image(recon, x).mean().item(), rel=1e-5)
    assert m["ssim"] == pytest.approx(metrics.ssim_per_image(recon, x).mean().item(), rel=1e-5)
    assert m["active_units"] == metrics.active_units(mu)[0] and m["latent_dim"] == 3
    assert 0.0 <= m["accuracy"] <= 1.0 and payload["metrics"]["probe"] == "mlp-100"
    assert m["nll"] > 0 and m["nll_n"] == 60 and m["nll_samples"] == 8
    assert "fid" not in m and "--fid-weights" in payload["skipped"]["fid"]
    for name in ("reconstructions.png", "interpolation.png", "samples_normal.png", "samples_gmm.png", "tsne.png"):
        assert (out / name).stat().st_size > 1000, name
    text = capsys.readouterr().out
    assert "PSNR" in text and "wrote" in text

    # compare: a second run and one table with a row per run, in the seed's column order
    out2 = tmp_path / "run2"
    assert _run(["eval", str(ckpt), "--out", str(out2), "--metrics", "psnr,au", "--no-figures", "--limit", "20"]) == 0
    table_file = tmp_path / "table.md"
    capsys.readouterr()
    assert _run(["compare", str(out), str(out2 / "eval.json"), "--out", str(table_file)]) == 0
    table = table_file.read_text()
    assert table == capsys.readouterr().out
    lines = table.strip().splitlines()
    assert lines[0] == "| model | parameters | NLL (nats) | AU | FID | PSNR (dB) | SSIM | rFID | accuracy |"
    assert len(lines) == 4
    assert f"{m['psnr']:.2f}" in lines[2] and f"{m['nll']:.2f}" in lines[2]
    assert "n/a" in lines[3]  # run2 has no NLL


def test_sample_cli(standin_env, tmp_path):
    ckpt, _ = standin_env
    assert _run(["sample", str(ckpt), "--n", "9", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "samples_normal.png").exists()
    assert (
        _run(
            [
                "sample",
                str(ckpt),
                "--n",
                "4",
                "--sampler",
                "gmm",
                "--gmm-components",
                "2",
                "--interpolate",
                "--out",
                str(tmp_path / "g"),
            ]
        )
        == 0
    )
    assert (tmp_path / "g" / "samples_gmm.png").exists() and (tmp_path / "g" / "interpolation.png").exists()


def test_bvae_cli_registers_the_commands():
    parser = cli.build_parser()
    names = set(parser._subparsers._group_actions[0].choices)
    assert {"eval", "sample", "compare"} <= names


def test_clear_errors(standin_env, tmp_path, capsys):
    ckpt, _ = standin_env
    bad = tmp_path / "corrupt.pt"
    bad.write_text("garbage")
    assert _run(["eval", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err
    assert _run(["eval", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert _run(["eval", str(ckpt), "--dataset", "mnist", "--out", str(tmp_path / "o")]) == 2
    assert "trained on 'fashion-mnist'" in capsys.readouterr().err
    assert _run(["sample", str(ckpt), "--data", "cifar10", "--out", str(tmp_path / "o")]) == 2
    assert "not on --dataset 'cifar10'" in capsys.readouterr().err
    assert _run(["eval", str(ckpt), "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert _run(["eval", str(ckpt), "--metrics", "psnr,bleu", "--out", str(tmp_path / "o")]) == 2
    assert "bleu" in capsys.readouterr().err
    assert _run(["compare", str(tmp_path / "empty")]) == 2
    assert "no eval.json" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ with the real models
def test_real_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    assert cli.main(["eval", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err


def test_real_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(evaluate.EvalError, match="--data-dir"):
        evaluate.load_split("cifar10", "test", str(tmp_path / "empty"))


def test_real_checkpoint_eval_end_to_end(tmp_path, capsys):
    """An (untrained) real BVAE saved by bvae.checkpoint: eval runs, and a wrong --dataset is refused."""
    from bvae import data

    try:
        data.load_dataset("fashion-mnist", "test")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST files not installed")
    from bvae.models import build_model

    torch.manual_seed(0)
    model = build_model(kind="bvae", dataset="fashion-mnist", latent_dim=4, variant="vae")
    ckpt = checkpoint.save_checkpoint(tmp_path / "ckpt.pt", model, extra={"epoch": 0})
    out = tmp_path / "eval"
    argv = [
        "eval",
        str(ckpt),
        "--metrics",
        "psnr,ssim,nll,au",
        "--limit",
        "32",
        "--nll-samples",
        "4",
        "--no-figures",
        "--out",
        str(out),
    ]
    assert _run(argv) == 0
    payload = json.loads((out / "eval.json").read_text())
    assert payload["model"]["kind"] == "bvae" and payload["parameters"] == sum(p.numel() for p in model.parameters())
    assert math.isfinite(payload["metrics"]["nll"]) and payload["metrics"]["nll_n"] == 32
    assert _run(["eval", str(ckpt), "--data", "mnist", "--no-figures", "--out", str(out)]) == 2
    assert "trained on 'fashion-mnist'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "option"),
    [("eval", "--nll-batch-size"), ("eval", "--gmm-components"), ("eval", "--probe-iters"), ("sample", "--n")],
)
def test_eval_and_sample_counts_are_usage_errors(capsys, command, option):
    with pytest.raises(SystemExit) as exc:
        _run([command, "ckpt.pt", option, "0"])
    assert exc.value.code == 2
    assert f"argument {option}: must be a positive int, got '0'" in capsys.readouterr().err


def test_a_checkpoint_written_by_fit_is_evaluated_through_the_one_loader(tmp_path, monkeypatch):
    """fit's per-epoch checkpoint is what evaluate(EvalConfig) loads: the trained weights, its dataset checked."""
    from bvae import data, train
    from bvae.models import build_model

    bundled = lambda name, split, data_dir=None, download=False: data.demo_dataset(split)  # the same data anywhere
    monkeypatch.setattr(data, "load_dataset", bundled)
    torch.manual_seed(0)
    model = build_model("bvae", "fashion-mnist", latent_dim=3, width=4, hidden=16, backend="torch")
    train.fit(model, data.demo_dataset("train").take(32), epochs=1, batch_size=16, out_dir=tmp_path, progress=False)
    ckpt = tmp_path / checkpoint.CHECKPOINT_NAME

    config = evaluate.EvalConfig(
        checkpoint=ckpt, out=tmp_path / "eval", metrics=("psnr", "au"), limit=16, figures=False
    )
    payload = evaluate.evaluate(config)
    assert payload["model"]["epoch"] == 1 and payload["training"]["epochs"] == 1
    assert payload["settings"]["n_test"] == 16 and (tmp_path / "eval" / "eval.json").is_file()
    test16 = data.demo_dataset("test").take(16)
    assert payload["metrics"]["psnr"] == pytest.approx(train.evaluate_reconstruction(model, test16)["psnr"], rel=1e-5)

    loaded, meta = checkpoint.load_model(ckpt, dataset="Fashion_MNIST")  # case and _ / - aside
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(checkpoint.DatasetMismatchError, match="trained on 'fashion-mnist', not on --dataset 'mnist'"):
        checkpoint.load_model(ckpt, dataset="mnist")
    with pytest.raises(evaluate.EvalError, match="trained on 'fashion-mnist'"):
        evaluate.evaluate(evaluate.EvalConfig(checkpoint=ckpt, dataset="mnist", out=tmp_path / "eval"))


@pytest.mark.parametrize(
    ("argv", "config"),
    [
        (["eval", "c.pt"], evaluate.EvalConfig(checkpoint="c.pt")),
        (["sample", "c.pt", "--out", "s"], evaluate.SampleConfig(checkpoint="c.pt", out="s")),
        (
            ["eval", "c.pt", "--metrics", "psnr,nll", "--no-figures", "--limit", "all", "--data", "mnist"],
            evaluate.EvalConfig(checkpoint="c.pt", metrics=("psnr", "nll"), figures=False, dataset="mnist"),
        ),
    ],
)
def test_the_commands_build_their_config_with_the_same_defaults(argv, config):
    """`bvae eval` / `sample` hand the library a typed config, and the command line's defaults are the config's."""
    import argparse

    parser = argparse.ArgumentParser(prog="bvae")
    evaluate.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert evaluate._config_from_args(type(config), args) == config
