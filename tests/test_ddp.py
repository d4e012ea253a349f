"""DistributedDataParallel on CPU: 2 gloo processes train a tiny BVAE and end with identical weights."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from bvae import build_model
        from bvae.data import demo_dataset
        from bvae.train import fit

        torch.manual_seed(rank)  # different seeds: DDP must broadcast rank 0's initial weights
        model = build_model("bvae", "fashion-mnist", latent_dim=3, width=4, hidden=16, backend="torch")
        init = {k: v.clone() for k, v in model.state_dict().items()}
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        result = fit(ddp, demo_dataset("train").take(40), epochs=2, batch_size=8, lr=3e-3, out_dir=out, progress=False)
        torch.save(
            {"state": model.state_dict(), "init": init, "epochs": result.epochs_done, "steps_images": result.history},
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_two_gloo_processes_agree(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["epochs"] == r1["epochs"] == 2
    for name, w0 in r0["state"].items():
        assert torch.equal(w0, r1["state"][name]), name  # gradients were all-reduced every step
    assert not torch.equal(r0["state"]["mu_head.weight"], r0["init"]["mu_head.weight"])
    # each rank saw its own half of every epoch: 20 images per rank per epoch
    assert r0["steps_images"][0]["images_per_sec"] > 0
    from bvae.train import load_model

    model, meta = load_model(tmp_path / "checkpoint.pt")  # written by rank 0 only
    assert meta["epoch"] == 2
    assert torch.equal(model.state_dict()["mu_head.weight"], r0["state"]["mu_head.weight"])
