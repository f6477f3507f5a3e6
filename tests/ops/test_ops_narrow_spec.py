"""Conversions into the narrow types against codes written down from the ONNX spec's text.

Nothing here computes an expected value: each row is (target, attributes, input, expected code),
the code worked out by hand from the operator's text (Cast's float8 saturation tables, round to
nearest even; QuantizeLinear's saturation ranges; Cast's integer rules) and the encodings'
definitions (sign | exponent | mantissa). Each table runs three ways: the generated code (the
input is a run-time input), the constant folder (the input is an initializer, so the Cast is
evaluated at compile time and the artifact returns the folded codes), and, for Cast,
compiler/frontend/narrow_cast.py directly. ml_dtypes is not used, so a new ml_dtypes release
cannot move these results; a changed conversion rule in either the LLVM emitter or the folder
fails them.

Where the spec leaves a result open, the row says it is tilec's rule: a float out of an integer
type's range (Cast: "undefined if OOR") keeps the low bits of its truncation, as integer sources do.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.dtypes import DType
from compiler.frontend.narrow_cast import narrow_cast
from helpers_onnx import compiled
from runtime_stub import InferenceSession

NAN = float("nan")
INF = float("inf")

# (target, saturate, input, expected code)
CAST_FROM_FLOAT = [
    # E4M3FN: s.eeee.mmm, bias 7, largest 448 = 0x7E, no infinity, NaN = s.1111.111
    ("FLOAT8E4M3FN", 1, 1e6, 0x7E),            # [x] > FLT_MAX -> FLT_MAX
    ("FLOAT8E4M3FN", 1, INF, 0x7E),
    ("FLOAT8E4M3FN", 1, -INF, 0xFE),
    ("FLOAT8E4M3FN", 1, 464.0, 0x7E),          # the tie between 448 and 480 goes to even 448
    ("FLOAT8E4M3FN", 1, 465.0, 0x7E),          # [x] = 480 > FLT_MAX
    ("FLOAT8E4M3FN", 0, 464.0, 0x7E),          # rounds to FLT_MAX: not out of range
    ("FLOAT8E4M3FN", 0, 465.0, 0x7F),          # [x] > FLT_MAX -> NaN
    ("FLOAT8E4M3FN", 0, INF, 0x7F),
    ("FLOAT8E4M3FN", 0, -INF, 0xFF),           # -NaN
    ("FLOAT8E4M3FN", 1, 0.0, 0x00),
    ("FLOAT8E4M3FN", 1, -0.0, 0x80),           # -0 -> -0
    ("FLOAT8E4M3FN", 1, 0.47892547, 0x2F),     # nearest is 0.46875 = 1.875 * 2^-2
    ("FLOAT8E4M3FN", 1, 1.0625, 0x38),         # tie between 1.0 (m=000) and 1.125: even -> 1.0
    ("FLOAT8E4M3FN", 1, 1.1875, 0x3A),         # tie between 1.125 (m=001) and 1.25: even -> 1.25
    ("FLOAT8E4M3FN", 1, 2.0 ** -9, 0x01),      # the smallest subnormal
    ("FLOAT8E4M3FN", 1, 2.0 ** -10, 0x00),     # tie between 0 and 2^-9: even -> 0
    ("FLOAT8E4M3FN", 1, 1.5 * 2.0 ** -10, 0x01),
    # E4M3FNUZ: bias 8, largest 240 = 0x7F, NaN = 0x80, no negative zero
    ("FLOAT8E4M3FNUZ", 1, 1e6, 0x7F),
    ("FLOAT8E4M3FNUZ", 0, 1e6, 0x80),
    ("FLOAT8E4M3FNUZ", 0, INF, 0x80),
    ("FLOAT8E4M3FNUZ", 1, -0.0, 0x00),         # -0 -> 0
    ("FLOAT8E4M3FNUZ", 1, -1e-30, 0x00),       # rounds to zero: no negative zero
    ("FLOAT8E4M3FNUZ", 1, -1.0, 0xC0),         # 1.0 = 2^0: e = 0 + bias 8 = 1000, m 000
    # E5M2: s.eeeee.mm, bias 15, largest 57344 = 0x7B, infinity 0x7C
    ("FLOAT8E5M2", 1, INF, 0x7B),
    ("FLOAT8E5M2", 0, INF, 0x7C),
    ("FLOAT8E5M2", 0, -INF, 0xFC),
    ("FLOAT8E5M2", 0, 1e6, 0x7C),              # [x] > FLT_MAX -> Inf
    ("FLOAT8E5M2", 0, 61440.0, 0x7C),          # tie between 57344 (m=11) and 2^16: even -> overflow
    ("FLOAT8E5M2", 0, 61439.0, 0x7B),
    ("FLOAT8E5M2", 1, 61440.0, 0x7B),
    ("FLOAT8E5M2", 1, -1e6, 0xFB),
    ("FLOAT8E5M2", 1, -0.0, 0x80),
    # E5M2FNUZ: bias 16, largest 57344 = 0x7F, NaN = 0x80
    ("FLOAT8E5M2FNUZ", 1, 1e6, 0x7F),
    ("FLOAT8E5M2FNUZ", 0, -INF, 0x80),
    ("FLOAT8E5M2FNUZ", 1, -0.0, 0x00),
    # E2M1: s.ee.m, values 0 .5 1 1.5 2 3 4 6, no infinity or NaN: always saturates
    ("FLOAT4E2M1", 1, 5.0, 0x6),               # tie between 4 (code 6) and 6 (code 7): even -> 4
    ("FLOAT4E2M1", 1, 7.0, 0x7),
    ("FLOAT4E2M1", 0, 1e6, 0x7),
    ("FLOAT4E2M1", 0, -INF, 0xF),
    ("FLOAT4E2M1", 1, 2.5, 0x4),               # tie between 2 (code 4) and 3: even -> 2
    ("FLOAT4E2M1", 1, 0.25, 0x0),              # tie between 0 and 0.5: even -> 0
    ("FLOAT4E2M1", 1, -0.75, 0xA),             # tie between -0.5 (code 1) and -1 (code 2): even -> -1
    # Integers: truncation toward zero, then (tilec's rule out of range) the low bits
    ("INT4", 1, 7.9, 0x7),
    ("INT4", 1, -8.9, 0x8),                    # -8
    ("INT4", 1, -1.5, 0xF),                    # -1
    ("INT4", 1, 2.7, 0x2),
    ("INT4", 1, 8.0, 0x8),                     # out of range: 8 = 0b1000 -> -8 (tilec's rule)
    ("INT4", 1, -9.0, 0x7),                    # out of range: -9 = ...0111 -> 7 (tilec's rule)
    ("INT4", 1, 15.0, 0xF),                    # out of range -> -1 (tilec's rule)
    ("UINT4", 1, 15.5, 0xF),
    ("UINT4", 1, 16.0, 0x0),                   # out of range (tilec's rule)
    ("UINT4", 1, -1.0, 0xF),                   # out of range (tilec's rule)
    ("INT2", 1, 1.9, 0x1),
    ("INT2", 1, -2.5, 0x2),                    # -2
    ("INT2", 1, 2.0, 0x2),                     # out of range -> -2 (tilec's rule)
    ("UINT2", 1, 3.7, 0x3),
    ("UINT2", 1, 4.0, 0x0),                    # out of range (tilec's rule)
]

# Cast from integers: out of range, the low bits (the spec's rule for fixed point sources)
CAST_FROM_INT32 = [
    ("INT4", 200, 0x8),                        # 200 = 0xC8 -> -8
    ("INT4", -200, 0x8),                       # -200 = ...0x38 -> -8
    ("UINT4", 37, 0x5),
    ("INT2", -3, 0x1),
    ("UINT2", 6, 0x2),
]

# QuantizeLinear y = saturate(round_half_even(x / scale) + zero_point)
# (target, scale, zero_point, input, expected code)
QUANTIZE = [
    ("INT4", 1.0, 0, 2.5, 0x2),
    ("INT4", 1.0, 0, 3.5, 0x4),
    ("INT4", 1.0, 0, -2.5, 0xE),               # -2
    ("INT4", 1.0, 0, 7.5, 0x7),                # 8 saturates to 7
    ("INT4", 1.0, 0, -100.0, 0x8),             # -8
    ("INT4", 0.5, 2, 1.7, 0x5),                # round(3.4) + 2 = 5
    ("INT4", 1.0, -3, -6.0, 0x8),              # -9 saturates to -8
    ("UINT4", 1.0, 0, -3.0, 0x0),
    ("UINT4", 1.0, 0, 15.5, 0xF),              # 16 saturates to 15
    ("UINT4", 1.0, 0, 14.5, 0xE),
    ("UINT4", 1.0, 4, 12.0, 0xF),
    ("INT2", 1.0, 0, 1.5, 0x1),                # 2 saturates to 1
    ("INT2", 1.0, 0, -2.6, 0x2),               # -3 saturates to -2
    ("INT2", 1.0, 0, 0.5, 0x0),
    ("UINT2", 1.0, 0, 2.5, 0x2),
    ("UINT2", 1.0, 0, 3.5, 0x3),               # 4 saturates to 3
    ("UINT2", 2.0, 1, -9.0, 0x0),
]

OPSET = 25


def _model(nodes: list[onnx.NodeProto], x_type: int, y_type: int, n: int, const_x: np.ndarray | None,
           inits: list[onnx.TensorProto] = ()) -> onnx.ModelProto:
    """``x`` -> nodes -> ``y``; with ``const_x``, x is an initializer (so the nodes fold) and a dummy
    run-time input keeps the graph valid."""
    inputs, inits = [], list(inits)
    if const_x is None:
        inputs.append(helper.make_tensor_value_info("x", x_type, [n]))
    else:
        inits.append(numpy_helper.from_array(const_x, "x"))
        inputs.append(helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1]))
    graph = helper.make_graph(nodes, "narrow", inputs, [helper.make_tensor_value_info("y", y_type, [n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _codes(model: onnx.ModelProto, feeds: dict, cache) -> np.ndarray:
    with InferenceSession(compiled(model, cache), threads=1) as session:
        (y,) = session.run(None, feeds)
    assert y.dtype == np.uint8  # narrow outputs come back as one code per byte
    return y


def _assert_codes(got: np.ndarray, want: list[int], dst: str, inputs: list, how: str) -> None:
    mismatches = [(x, f"0x{w:02X}", f"0x{g:02X}") for x, w, g in zip(inputs, want, got.tolist()) if w != g]
    assert not mismatches, f"{how} Cast -> {dst}: (input, spec, got) {mismatches}"


def _groups(rows: list[tuple], key) -> dict:
    groups: dict = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


CAST_GROUPS = _groups(CAST_FROM_FLOAT, lambda r: (r[0], r[1]))


@pytest.mark.parametrize("source", ["run-time", "folded"])
@pytest.mark.parametrize("dst, saturate", sorted(CAST_GROUPS))
def test_cast_from_float_follows_the_spec(compile_cache, dst, saturate, source):
    rows = CAST_GROUPS[(dst, saturate)]
    x = np.array([r[2] for r in rows], dtype=np.float32)
    want = [r[3] for r in rows]
    to = getattr(TensorProto, dst)
    node = helper.make_node("Cast", ["x"], ["y"], to=to, saturate=saturate)
    model = _model([node], TensorProto.FLOAT, to, x.size, None if source == "run-time" else x)
    feeds = {"x": x} if source == "run-time" else {"unused": np.zeros(1, np.float32)}
    _assert_codes(_codes(model, feeds, compile_cache), want, dst, x.tolist(), source)
    direct = narrow_cast(x, DType.from_onnx(to), bool(saturate)).view(np.uint8)
    _assert_codes(direct, want, dst, x.tolist(), "narrow_cast")


def test_cast_from_float64_rounds_once(compile_cache):
    """A double just above a tie of the float8 grid rounds up; through float32 it would become the
    tie and round to even (double rounding): 1 + 2^-4 + 2^-40 lies between 1.0 and 1.125."""
    x = np.array([1 + 2.0 ** -4 + 2.0 ** -40, -(1 + 2.0 ** -4 + 2.0 ** -40), 1 + 2.0 ** -4], np.float64)
    want = [0x39, 0xB9, 0x38]
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT8E4M3FN)
    for source in ("run-time", "folded"):
        model = _model([node], TensorProto.DOUBLE, TensorProto.FLOAT8E4M3FN, x.size,
                       None if source == "run-time" else x)
        feeds = {"x": x} if source == "run-time" else {"unused": np.zeros(1, np.float32)}
        _assert_codes(_codes(model, feeds, compile_cache), want, "FLOAT8E4M3FN", x.tolist(), source)


@pytest.mark.parametrize("source", ["run-time", "folded"])
def test_cast_from_integers_keeps_the_low_bits(compile_cache, source):
    for dst, rows in _groups(CAST_FROM_INT32, lambda r: r[0]).items():
        x = np.array([r[1] for r in rows], dtype=np.int32)
        to = getattr(TensorProto, dst)
        model = _model([helper.make_node("Cast", ["x"], ["y"], to=to)], TensorProto.INT32, to, x.size,
                       None if source == "run-time" else x)
        feeds = {"x": x} if source == "run-time" else {"unused": np.zeros(1, np.float32)}
        _assert_codes(_codes(model, feeds, compile_cache), [r[2] for r in rows], dst, x.tolist(), source)


QUANTIZE_GROUPS = _groups(QUANTIZE, lambda r: (r[0], r[1], r[2]))


@pytest.mark.parametrize("dst, scale, zero_point", sorted(QUANTIZE_GROUPS))
def test_quantize_linear_saturates_and_rounds_half_even(compile_cache, dst, scale, zero_point):
    rows = QUANTIZE_GROUPS[(dst, scale, zero_point)]
    x = np.array([r[3] for r in rows], dtype=np.float32)
    to = getattr(TensorProto, dst)
    zp = helper.make_tensor("zp", to, [], [zero_point])
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "scale"), zp]
    node = helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["y"])
    model = _model([node], TensorProto.FLOAT, to, x.size, None, inits)
    _assert_codes(_codes(model, {"x": x}, compile_cache), [r[4] for r in rows], dst, x.tolist(), "run-time")
