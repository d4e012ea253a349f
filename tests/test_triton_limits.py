"""The Triton kernels index pixels and offsets inside one sample with int32: the exact guard that hands a layer
past those limits to the compiled op. Sizes are checked on meta tensors (no memory); the hand-over itself runs in
the interpreter with the limit lowered.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

from bvae_kernels import backends  # noqa: E402

if backends.triton_unavailable_reason() is not None:
    pytest.skip(f"Triton backend unavailable: {backends.triton_unavailable_reason()}", allow_module_level=True)

from bvae_kernels.triton import ops  # noqa: E402


def meta(*shape: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def test_a_large_image_overflows_one_output_sample():
    """x [1, 3, 8192, 8192] -> 64 channels: 4.3e9 output elements in one sample."""
    reason = ops.conv_problem(meta(1, 3, 8192, 8192), meta(64, 3, 3, 3), [8192, 8192], [1, 1], reverse=False)
    assert reason is not None and "one sample" in reason


def test_a_large_decoder_output_overflows_one_sample():
    """z [1, 16, 4096, 4096] decoded by W [16, 64, 4, 4], stride 2, to [1, 64, 8192, 8192]."""
    reason = ops.conv_problem(meta(1, 16, 4096, 4096), meta(16, 64, 4, 4), [8192, 8192], [2, 2], reverse=True)
    assert reason is not None and "one sample" in reason


def test_too_many_pixels():
    reason = ops.conv_problem(meta(512, 1, 2048, 2048), meta(4, 1, 3, 3), [2048, 2048], [1, 1], reverse=False)
    assert reason is not None and "pixels" in reason


def test_large_layers_within_the_limits_stay_on_triton():
    assert ops.conv_problem(meta(64, 64, 256, 256), meta(128, 64, 4, 4), [128, 128], [2, 2], reverse=False) is None
    assert ops.conv_problem(meta(4096, 128, 8, 8), meta(128, 64, 4, 4), [16, 16], [2, 2], reverse=True) is None
    # just under: 2**31 - 1024 pixels minus one tile is fine, at the limit it is not
    limit = ops._PIXEL_LIMIT
    assert ops.index_problem((limit - 1,), (1,), meta(1, 1)) is None
    assert ops.index_problem((limit,), (1,), meta(1, 1)) is not None
    assert ops.index_problem((1,), (2**31 - 1,), meta(1, 1)) is None
    assert ops.index_problem((1,), (2**31,), meta(1, 1)) is not None


def test_the_weight_is_indexed_in_place_so_its_span_counts():
    weight = meta(70_000, 70_000)
    assert "weight" in ops.index_problem((8,), (70_000, 70_000), weight)
    assert ops.index_problem((8,), (4,), meta(4, 4).t()) is None


def test_grid_limits():
    reason = ops.conv_problem(meta(1, 1, 300, 300), meta(1, 1, 256, 256), [45, 45], [1, 1], reverse=False)
    assert reason is not None and "taps" in reason


def test_groups_and_dilation_are_handed_over():
    """The Triton kernels serve groups=1, dilation=1; other geometry goes to the compiled op, saying so."""
    assert ops.conv_problem(meta(1, 4, 8, 8), meta(4, 4, 3, 3), [6, 6], [1, 1], False) is None
    for dilation, groups in (((2, 2), 1), ((1, 2), 1), ((1, 1), 2), ((2, 1), 4)):
        reason = ops.conv_problem(meta(1, 4, 8, 8), meta(4, 4 // groups, 3, 3), [4, 4], [1, 1], False, dilation, groups)
        assert reason is not None and "serve groups=1 and dilation=1" in reason
        reason = ops.conv_problem(meta(1, 4, 8, 8), meta(4, 4 // groups, 3, 3), [9, 9], [1, 1], True, dilation, groups)
        assert reason is not None and f"groups={groups}" in reason


def test_other_dtypes_are_handed_over():
    assert "float64" in ops.conv_problem(meta(1, 1, 4, 4, dtype=torch.float64), meta(1, 1, 3, 3), [2, 2], [1, 1], False)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="the kernels run on CPU tensors only interpreted")
def test_a_case_past_the_limits_runs_on_the_compiled_op(monkeypatch):
    """With the pixel limit lowered, a small layer is handed over (warning once) and still computes the reference."""
    from bvae_kernels import reference
    from bvae_kernels.activation import GNoVa

    x = torch.randn(2, 3, 6, 6)
    w = torch.randn(4, 3, 3, 3) * 0.3
    b = torch.randn(4)
    want = reference.bi_conv2d(x.double(), w.double(), b.double(), 1, 1, GNoVa(0.1, 1.0, 1.0))
    monkeypatch.setattr(ops, "_PIXEL_LIMIT", 50)
    with pytest.warns(RuntimeWarning, match="hands bi_conv2d to the compiled op: 72 pixels"):
        y = torch.ops.bvae.triton_bi_conv2d(x, w, b, [1, 1], [1, 1], 0.1, 1.0, 1.0)
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5)


def test_fp32_follows_the_tf32_flag_of_the_op_it_replaces():
    """Convs follow cuDNN's flag (as F.conv2d does), the dense layers matmul's; other dtypes never use tf32."""
    from bvae_kernels.triton._gemm import allow_tf32

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)  # properties: set and restored by hand (not monkeypatch)
    try:
        cudnn.allow_tf32, matmul.allow_tf32 = True, False
        assert allow_tf32(torch.float32) and not allow_tf32(torch.float32, dense=True)
        assert not allow_tf32(torch.bfloat16) and not allow_tf32(torch.float16)
        cudnn.allow_tf32, matmul.allow_tf32 = False, True
        assert not allow_tf32(torch.float32) and allow_tf32(torch.float32, dense=True)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
