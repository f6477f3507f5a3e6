"""Signal processing: DFT (opsets 17, 20), STFT, Hann/Hamming/Blackman windows and MelWeightMatrix.

DFT and STFT are one sum-reduction over the signal samples per output bin, with
compile-time twiddle tables: for bin ``k`` and sample ``n`` of a length-``L``
transform, ``cos``/``sin`` of ``2 pi m / L`` at ``m = k n mod L``, signed for the
direction. Tables, products and sums are float64 for every input type, so a
float32 (or half) transform is rounded once, at the store. The inverse scales by
``1/L``; the one-sided inverse (irfft) takes the missing half of the spectrum as
the conjugate mirror, i.e. weighs every bin but the first (and, for even ``L``,
the middle one) twice and yields real samples.
Samples past the input's end are zeros and samples past ``L`` are dropped, as a
``dft_length`` different from the input's size requires.

A parameter that is a run-time input (the DFT ``axis``, ``dft_length``, the STFT
``frame_length``) only has finitely many values consistent with the declared
output shape; each such choice is lowered, and the output selects among them with
the run-time value. ``frame_step`` is only an index offset, so it is read at run
time directly.

Windows depend only on their size, which is the output's: they are compile-time
constants. MelWeightMatrix's band edges depend on its run-time scalars, so they
are computed in the kernel, the same formula as the reference's.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, call, cast, compare, const, logical_and, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop

# (sample index in the output index and reduction var, component 0/1) -> sample value, compute dtype
Sampler = Callable[[Index, Expr, int], Expr]


def _compute_dtype(dtype: DType) -> DType:
    return DType.F64 if dtype is DType.F64 else DType.F32


def _scalar(t: Tensor) -> Expr:
    """A one-element run-time input (scalar or shape [1]) as int64."""
    return cast(t[[0] * t.rank], DType.I64)


def _fourier(ctx: LoweringContext, shape: tuple[int, ...], k_axis: int, extent: int, sample: Sampler,
             complex_in: bool, length: int, inverse: bool, half_spectrum: bool, dtype: DType) -> Tensor:
    """``out[..., k (at k_axis), ..., c]``: the length-``length`` (inverse) DFT of ``sample`` over ``extent`` samples.

    ``half_spectrum``: the samples are the one-sided spectrum of a real signal (irfft), the output real.
    """
    # Float64 whatever the output type: a float32 sum of L products drifts from the exact transform (at
    # L = 1000 by 30x the output's own rounding error), float32 twiddles add their share; in float64 the
    # result is rounded once, at the store.
    work = DType.F64
    sign = -1.0 if inverse else 1.0
    angle = 2.0 * np.pi * np.arange(length) / length
    cos, sin = np.cos(angle), np.sin(angle)
    # out[c] = sum xr * real_coef[c, m] + xi * imag_coef[c, m]
    real_coef = ctx.add_constant(np.stack([cos, -sign * sin]).astype(work.numpy), "dft_re")
    imag_coef = ctx.add_constant(np.stack([sign * sin, cos]).astype(work.numpy), "dft_im")
    weights = None
    if half_spectrum:
        w = np.full(extent, 2.0)
        w[0] = 1.0
        if length % 2 == 0 and length // 2 < extent:
            w[length // 2] = 1.0
        weights = ctx.add_constant(w.astype(work.numpy), "dft_w")
    scale = 1.0 / length if inverse else 1.0

    def body(i: Index, r: Index) -> Expr:
        n, c = r[0], i[-1]
        m = (i[k_axis] * n) % length
        term = cast(sample(i, n, 0), work) * real_coef[c, m]
        if complex_in:
            term = term + cast(sample(i, n, 1), work) * imag_coef[c, m]
        return term * weights[(n,)] if weights is not None else term

    return ctx.reduce(shape, [extent], body, "sum",
                      lambda acc, i: cast(acc * const(scale, work) if scale != 1.0 else acc, dtype), name="dft")


def _choose(ctx: LoweringContext, shape: tuple[int, ...], dtype: DType,
            options: list[tuple[Expr, Tensor]]) -> Tensor:
    """The first option whose run-time condition holds (the last one otherwise)."""
    if len(options) == 1:
        return options[0][1]

    def pick(i: Index) -> Expr:
        value = options[-1][1][i]
        for cond, t in reversed(options[:-1]):
            value = select(cond, t[i], value)
        return value

    return ctx.compute(shape, pick, dtype=dtype, name="dft_choice")


def _lengths(given: int | None, bins: int, half: bool) -> list[int]:
    """Transform lengths giving ``bins`` output bins (``half``: the one-sided L//2+1)."""
    if given is not None:
        return [given]
    return [2 * bins - 2, 2 * bins - 1] if half else [bins]


def dft(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    inverse, onesided = bool(ctx.attr("inverse", 0)), bool(ctx.attr("onesided", 0))
    rank = x.rank
    if x.shape[-1] not in (1, 2):
        ctx.unsupported(f"the last dimension must be 1 (real) or 2 (complex), not {x.shape[-1]}")
    complex_in = x.shape[-1] == 2
    irfft = inverse and onesided
    if irfft and not complex_in:
        ctx.unsupported("an inverse one-sided DFT needs a complex (one-sided spectrum) input")
    # The axis: attribute (opset 17), or input 2 (opset 20: constant or run-time).
    axis_expr: Expr | None = None
    if ctx.opset < 20:
        axes = [ctx.axis(ctx.attr("axis", 1), rank)]
    elif not ctx.has_input(2):
        axes = [-2 % rank]
    elif ctx.input_value(2).const is not None:
        axes = [ctx.axis(np.asarray(ctx.input_value(2).const).reshape(-1)[0], rank)]
    else:
        raw = _scalar(ctx.input(2))
        axis_expr = select(compare("lt", raw, 0), raw + rank, raw)
        axes = list(range(rank - 1))
    length_expr: Expr | None = None
    given: int | None = None
    if ctx.has_input(1):
        if ctx.input_value(1).const is not None:
            given = int(np.asarray(ctx.input_value(1).const).reshape(-1)[0])
        else:
            length_expr = _scalar(ctx.input(1))

    if x.dtype is not DType.F64:
        # The samples in float64 once, not at each of the L reads of every one (converting in the sum's loop
        # made complex float32 transforms 30% slower; this way it is 10%).
        narrow = x
        x = ctx.compute(x.shape, lambda i: cast(narrow[i], DType.F64), dtype=DType.F64, name="dft_x64",
                        materialize=True)
    options: list[tuple[Expr, Tensor]] = []
    for axis in axes:
        if axis == rank - 1:
            ctx.unsupported("the DFT axis cannot be the last (real/imaginary) dimension")
        n_in = x.shape[axis]
        bins = out.shape[axis]
        default = 2 * (n_in - 1) if irfft else n_in
        for length in _lengths(given, bins, onesided and not inverse) if ctx.has_input(1) else [default]:
            if length < 1:
                continue
            k = length // 2 + 1 if onesided and not inverse else length
            expected = tuple(k if d == axis else 1 if d == rank - 1 and irfft else 2 if d == rank - 1 else s
                             for d, s in enumerate(x.shape))
            if expected != tuple(out.shape):
                continue
            extent = min(n_in, length // 2 + 1 if irfft else length)

            def sample(i: Index, n: Expr, comp: int, axis: int = axis) -> Expr:
                return x[[n if d == axis else Const(comp) if d == rank - 1 else i[d] for d in range(rank)]]

            result = _fourier(ctx, out.shape, axis, extent, sample, complex_in, length, inverse, irfft, out.dtype)
            cond: Expr = Const(True, DType.BOOL)
            if axis_expr is not None:
                cond = logical_and(cond, compare("eq", axis_expr, axis))
            if length_expr is not None:
                cond = logical_and(cond, compare("eq", length_expr, length))
            options.append((cond, result))
    if not options:
        ctx.unsupported(f"no axis/dft_length gives the output shape {list(out.shape)} from {list(x.shape)}")
    return [_choose(ctx, out.shape, out.dtype, options)]


def stft(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    if x.rank != 3 or x.shape[-1] not in (1, 2):
        ctx.unsupported(f"signal must be [batch, length, 1 or 2], not {list(x.shape)}")
    onesided = bool(ctx.attr("onesided", 1))
    complex_in = x.shape[-1] == 2
    signal_length = x.shape[1]
    step_value = ctx.input_value(1).const
    step: Expr = Const(int(np.asarray(step_value).reshape(-1)[0])) if step_value is not None \
        else _scalar(ctx.input(1))
    window = ctx.input(2) if ctx.has_input(2) else None
    length_expr: Expr | None = None
    if window is not None:
        lengths = [window.shape[0]]
    elif not ctx.has_input(3):
        lengths = [signal_length]
    elif ctx.input_value(3).const is not None:
        lengths = [int(np.asarray(ctx.input_value(3).const).reshape(-1)[0])]
    else:
        length_expr = _scalar(ctx.input(3))
        lengths = [n for n in _lengths(None, out.shape[2], onesided) if 1 <= n <= signal_length]

    options: list[tuple[Expr, Tensor]] = []
    for length in lengths:
        if (out.shape[2], out.shape[3]) != (length // 2 + 1 if onesided else length, 2):
            continue

        def sample(i: Index, n: Expr, comp: int, length: int = length) -> Expr:
            pos = i[1] * step + n
            value = cast(x[[i[0], min_(pos, Const(signal_length - 1)), Const(comp)]], DType.F64)
            if window is not None:
                value = value * cast(window[(n,)], DType.F64)  # in the sum's precision (_fourier)
            # A frame running past the signal's end reads zeros.
            return select(compare("lt", pos, signal_length), value, const(0, DType.F64))

        result = _fourier(ctx, out.shape, 2, length, sample, complex_in, length, False, False, out.dtype)
        options.append((Const(True, DType.BOOL) if length_expr is None else compare("eq", length_expr, length),
                        result))
    if not options:
        ctx.unsupported(f"no frame length gives the output shape {list(out.shape)}")
    return [_choose(ctx, out.shape, out.dtype, options)]


# --- windows ------------------------------------------------------------------------

_WINDOWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    # Argument: 2 pi n / N for the window's N (size, or size - 1 when symmetric).
    "HannWindow": lambda t: np.sin(t / 2) ** 2,
    "HammingWindow": lambda t: 25.0 / 46.0 - (1 - 25.0 / 46.0) * np.cos(t),
    "BlackmanWindow": lambda t: 0.42 - 0.5 * np.cos(t) + 0.08 * np.cos(2 * t),
}


def _window(name: str):
    def lower(ctx: LoweringContext) -> list[Tensor]:
        out = ctx.output_type(0)
        size = out.shape[0]
        period = size if ctx.attr("periodic", 1) else size - 1
        t = 2.0 * np.pi * np.arange(size) / period if period else np.zeros(size)
        table = ctx.add_constant(_WINDOWS[name](t).astype(_compute_dtype(out.dtype).numpy), "window")
        return [ctx.compute(out.shape, lambda i: cast(table[i], out.dtype), dtype=out.dtype, name="window")]

    return lower


def mel_weight_matrix(ctx: LoweringContext) -> list[Tensor]:
    out = ctx.output_type(0)
    bins, mels = out.shape
    length = _scalar(ctx.input(1))
    rate = _scalar(ctx.input(2))
    lo, hi = ctx.input(3), ctx.input(4)
    edge = lo.dtype if lo.dtype in (DType.F32, DType.F64) else DType.F32
    f64 = DType.F64

    def mel(hz: Tensor) -> Expr:
        v = cast(hz[[0] * hz.rank], edge)
        log1p = call("log", const(1.0, edge) + v / const(700.0, edge))
        return const(2595.0, edge) * log1p / const(math.log(10.0), edge)

    def edge_bin(i: Index) -> Expr:
        # The mel range and step in the edges' precision, the rest in float64, as the reference does.
        low = mel(lo)
        step = cast((mel(hi) - low) / const(mels + 2, edge), f64)
        hz = const(700.0, f64) * (call("exp", (cast(i[0], f64) * step + cast(low, f64)) / const(2595.0, f64)
                                       * const(math.log(10.0), f64)) - const(1.0, f64))
        return cast(call("floor", cast(length + 1, f64) * hz / cast(rate, f64)), DType.I64)

    edges = ctx.compute((mels + 2,), edge_bin, dtype=DType.I64, name="mel_edges", materialize=True)

    def weight(i: Index) -> Expr:
        j, m = i
        left, center, right = edges[(m,)], edges[(m + 1,)], edges[(m + 2,)]
        fj = cast(j, f64)
        rising = select(compare("eq", center, left), const(1.0, f64),
                        (fj - cast(left, f64)) / cast(max_(center - left, Const(1)), f64))
        falling = (cast(right, f64) - fj) / cast(max_(right - center, Const(1)), f64)
        in_rise = logical_and(compare("ge", j, left), compare("le", j, center))
        in_fall = logical_and(compare("ge", j, center), compare("lt", j, right))
        value = select(in_fall, falling, select(in_rise, rising, const(0.0, f64)))
        return cast(value, out.dtype)

    return [ctx.compute((bins, mels), weight, dtype=out.dtype, name="mel_weights")]


OPS: list[OpDef] = [
    defop("DFT", dft, since=17),
    defop("STFT", stft, since=17),
    defop("MelWeightMatrix", mel_weight_matrix, since=17),
    *(defop(name, _window(name), since=17) for name in _WINDOWS),
]
