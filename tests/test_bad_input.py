"""Bad input gives a clear ValueError/TypeError naming the argument; NaN/inf inputs give the propagated answer."""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_ops, rel_err

import bvae_kernels as bk
from bvae_kernels import reference

pytestmark = cpu_ops

X = lambda: torch.randn(2, 3, 6, 6)  # noqa: E731
W = lambda: torch.randn(4, 3, 3, 3)  # noqa: E731


def conv(**kw):  # noqa: ANN003, ANN201
    args = {"x": X(), "weight": W(), "bias": None}
    args.update(kw)
    return bk.bi_conv2d(args.pop("x"), args.pop("weight"), args.pop("bias"), **args)


def conv_rev(**kw):  # noqa: ANN003, ANN201
    args = {"z": torch.randn(2, 4, 3, 3), "weight": W(), "bias": None}
    args.update(kw)
    return bk.bi_conv2d_reverse(args.pop("z"), args.pop("weight"), args.pop("bias"), **args)


# ----------------------------------------------------------------------------------------------------------
# dtypes and devices
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"weight": W().double()}, "weight has dtype torch.float64 but x has torch.float32"),
        ({"bias": torch.randn(4, dtype=torch.bfloat16)}, "bias has dtype torch.bfloat16"),
        ({"x": X().half()}, "weight has dtype torch.float32 but x has torch.float16"),
    ],
)
def test_dtype_mix(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        conv(**kw)


def test_dtype_mix_reverse_and_linear() -> None:
    with pytest.raises(ValueError, match="bias has dtype"):
        conv_rev(bias=torch.randn(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="weight has dtype"):
        bk.bi_linear(torch.randn(2, 3), torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="bias has dtype"):
        bk.bi_linear_reverse(torch.randn(2, 4), torch.randn(4, 3), torch.randn(3).half())


@pytest.mark.parametrize("which", ["weight", "bias"])
def test_device_mix(which: str) -> None:
    """The "meta" device stands in for a second device."""
    kw = {"weight": W().to("meta")} if which == "weight" else {"bias": torch.randn(4, device="meta")}
    with pytest.raises(ValueError, match=f"{which} is on meta but x is on cpu"):
        conv(**kw)
    with pytest.raises(ValueError, match="is on meta"):
        bk.bi_linear(torch.randn(2, 3), torch.randn(4, 3, device="meta"))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64])
def test_integer_and_complex_tensors(dtype: torch.dtype) -> None:
    x = torch.ones(2, 3, 6, 6, dtype=dtype)
    with pytest.raises(ValueError, match=r"x must be float16, bfloat16, float32 or float64, got torch\."):
        bk.bi_conv2d(x, W())
    with pytest.raises(ValueError, match="weight must be float16"):
        bk.bi_conv2d(X(), W().to(dtype))
    with pytest.raises(ValueError, match="u must be float16"):
        bk.gnova(torch.ones(3, dtype=dtype))
    with pytest.raises(ValueError, match="z must be float16"):
        bk.bi_linear_reverse(torch.ones(2, 4, dtype=dtype), torch.randn(4, 3))


def test_non_tensor_arguments() -> None:
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        bk.bi_conv2d([[1.0]], W())
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        bk.bi_conv2d(X(), 3.0)
    with pytest.raises(TypeError, match="bias must be a torch.Tensor"):
        bk.bi_conv2d(X(), W(), [0.0] * 4)
    with pytest.raises(TypeError, match="bias must be a torch.Tensor"):
        bk.bi_linear(torch.randn(2, 3), torch.randn(4, 3), [0.0] * 4)
    with pytest.raises(TypeError, match="u must be a torch.Tensor"):
        bk.gnova([1.0, 2.0])


# ----------------------------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------------------------
def test_channel_mismatch() -> None:
    with pytest.raises(ValueError, match=r"x has 5 channels but weight expects C_in=3"):
        conv(x=torch.randn(2, 5, 6, 6))
    with pytest.raises(ValueError, match=r"z has 3 channels but the reverse direction takes weight's C_out=4"):
        conv_rev(z=torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \[4\] \(C_out\)"):
        conv(bias=torch.randn(3))
    with pytest.raises(ValueError, match=r"bias must have shape \[3\] \(C_in\)"):
        conv_rev(bias=torch.randn(4))
    with pytest.raises(ValueError, match=r"x has 3 channels but weight expects C_in=6 \(.*groups=2\)"):
        conv(groups=2)  # weight [4, 3, ...] with 2 groups reads 6 channels
    with pytest.raises(ValueError, match=r"bias must have shape \[6\] \(C_in\)"):
        conv_rev(groups=2, bias=torch.randn(3))  # ... and the reverse direction writes 6
    with pytest.raises(ValueError, match="x has 5 features but weight"):
        bk.bi_linear(torch.randn(2, 5), torch.randn(4, 3))
    with pytest.raises(ValueError, match="z has 3 features but weight"):
        bk.bi_linear_reverse(torch.randn(2, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \[3\] \(in_features\)"):
        bk.bi_linear_reverse(torch.randn(2, 4), torch.randn(4, 3), torch.randn(4))


def test_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"x must be 3D or 4D, got shape \(3, 6\)"):
        conv(x=torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"x must be 3D or 4D"):
        conv(x=torch.randn(1, 2, 3, 6, 6))
    with pytest.raises(ValueError, match="weight must be 4D"):
        conv(weight=torch.randn(4, 3, 3))
    with pytest.raises(ValueError, match="z must be 3D or 4D"):
        conv_rev(z=torch.randn(4))
    with pytest.raises(ValueError, match="bias must be 1D"):
        conv(bias=torch.randn(4, 1))
    with pytest.raises(ValueError, match="weight must be 2D"):
        bk.bi_linear(torch.randn(2, 3), torch.randn(4, 3, 1))
    with pytest.raises(ValueError, match="x must be 1D"):
        bk.bi_linear(torch.tensor(1.0), torch.randn(4, 1))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"stride": 0}, r"stride must be >= 1"),
        ({"stride": (1, -1)}, r"stride must be >= 1"),
        ({"padding": -1}, r"padding must be >= 0"),
        ({"stride": (1, 2, 3)}, r"stride must be an int or a pair of ints"),
        ({"stride": 1.5}, r"stride must be an int or a pair of ints, got 1.5"),
        ({"padding": None}, r"padding must be an int or a pair of ints, got None"),
        ({"padding": True}, r"padding must be an int or a pair of ints"),
        ({"padding": "same"}, r"padding must be an int or a pair of ints"),
        ({"dilation": 0}, r"dilation must be >= 1"),
        ({"dilation": (1, 2, 3)}, r"dilation must be an int or a pair of ints"),
        ({"dilation": 1.5}, r"dilation must be an int or a pair of ints"),
        ({"groups": 0}, r"groups must be >= 1"),
        ({"groups": 1.5}, r"groups must be an int"),
        ({"groups": True}, r"groups must be an int"),
        ({"groups": 3}, r"weight's C_out=4 must be divisible by groups=3"),
    ],
)
def test_bad_stride_padding(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        conv(**kw)
    with pytest.raises(ValueError, match=match):
        conv_rev(**kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"stride": 2, "output_padding": 2}, r"output_padding must be >= 0 and smaller than stride or dilation"),
        ({"stride": 1, "output_padding": 1}, r"output_padding must be >= 0 and smaller than stride or dilation"),
        ({"stride": 2, "output_padding": -1}, r"output_padding must be >= 0 and smaller than stride or dilation"),
        (
            {"stride": (2, 1), "output_padding": (1, 1)},
            r"output_padding must be >= 0 and smaller than stride or dilation",
        ),
        ({"dilation": 2, "output_padding": 2}, r"output_padding must be >= 0 and smaller than stride or dilation"),
        ({"output_padding": 0.5}, r"output_padding must be an int or a pair of ints"),
    ],
)
def test_bad_output_padding(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        conv_rev(**kw)


def test_input_too_small() -> None:
    with pytest.raises(ValueError, match=r"input \(2, 2\) is too small for kernel \(3, 3\)"):
        conv(x=torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"too small"):
        conv(x=torch.randn(1, 3, 6, 1), padding=(1, 0))
    with pytest.raises(ValueError, match=r"padding \[2, 2\] is too large for input \(1, 1\)"):
        conv_rev(z=torch.randn(1, 4, 1, 1), padding=2)


# ----------------------------------------------------------------------------------------------------------
# activations and backends
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "", 3, 0.1, ("gnova",)])
def test_bad_activation(activation) -> None:
    with pytest.raises(ValueError, match="activation must be 'gnova', 'sigmoid', 'identity', None or"):
        conv(activation=activation)
    with pytest.raises(ValueError, match="activation must be"):
        bk.bi_linear(torch.randn(2, 3), torch.randn(4, 3), activation=activation)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"alpha": -0.1}, "alpha and beta must be >= 0"),
        ({"beta": -1.0}, "alpha and beta must be >= 0"),
        ({"gamma": 0.0}, "gamma must be > 0"),
        ({"alpha": 0.0, "beta": 0.0}, "cannot both be 0"),
        ({"alpha": float("nan")}, "alpha must be a finite number"),
        ({"gamma": float("inf")}, "gamma must be a finite number"),
        ({"beta": "1"}, "beta must be a finite number"),
        ({"alpha": True}, "alpha must be a finite number"),
    ],
)
def test_bad_gnova_parameters(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bk.GNoVa(**params)
    with pytest.raises(ValueError, match=match):
        bk.gnova(torch.randn(3), **params)


@pytest.mark.parametrize("backend", ["gpu", "CPU", "", "reference", 1])
def test_bad_backend_name(backend) -> None:
    with pytest.raises(ValueError, match=r"backend must be one of \('torch', 'cpu', 'cuda', 'triton'\)"):
        conv(backend=backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        bk.gnova(torch.randn(3), backend=backend)


@pytest.mark.parametrize("value", ["gpu", "Torch", "cpu,torch"])
def test_bad_env_backend(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BVAE_BACKEND", value)
    with pytest.raises(ValueError, match=r"\$BVAE_BACKEND must be one of .*got '" + value + "'"):
        conv()
    with pytest.raises(ValueError, match=r"\$BVAE_BACKEND must be one of"):
        bk.bi_linear(torch.randn(2, 3), torch.randn(4, 3))


# ----------------------------------------------------------------------------------------------------------
# NaN / inf propagate exactly as the reference says
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_nonfinite_inputs_propagate(reverse: bool, bad: float) -> None:
    x = torch.randn(1, 4 if reverse else 3, 6, 6)
    x[0, 1, 2, 3] = bad
    w, b = W(), torch.randn(3 if reverse else 4)
    if reverse:
        y = bk.bi_conv2d_reverse(x, w, b, stride=2, padding=1, output_padding=1, backend="cpu")
        y_ref = reference.bi_conv2d_reverse(x.double(), w.double(), b.double(), 2, 1, 1)
    else:
        y = bk.bi_conv2d(x, w, b, padding=1, backend="cpu")
        y_ref = reference.bi_conv2d(x.double(), w.double(), b.double(), 1, 1)
    assert (~torch.isfinite(y_ref)).any(), "the case must produce non-finite outputs"
    assert torch.equal(y.isnan(), y_ref.isnan()), "NaN positions differ from the reference"
    assert rel_err(y, y_ref) <= 1e-5  # also checks +-inf positions and signs, and the finite values


def test_nonfinite_linear_propagates() -> None:
    x = torch.randn(3, 5)
    x[1, 2] = float("nan")
    x[2, 0] = float("inf")
    w = torch.randn(4, 5)
    y = bk.bi_linear(x, w, backend="cpu")
    y_ref = reference.bi_linear(x.double(), w.double())
    assert y[1].isnan().all() and torch.isfinite(y[0]).all()
    assert rel_err(y, y_ref) <= 1e-5
