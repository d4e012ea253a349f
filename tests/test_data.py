"""IDX reading, the data lookup order, the bundled sample, and clear errors when nothing is found."""

import gzip
import os
import struct

import pytest
import torch

from bvae import data

DEBIAN = data.SYSTEM_DIRS["fashion-mnist"][0]


def _write_idx(path, tensor, code=0x08):
    dims = tuple(tensor.shape)
    body = tensor.numpy().astype(">i4" if code == 0x0C else "u1").tobytes()
    raw = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def _write_split(directory, split, n, value):
    part = "train" if split == "train" else "t10k"
    directory.mkdir(parents=True, exist_ok=True)
    _write_idx(directory / f"{part}-images-idx3-ubyte.gz", torch.full((n, 28, 28), value, dtype=torch.uint8))
    _write_idx(directory / f"{part}-labels-idx1-ubyte", torch.arange(n, dtype=torch.uint8) % 10)


def test_read_idx_round_trip_and_bad_files(tmp_path):
    x = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    _write_idx(tmp_path / "a.gz", x)
    assert torch.equal(data.read_idx(tmp_path / "a.gz"), x)
    y = torch.tensor([1, -2, 70000], dtype=torch.int32)
    _write_idx(tmp_path / "b", y, code=0x0C)  # big-endian int32
    assert torch.equal(data.read_idx(tmp_path / "b"), y)
    (tmp_path / "c").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(ValueError, match="bad magic"):
        data.read_idx(tmp_path / "c")
    raw = (tmp_path / "b").read_bytes()
    (tmp_path / "d").write_bytes(raw[:-2])
    with pytest.raises(ValueError, match="file size"):
        data.read_idx(tmp_path / "d")


def test_bundled_sample_is_real_fashion_mnist():
    train, test = data.demo_dataset("train"), data.demo_dataset("test")
    assert len(train) == 4000 and len(test) == 1000
    image, label = train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert isinstance(label, int) and set(train.labels.tolist()) == set(range(10))
    assert (data.BUNDLED_DIR / "LICENSE-fashion-mnist.txt").read_text().count("MIT") >= 1
    if (DEBIAN / "t10k-images-idx3-ubyte.gz").exists():
        full = data.load_dataset("fashion-mnist", "test")
        assert torch.equal(full.images[:1000], test.images) and torch.equal(full.labels[:1000], test.labels)


def test_lookup_order_data_dir_then_env(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    _write_split(first / "fashion-mnist", "test", 3, 10)
    _write_split(second, "test", 4, 20)
    monkeypatch.setenv("BVAE_DATA_DIR", str(second))
    ds = data.load_dataset("fashion-mnist", "test", data_dir=first)
    assert len(ds) == 3 and ds[0][0].max().item() == pytest.approx(10 / 255)
    ds = data.load_dataset("mnist", "test")  # $BVAE_DATA_DIR holds the files directly
    assert len(ds) == 4 and ds[1][1] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    ds = data.load_dataset("mnist", "test", data_dir=empty)  # an existing folder without the files falls through
    assert len(ds) == 4


def test_missing_data_dir_and_nothing_found(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_dataset("fashion-mnist", data_dir=tmp_path / "nope")
    monkeypatch.delenv("BVAE_DATA_DIR", raising=False)
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "no-debian"])
    with pytest.raises(FileNotFoundError) as info:
        data.load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "no-debian" in message
    assert "--data-dir" in message and "BVAE_DATA_DIR" in message and "apt install dataset-fashion-mnist" in message


def test_bad_names():
    with pytest.raises(ValueError, match="name must be one of"):
        data.load_dataset("svhn")
    with pytest.raises(ValueError, match="split"):
        data.load_dataset("fashion-mnist", split="val")


def test_torchvision_datasets_say_what_is_missing(tmp_path):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(FileNotFoundError, match="torchvision"):
            data.load_dataset("cifar10", data_dir=tmp_path)
    else:
        with pytest.raises(FileNotFoundError, match="not found"):
            data.load_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist():
    train = data.load_dataset("fashion-mnist", "train")
    assert len(train) == 60000 and train.images.shape == (60000, 1, 28, 28)
    x, y = train.batch(torch.tensor([0, 5]))
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [train[0][1], train[5][1]]
    assert len(train.take(100)) == 100


def test_cifar10_through_torchvision(tmp_path, monkeypatch):
    """Where torchvision imports (CI's CUDA-torch stage): a CIFAR-10 folder in torchvision's format loads through
    load_dataset as float [3, 32, 32] images in [0, 1] with int labels. torchvision checks each file against
    the real set's md5, which made-up files cannot match: those checks are switched off (files must still exist)."""
    import pickle

    datasets = pytest.importorskip("torchvision.datasets")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = torch.randint(0, 256, (4, 3 * 32 * 32), dtype=torch.uint8).numpy()
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images, "labels": [0, 1, 2, 9]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    test = data.load_dataset("cifar10", split="test", data_dir=tmp_path)
    x, y = test[3]
    assert len(test) == 4 and x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 9
    assert 0.0 <= x.min() and x.max() <= 1.0
    expected = torch.from_numpy(images[3]).view(3, 32, 32).float() / 255
    assert torch.allclose(x, expected)
