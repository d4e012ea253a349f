"""Every subcommand turns a user's mistake into exit code 2 and a message naming it, before doing any work, and
never a traceback: a table of bad arguments per subcommand."""

from __future__ import annotations

import json

import pytest
import torch

from bvae import build_model
from bvae.checkpoint import save_checkpoint
from bvae.cli import main


@pytest.fixture
def files(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a checkpoint")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    (tmp_path / "binary.json").write_bytes(bytes(range(256)))
    torch.manual_seed(0)
    model = build_model("bvae", "fashion-mnist", latent_dim=3, width=4, hidden=16, backend="torch")
    save_checkpoint(tmp_path / "tiny.pt", model)
    return tmp_path


CASES = [  # (argv with {tmp} for the fixture's folder, what the message must say)
    ("train --device bogus", "--device 'bogus' is not a device"),
    ("train --device cuda:7", "--device 'cuda:7'"),
    ("train --device meta", "only cpu and cuda"),
    ("train --backend bogus", "--backend must be one of"),
    ("train --out {tmp}/a_file", "exists and is not a folder"),
    ("train --out /proc/bvae-out", "is not a writable folder"),
    ("train --seed 99999999999999999999", "--seed: must be an int from 0 to"),
    ("train --seed -1", "--seed: must be an int from 0 to"),
    ("train --lr 1e39", "--lr: must be a learning rate in (0, 10]"),
    ("train --lr nan", "--lr: must be a learning rate"),
    ("train --epochs 0", "--epochs: must be a positive int"),
    ("train --data-dir {tmp}/missing --out {tmp}/o", "does not exist"),
    ("demo --backend bogus", "--backend must be one of"),
    ("demo --data-dir {tmp}/missing --out {tmp}/o", "--data-dir"),
    ("demo --out {tmp}/a_file", "exists and is not a folder"),
    ("eval {tmp}/missing.pt --out {tmp}/o", "not found"),
    ("eval {tmp}/a_file --out {tmp}/o", "is not a readable bvae checkpoint"),
    ("eval {tmp}/a_file --device bogus", "--device 'bogus'"),
    ("eval {tmp}/a_file --seed 1e3", "--seed: must be an int"),
    ("sample {tmp}/a_file --out {tmp}/o", "is not a readable bvae checkpoint"),
    ("sample {tmp}/a_file --out {tmp}/a_file", "exists and is not a folder"),
    ("eval {ckpt} --train-limit 5 --gmm-components 10 --limit 4 --metrics psnr --out {tmp}/o", "--gmm-components 10"),
    ("sample {ckpt} --sampler gmm --train-limit 5 --gmm-components 10 --out {tmp}/o", "--gmm-components 10"),
    ("compare {tmp}/list.json", ""),
    ("compare {tmp}/binary.json", ""),
    ("compare {tmp}/missing", ""),
    ("bench --cases nomatch --device cpu", "matches no case"),
    ("bench --device cpu --out {tmp}/a_file", "exists and is not a folder"),
    ("bench --reps 0", "--reps"),
]


@pytest.mark.parametrize(("argv", "says"), CASES, ids=[c[0].split(" {")[0] for c in CASES])
def test_user_errors_exit_2_with_a_message_and_no_traceback(files, capsys, argv: str, says: str) -> None:
    try:
        code = main(argv.format(tmp=files, ckpt=files / "tiny.pt").split())
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "error" in err
    assert says in err, err
