"""Datasets as (image float [C, H, W] in [0, 1], int label): Fashion-MNIST, MNIST, CIFAR-10, CelebA-64.

Fashion-MNIST and MNIST are read from IDX files (gzipped or not), looked up in this order:
`data_dir`, $BVAE_DATA_DIR, the Debian package's /usr/share/datasets/fashion-mnist (dataset-fashion-mnist),
then torchvision (only if importable, and only with download=True). CIFAR-10 and CelebA go through
torchvision. Nothing found: a FileNotFoundError listing every place searched and how to get the data.

`demo_dataset()` returns the small real Fashion-MNIST sample bundled in bvae/data/ (4000 training and
1000 test images, the first ones of the official files, MIT license in bvae/data/LICENSE-fashion-mnist.txt),
so `bvae demo` runs offline anywhere.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ._checks import positive_int

DATASET_NAMES = ("fashion-mnist", "mnist", "cifar10", "celeba64")
SYSTEM_DIRS = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
}
TORCHVISION_DIRS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
BUNDLED_DIR = Path(__file__).parent / "data"
BUNDLED_PREFIX = "fashion-mnist-sample-"
_IDX_DTYPES = {0x08: torch.uint8, 0x09: torch.int8, 0x0B: torch.int16, 0x0C: torch.int32}
_SPLIT_FILES = {"train": "train", "test": "t10k"}


class ImageTensorDataset(Dataset):
    """Images kept as uint8 [N, C, H, W] in memory; items are (float [C, H, W] in [0, 1], int label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str = "", source: str = "") -> None:
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape [{images.shape[0]}], got {tuple(labels.shape)}")
        self.images, self.labels = images, labels.long()
        self.name, self.source = name, source

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255.0), int(self.labels[index])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch at once (what the trainer uses): float images [B, C, H, W] and labels [B]."""
        return self.images[indices].float().div_(255.0), self.labels[indices]

    def take(self, n: int) -> ImageTensorDataset:
        """The first n samples (all if n >= len)."""
        positive_int("n", n)
        return ImageTensorDataset(self.images[:n], self.labels[:n], self.name, self.source)

    def __repr__(self) -> str:
        return f"ImageTensorDataset({self.name!r}, n={len(self)}, shape={tuple(self.images.shape[1:])}, {self.source})"


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Reads one IDX file (optionally gzipped) into a tensor; ValueError if it is not valid IDX."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[data[2]]
    count = 1
    for d in dims:
        count *= d
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(data) != header + count * itemsize:
        raise ValueError(f"{path}: expected {count} items of {itemsize} bytes for dims {dims}, file size differs")
    flat = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8)
    if itemsize > 1:  # IDX is big-endian
        flat = flat.view(-1, itemsize).flip(-1).reshape(-1)
    return flat.view(dtype).reshape(dims).clone()


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _load_idx_pair(directory: Path, prefix: str, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    part = _SPLIT_FILES[split]
    images = _find_idx(directory, f"{prefix}{part}-images-idx3-ubyte")
    labels = _find_idx(directory, f"{prefix}{part}-labels-idx1-ubyte")
    if images is None or labels is None:
        return None
    x, y = read_idx(images), read_idx(labels)
    if x.dim() != 3 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{directory}: images {tuple(x.shape)} and labels {tuple(y.shape)} do not match")
    return x.unsqueeze(1), y


def _candidate_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    roots: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data_dir {str(root)!r} does not exist or is not a directory")
        roots.append(root)
    env = os.environ.get("BVAE_DATA_DIR")
    if env:
        roots.append(Path(env).expanduser())
    dirs: list[Path] = []
    for root in roots:
        dirs += [root / name, root / TORCHVISION_DIRS[name] / "raw", root]
    dirs += SYSTEM_DIRS.get(name, [])
    return dirs


def _check_split(split: str) -> None:
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _load_mnist_like(name: str, split: str, data_dir: str | os.PathLike | None, download: bool) -> Dataset:
    searched = []
    for directory in _candidate_dirs(name, data_dir):
        searched.append(str(directory))
        if directory.is_dir():
            found = _load_idx_pair(directory, "", split)
            if found is not None:
                return ImageTensorDataset(*found, name=name, source=str(directory))
    tv_error = "torchvision is not installed"
    try:
        import torchvision  # noqa: F401

        tv_error = "download=False"
    except ImportError:
        pass
    if tv_error == "download=False" and download:
        from torchvision import datasets

        root = Path(data_dir or os.environ.get("BVAE_DATA_DIR") or Path.home() / ".cache" / "bvae").expanduser()
        cls = datasets.FashionMNIST if name == "fashion-mnist" else datasets.MNIST
        ds = cls(str(root), train=split == "train", download=True)
        return ImageTensorDataset(ds.data.unsqueeze(1).to(torch.uint8), ds.targets, name=name, source=str(root))
    debian = " (Debian/Ubuntu: `apt install dataset-fashion-mnist`)" if name == "fashion-mnist" else ""
    raise FileNotFoundError(
        f"{name} ({split}) not found. Looked for {_SPLIT_FILES[split]}-images-idx3-ubyte(.gz) and "
        f"{_SPLIT_FILES[split]}-labels-idx1-ubyte(.gz) in: {', '.join(searched)}; torchvision: {tv_error}. "
        f"Get the data by: putting the IDX files in a folder and passing --data-dir / setting $BVAE_DATA_DIR"
        f"{debian}, or `pip install torchvision` and passing download=True (--download)."
    )


class _TorchvisionImages(Dataset):
    """Wraps a torchvision image dataset into (float [C, H, W] in [0, 1], int label) items."""

    def __init__(self, dataset: Dataset, transform: object) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        image = self.transform(image)
        if isinstance(label, torch.Tensor):
            label = int(label.flatten()[0]) if label.numel() else 0
        return image, int(label)


def _load_torchvision(name: str, split: str, data_dir: str | os.PathLike | None, download: bool) -> Dataset:
    try:
        from torchvision import datasets, transforms
    except ImportError as exc:
        raise FileNotFoundError(
            f"{name} needs torchvision (`pip install torchvision`), which is not importable ({exc})"
        ) from exc
    root = Path(data_dir or os.environ.get("BVAE_DATA_DIR") or Path.home() / ".cache" / "bvae").expanduser()
    try:
        if name == "cifar10":
            ds = datasets.CIFAR10(str(root), train=split == "train", download=download)
            transform = transforms.ToTensor()
        else:
            ds = datasets.CelebA(str(root), split="train" if split == "train" else "test", download=download)
            transform = transforms.Compose(
                [transforms.CenterCrop(140), transforms.Resize(64, antialias=True), transforms.ToTensor()]
            )
    except RuntimeError as exc:  # torchvision raises RuntimeError("Dataset not found ...")
        raise FileNotFoundError(
            f"{name} ({split}) not found under {root} ({exc}); pass --data-dir, set $BVAE_DATA_DIR, or --download"
        ) from exc
    return _TorchvisionImages(ds, transform)


def load_dataset(
    name: str, split: str = "train", data_dir: str | os.PathLike | None = None, download: bool = False
) -> Dataset:
    """The dataset `name` ("fashion-mnist", "mnist", "cifar10", "celeba64") for `split` ("train" / "test")."""
    if name not in DATASET_NAMES:
        raise ValueError(f"name must be one of {DATASET_NAMES}, got {name!r}")
    _check_split(split)
    if name in ("fashion-mnist", "mnist"):
        return _load_mnist_like(name, split, data_dir, download)
    return _load_torchvision(name, split, data_dir, download)


def demo_dataset(split: str = "train") -> ImageTensorDataset:
    """The bundled real Fashion-MNIST sample (4000 train / 1000 test images, MIT license)."""
    _check_split(split)
    found = _load_idx_pair(BUNDLED_DIR, BUNDLED_PREFIX, split)
    if found is None:
        raise FileNotFoundError(f"the bundled Fashion-MNIST sample is missing from {BUNDLED_DIR} (broken install?)")
    return ImageTensorDataset(*found, name="fashion-mnist", source=f"bundled sample ({BUNDLED_DIR})")


def system_fashion_mnist_available() -> bool:
    """True when the full Fashion-MNIST IDX files are found without downloading (data_dir aside)."""
    try:
        load_dataset("fashion-mnist", "test")
    except (FileNotFoundError, ValueError):
        return False
    return True
