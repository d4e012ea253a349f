"""Trainer: metrics, atomic checkpoints, exact resume, NaN stop, corrupt / mismatched checkpoints."""

import json
import math

import pytest
import torch

from bvae import build_model, train
from bvae.data import ImageTensorDataset, demo_dataset

SMALL = {"width": 4, "hidden": 16, "latent_dim": 3}


@pytest.fixture(scope="module")
def tiny_set():
    return demo_dataset("train").take(48)


def _model(kind="bvae", **kw):
    torch.manual_seed(0)
    return build_model(kind, "fashion-mnist", backend="torch", **{**SMALL, **kw})


def test_psnr_by_hand_and_ssim_against_torchmetrics():
    x = torch.zeros(2, 1, 16, 16)
    y = x.clone()
    y[0] += 0.1  # mse 0.01 -> 20 dB
    y[1] += 0.01  # mse 1e-4 -> 40 dB
    assert train.psnr(y, x).tolist() == pytest.approx([20.0, 40.0], abs=1e-4)
    assert train.ssim(x + 0.3, x + 0.3).tolist() == pytest.approx([1.0, 1.0])
    tm = pytest.importorskip("torchmetrics.functional")
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 28, 28, generator=g)
    b = (a + 0.1 * torch.randn(3, 1, 28, 28, generator=g)).clamp(0, 1)
    want = tm.structural_similarity_index_measure(b, a, data_range=1.0, reduction="none")
    assert train.ssim(b, a).tolist() == pytest.approx(want.tolist(), abs=1e-4)


def test_checkpoint_round_trip_is_atomic_and_plain(tmp_path, tiny_set):
    model = _model(variant="beta-vae", beta=2.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = train.save_checkpoint(tmp_path / "c.pt", model, opt, extra={"epoch": 3, "note": "x"})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind
    raw = torch.load(path, weights_only=True)  # plain tensors and strings only
    assert json.loads(raw["config"])["beta"] == 2.0
    loaded, meta = train.load_model(path)
    assert {k: meta[k] for k in ("kind", "dataset", "variant", "latent_dim", "epoch")} == {
        "kind": "bvae",
        "dataset": "fashion-mnist",
        "variant": "beta-vae",
        "latent_dim": 3,
        "epoch": 3,
    }
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="JSON"):
        train.save_checkpoint(tmp_path / "d.pt", model, extra={"bad": object()})


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    model = _model()
    path = train.save_checkpoint(tmp_path / "c.pt", model)
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        train.load_model(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt"):
        train.load_model(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a bvae checkpoint"):
        train.load_model(tmp_path / "foreign.pt")
    raw = torch.load(path, weights_only=True)
    cfg = json.loads(raw["config"])
    cfg["latent_dim"] = 5  # weights are for latent 3
    raw["config"] = json.dumps(cfg)
    torch.save(raw, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not match"):
        train.load_model(tmp_path / "mismatch.pt")
    with pytest.raises(FileNotFoundError):
        train.load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("kl_warmup", [0.0, 0.75])
def test_resume_continues_bit_for_bit(tmp_path, tiny_set, kl_warmup):
    # kl_warmup 0.75 of 2 epochs x 3 steps: the resumed epoch is still warming up
    kw = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "seed": 7, "progress": False, "kl_warmup": kl_warmup}
    straight = _model()
    train.fit(straight, tiny_set, out_dir=tmp_path / "a", **kw)
    first = _model()
    res = train.fit(first, tiny_set, out_dir=tmp_path / "b", stop_after_epoch=1, **kw)
    assert res.epochs_done == 1
    torch.manual_seed(12345)  # a different RNG state in between must not matter: the checkpoint restores it
    resumed = _model()
    res = train.fit(resumed, tiny_set, out_dir=tmp_path / "b", resume=tmp_path / "b" / "checkpoint.pt", **kw)
    assert res.epochs_done == 2 and len(res.history) == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(straight.state_dict()["mu_head.weight"], _model().state_dict()["mu_head.weight"])
    _, meta = train.load_model(tmp_path / "b" / "checkpoint.pt")
    assert meta["epoch"] == 2


def test_resume_rejects_other_settings_or_model(tmp_path, tiny_set):
    kw = {"batch_size": 16, "lr": 3e-3, "seed": 7, "progress": False}
    train.fit(_model(), tiny_set, epochs=1, out_dir=tmp_path, **kw)
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(ValueError, match="epochs"):
        train.fit(_model(), tiny_set, epochs=3, resume=ckpt, **kw)
    with pytest.raises(ValueError, match="different model"):
        train.fit(_model(latent_dim=4), tiny_set, epochs=1, resume=ckpt, **kw)
    with pytest.raises(ValueError, match="kl_warmup"):
        train.fit(_model(), tiny_set, epochs=1, resume=ckpt, kl_warmup=0.5, **kw)
    # a checkpoint from before the reverse log-scales had their own optimizer group
    raw = torch.load(ckpt, weights_only=True)
    groups = raw["optimizer"]["param_groups"]
    groups[0]["params"] += groups.pop()["params"]
    torch.save(raw, tmp_path / "one_group.pt")
    with pytest.raises(ValueError, match="older version"):
        train.fit(_model(), tiny_set, epochs=1, resume=tmp_path / "one_group.pt", **kw)


@pytest.mark.parametrize(("kl_warmup", "want"), [(0.0, [1.0] * 6), (0.5, [0, 1 / 3, 2 / 3, 1, 1, 1])])
def test_kl_warmup_raises_the_regularizer_weight_linearly(tiny_set, kl_warmup, want):
    model, seen = _model(), []
    forward = model.forward

    def recording_forward(x, eps=None, reg_weight=1.0):
        seen.append(reg_weight)
        return forward(x, eps, reg_weight)

    model.forward = recording_forward
    res = train.fit(model, tiny_set, epochs=2, batch_size=16, kl_warmup=kl_warmup, progress=False)
    assert seen == pytest.approx(want)  # 48 images / batch 16 = 3 steps per epoch
    assert [h["reg_weight"] for h in res.history] == pytest.approx([want[2], want[5]])


def test_nan_loss_stops_cleanly_and_keeps_last_good_checkpoint(tmp_path, tiny_set):
    kw = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "seed": 0, "progress": False}
    train.fit(_model(), tiny_set, out_dir=tmp_path, stop_after_epoch=1, **kw)
    ckpt = tmp_path / "checkpoint.pt"
    before = ckpt.read_bytes()
    images = tiny_set.images.clone()
    poisoned = ImageTensorDataset(images, tiny_set.labels, "poisoned")
    model = _model()
    messages = []
    # a NaN weight makes the loss NaN on the first step of the resumed epoch
    orig = poisoned.batch
    poisoned.batch = lambda idx: (orig(idx)[0] * float("nan"), orig(idx)[1])
    res = train.fit(model, poisoned, out_dir=tmp_path, resume=ckpt, log=messages.append, **kw)
    assert res.stopped == "nan" and res.epochs_done == 1
    assert "non-finite loss" in res.message and str(ckpt) in res.message
    assert any("non-finite" in m for m in messages)
    assert ckpt.read_bytes() == before


def test_beta_tcvae_gets_the_training_set_size(tiny_set):
    model = _model(variant="beta-tcvae")
    train.fit(model, tiny_set, epochs=1, batch_size=16, progress=False)
    assert model.config.dataset_size == len(tiny_set)


def test_fit_bad_arguments(tiny_set):
    with pytest.raises(ValueError, match="epochs"):
        train.fit(_model(), tiny_set, epochs=0)
    for bad in (-1.0, 0, math.inf, math.nan, "1e-3"):
        with pytest.raises(ValueError, match="^lr must be a finite number > 0"):
            train.fit(_model(), tiny_set, epochs=1, lr=bad)
    with pytest.raises(ValueError, match="^weight_decay must be a finite number >= 0"):
        train.fit(_model(), tiny_set, epochs=1, weight_decay=-1e-4)
    for bad in (-0.1, 1.5, math.nan, True):
        with pytest.raises(ValueError, match="kl_warmup"):
            train.fit(_model(), tiny_set, epochs=1, kl_warmup=bad)
    for bad in (0, -1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="scale_lr_factor"):
            train.fit(_model(), tiny_set, epochs=1, scale_lr_factor=bad)


@pytest.mark.parametrize("kind", ["bvae", "vae"])
def test_reverse_log_scales_train_at_their_own_lr(tmp_path, tiny_set, kind):
    model = _model(kind)
    groups = train.param_groups(model, 1e-3, 10.0)
    scales = [p for n, p in model.named_parameters() if n.endswith("reverse_log_scale")]
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(1e-2) and len(scales) >= 2
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in scales}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(train.param_groups(_model(kind, reverse_scale=False), 1e-3, 10.0)) == 1
    train.fit(model, tiny_set, epochs=1, batch_size=16, lr=1e-3, out_dir=tmp_path, progress=False)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["optimizer"]["param_groups"]
    # the one-cycle schedule keeps the ratio at every step
    assert saved[1]["lr"] == pytest.approx(10 * saved[0]["lr"]) and saved[1]["max_lr"] == pytest.approx(1e-2)


def test_training_improves_reconstruction(tiny_set):
    model = _model()
    before = train.evaluate_reconstruction(model, tiny_set)["psnr"]
    res = train.fit(model, tiny_set, epochs=3, batch_size=8, lr=5e-3, progress=False)
    after = train.evaluate_reconstruction(model, tiny_set)["psnr"]
    assert math.isfinite(after) and after > before + 1.0
    assert res.history[-1]["loss"] < res.history[0]["loss"]
