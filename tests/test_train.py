"""Trainer: metrics, atomic checkpoints, exact resume, NaN stop, corrupt / mismatched checkpoints."""

import json
import math

import pytest
import torch

from bvae import build_model, checkpoint, train
from bvae.data import ImageTensorDataset, demo_dataset

SMALL = {"width": 4, "hidden": 16, "latent_dim": 3}


@pytest.fixture(scope="module")
def tiny_set():
    return demo_dataset("train").take(48)


def _model(kind="bvae", **kw):
    torch.manual_seed(0)
    return build_model(kind, "fashion-mnist", **{"backend": "torch", **SMALL, **kw})


def test_checkpoint_round_trip_is_atomic_and_plain(tmp_path, tiny_set):
    model = _model(variant="beta-vae", beta=2.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", model, opt, extra={"epoch": 3, "note": "x"})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind
    raw = torch.load(path, weights_only=True)  # plain tensors and strings only
    assert json.loads(raw["config"])["beta"] == 2.0
    loaded, meta = checkpoint.load_model(path)
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
        checkpoint.save_checkpoint(tmp_path / "d.pt", model, extra={"bad": object()})


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    model = _model()
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", model)
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        checkpoint.load_model(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt"):
        checkpoint.load_model(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a bvae checkpoint"):
        checkpoint.load_model(tmp_path / "foreign.pt")
    raw = torch.load(path, weights_only=True)
    cfg = json.loads(raw["config"])
    cfg["latent_dim"] = 5  # weights are for latent 3
    raw["config"] = json.dumps(cfg)
    torch.save(raw, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="do not match"):
        checkpoint.load_model(tmp_path / "mismatch.pt")
    with pytest.raises(FileNotFoundError):
        checkpoint.load_model(tmp_path / "missing.pt")


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
    _, meta = checkpoint.load_model(tmp_path / "b" / "checkpoint.pt")
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


def test_resume_refuses_a_different_training_set_size(tmp_path, tiny_set):
    """The one-cycle schedule is laid out for the first run's steps: another data size would end it early or crash."""
    kw = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "seed": 7, "progress": False}
    train.fit(_model(), tiny_set, out_dir=tmp_path, stop_after_epoch=1, **kw)
    for other in (tiny_set.take(32), demo_dataset("train").take(64)):
        with pytest.raises(ValueError, match="trained on 48 images, this run has"):
            train.fit(_model(), other, resume=tmp_path / "checkpoint.pt", **kw)


def test_learning_curves_record_every_eval_set_and_leave_training_unchanged(tmp_path, tiny_set):
    """eval_sets add <name>_loss per epoch with fixed noise (the same weights give the same figure) and draw from
    a forked generator: the trained weights equal a run without them, bit for bit."""
    fit_set, val = train.split_validation(tiny_set, 16)
    assert (len(fit_set), len(val)) == (32, 16) and torch.equal(val.images, tiny_set.images[32:])
    kw = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "seed": 7, "progress": False}
    plain = _model()
    train.fit(plain, fit_set, **kw)
    curved = _model()
    res = train.fit(curved, fit_set, eval_sets={"val": val, "test": val}, **kw)
    for a, b in zip(plain.state_dict().values(), curved.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for entry in res.history:
        assert entry["val_loss"] == entry["test_loss"] and math.isfinite(entry["val_loss"])
        assert "val_elbo" in entry
    assert res.history[-1]["val_loss"] == pytest.approx(train.evaluate_loss(curved, val, seed=7)["loss"], rel=1e-6)
    assert res.history[0]["val_loss"] != res.history[1]["val_loss"]
    with pytest.raises(ValueError, match="--val-size must be between 1 and 47"):
        train.split_validation(tiny_set, 48)


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


def test_weights_that_explode_with_a_finite_loss_are_never_saved(tmp_path, tiny_set):
    """The loss can stay finite on the step that sends a weight to inf: the epoch-end check refuses to save it, so
    the kept checkpoint evaluates to finite numbers."""
    kw = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "seed": 0, "progress": False}
    train.fit(_model(), tiny_set, out_dir=tmp_path, stop_after_epoch=1, **kw)
    ckpt = tmp_path / "checkpoint.pt"
    before = ckpt.read_bytes()
    model = _model()
    step = torch.optim.AdamW.step

    calls = []

    def exploding_step(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        out = step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:  # the epoch's last step (48 images, batch 16): every loss of the epoch was finite
            with torch.no_grad():
                model.mu_head.bias.fill_(float("inf"))
        return out

    torch.optim.AdamW.step = exploding_step
    try:
        res = train.fit(model, tiny_set, out_dir=tmp_path, resume=ckpt, **kw)
    finally:
        torch.optim.AdamW.step = step
    assert res.stopped == "nan" and "non-finite weights after epoch 2" in res.message
    assert ckpt.read_bytes() == before and res.checkpoint == str(ckpt)
    kept, _ = checkpoint.load_model(ckpt)
    assert all(torch.isfinite(p).all() for p in kept.parameters())


def test_checkpoint_writer_cleans_up_after_killed_writers_and_says_why_a_write_fails(tmp_path, tiny_set, monkeypatch):
    model = _model()
    dead = tmp_path / ".checkpoint.pt.tmp-999999999"  # no such process
    mine = tmp_path / f".checkpoint.pt.tmp-{1}"  # pid 1 is alive (init): not ours to delete
    dead.write_bytes(b"partial"), mine.write_bytes(b"partial")
    checkpoint.save_checkpoint(tmp_path / "checkpoint.pt", model)
    assert not dead.exists() and (tmp_path / "checkpoint.pt").is_file()

    def full_disk(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write checkpoint .*disk full or not writable"):
        checkpoint.save_checkpoint(tmp_path / "other.pt", model)
    assert not list(tmp_path.glob(".other.pt.tmp-*"))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: p.update(model=[1, 2]), "no model state_dict"),
        (lambda p: p["model"].update(extra="x"), "no model state_dict"),
        (lambda p: p.update(config='{"kind": "bvae"}'), "must name kind, dataset, variant and latent_dim"),
        (lambda p: p.update(config="[1]"), "must name kind"),
        (lambda p: p.update(extra="[]"), "extra field must be a JSON object"),
        (lambda p: p.update(optimizer=3), "optimizer state must be a dict"),
        (lambda p: p.update(rng={}), "RNG state is missing"),
        (lambda p: p.update(extra='{"epoch": "two"}'), "epoch must be int"),
        (lambda p: p.update(extra='{"history": 5}'), "history must be list"),
        (lambda p: p.pop("extra"), "missing or not JSON"),
    ],
)
def test_crafted_checkpoints_are_value_errors_not_tracebacks(tmp_path, damage, match):
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", _model(), extra={"epoch": 1})
    payload = torch.load(path, weights_only=True)
    damage(payload)
    torch.save(payload, path)
    with pytest.raises(ValueError, match=match):
        checkpoint.load_checkpoint(path)


def test_a_checkpoint_from_a_gpu_backend_loads_on_the_cpu(tmp_path):
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", _model(backend="triton"))
    model, meta = checkpoint.load_model(path)  # triton cannot serve CPU tensors outside the interpreter
    assert meta["config"]["backend"] in (None, "triton")
    out = model.reconstruct(torch.rand(2, 1, 28, 28))
    assert torch.isfinite(out).all()


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
