"""localize_slices: a padded copy read one channel at a time is built per channel in a local buffer.

Numerics are the op tests' (tests/ops/test_ops_conv.py, test_ops_pool.py run these kernels); here, the
structure: which temporaries move into their reader's loop, and which stay.
"""

from __future__ import annotations

from onnx import helper

from compiler.codegen.target import resolve_target
from compiler.loopir.printer import format_kernel
from compiler.pipeline import BuildLog, _lower
from helpers_onnx import graph_model, rand


def _kernels(model) -> list[str]:
    _, program = _lower(model, None, None, None, resolve_target("host"), BuildLog(), None)
    return [format_kernel(call.kernel) for call in program.calls]


def _depthwise(pads: int):
    x, w = rand([1, 8, 12, 12]), rand([8, 1, 3, 3], seed=1)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], group=8, pads=[pads] * 4, strides=[2, 2])
    return graph_model([conv], {"x": x}, ["y"], {"w": w})


def test_a_padded_depthwise_conv_pads_each_channel_in_a_local_plane():
    (kernel,) = _kernels(_depthwise(1))
    header = kernel.splitlines()[0]
    assert "padded" not in header  # no arena buffer for the padded input any more
    assert "alloc padded_" in kernel and "_slice: float32[1, 14, 14] local" in kernel
    # The copy runs inside the conv's channel loop, the kernel's only top-level statement.
    lines = kernel.splitlines()
    assert lines[1] == "  for i21 in 0..8 {" and lines[-2] == "  }" and "alloc padded_3_slice" in lines[2]


def test_an_unpadded_conv_has_nothing_to_localize():
    (kernel,) = _kernels(_depthwise(0))
    assert "_slice" not in kernel


def test_a_temporary_read_through_a_reshaped_view_stays():
    """GridSample's index tables are written as [N, H, W, 2] and read flattened: no slice corresponds."""
    x, grid = rand([1, 2, 4, 4]), rand([1, 3, 5, 2], seed=1, low=-1.0, high=1.0)
    model = graph_model([helper.make_node("GridSample", ["x", "g"], ["y"])], {"x": x, "g": grid}, ["y"], opset=20)
    assert not any("_slice" in k for k in _kernels(model))
