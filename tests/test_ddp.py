"""DistributedDataParallel on CPU: 2 gloo processes train a tiny BVAE and end with identical weights."""

import os

import pytest
import torch
from ddp_harness import run_ranks

pytestmark = pytest.mark.slow


def _worker(rank, world, out):
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


def test_ddp_two_gloo_processes_agree(tmp_path):
    run_ranks(_worker, tmp_path)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["epochs"] == r1["epochs"] == 2
    for name, w0 in r0["state"].items():
        assert torch.equal(w0, r1["state"][name]), name  # gradients were all-reduced every step
    assert not torch.equal(r0["state"]["mu_head.weight"], r0["init"]["mu_head.weight"])
    # each rank saw its own half of every epoch: 20 images per rank per epoch
    assert r0["steps_images"][0]["images_per_sec"] > 0
    from bvae.checkpoint import load_model

    model, meta = load_model(tmp_path / "checkpoint.pt")  # written by rank 0 only
    assert meta["epoch"] == 2
    assert torch.equal(model.state_dict()["mu_head.weight"], r0["state"]["mu_head.weight"])


def _mismatched_collective(rank, world, out):
    if rank == 0:
        torch.distributed.all_reduce(torch.ones(1))  # rank 1 never joins: gloo's timeout must end the wait


def _sleeper(rank, world, out):
    import time

    time.sleep(3600)


def test_the_harness_turns_hangs_into_failures(tmp_path):
    """A collective that one rank never joins fails within the collective timeout, and a process that hangs
    outside any collective is stopped at the run's timeout with its stacks printed, instead of stalling CI."""
    import time

    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    start = time.monotonic()
    with pytest.raises(ProcessRaisedException):
        run_ranks(_mismatched_collective, tmp_path / "a", timeout_s=60, collective_timeout_s=3)
    with pytest.raises(ProcessExitedException):
        run_ranks(_sleeper, tmp_path / "b", timeout_s=4)
    assert time.monotonic() - start < 45


def test_a_machine_without_a_working_gloo_device_skips(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "no-such-interface0")  # the spawned processes inherit it
    with pytest.raises(pytest.skip.Exception, match="could not rendezvous"):
        run_ranks(_sleeper, tmp_path, timeout_s=30)
