"""RNN, GRU and LSTM as plain nodes: a loop of the run over the steps, or unrolled where short.

Contract of :func:`expand_recurrent` (called by :mod:`.expand` during folding):
given an ``RNN``/``GRU``/``LSTM`` node whose X, W and R have static shapes, it
emits nodes computing exactly the ONNX equations (any opset: forward, reverse
and bidirectional; every activation the spec lists, with ``activation_alpha``
/``activation_beta`` consumed in activation order by the activations that take
them; ``clip`` on every gate's activation input (not on the LSTM cell state
fed to h, as onnxruntime does); GRU ``linear_before_reset``; LSTM
peepholes and ``input_forget``; ``initial_h``/``initial_c``; ``layout`` 0/1;
any subset of the Y/Y_h/Y_c outputs).

Per direction, ``X @ W^T + biases`` is one MatMul over every step; each step
then adds ``H @ R^T`` and applies the gates: the step's nodes once, as the body
of a loop of the run (:mod:`.run_loops`: the sequence length, and the batch,
may be symbolic), or once per step where ``keeps_loop`` says to unroll (a short
static sequence, or CUDA). ``sequence_lens`` (constant or
not) masks the steps at or past each batch entry's length: the state stays as
it was and Y is zero there, which for the reverse direction also makes each
entry start at its own last step, as the spec requires. Weights that are
constants fold to constants in later folding rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import onnx
from onnx import helper

from compiler.frontend.rewrite import Builder, NotExpandable
from compiler.frontend.run_loops import LoopBuilder, keeps_loop
from compiler.loopir.sizes import Size

if TYPE_CHECKING:
    from compiler.frontend.folding import FoldedGraph

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}

#: Activation (lower case) -> default alpha, default beta (None: takes no such parameter).
_ACTIVATION_PARAMS: dict[str, tuple[float | None, float | None]] = {
    "relu": (None, None), "tanh": (None, None), "sigmoid": (None, None), "softsign": (None, None),
    "softplus": (None, None), "affine": (1.0, 0.0), "leakyrelu": (0.01, None), "thresholdedrelu": (1.0, None),
    "scaledtanh": (1.0, 1.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, None),
}
_PLAIN_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softsign": "Softsign",
                      "softplus": "Softplus"}


@dataclass(frozen=True)
class _Activation:
    name: str  # lower case
    alpha: float | None
    beta: float | None


def expand_recurrent(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    op = node.op_type
    attrs = {a.name: _attr(a) for a in node.attribute}
    x, w, r, bias, lens, h0, c0, peepholes = (list(node.input) + [""] * 8)[:8]
    y_out, yh_out, yc_out = (list(node.output) + [""] * 3)[:3]
    w_shape, r_shape = (_shape(state, v, label) for v, label in ((w, "W"), (r, "R")))
    x_shape = _input_shape(state, x)
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise NotExpandable(f"unknown direction '{direction}'")
    dirs, hidden = w_shape[0], r_shape[-1]
    if dirs != (2 if direction == "bidirectional" else 1) or r_shape[1] != _GATES[op] * hidden:
        raise NotExpandable(f"W {list(w_shape)} and R {list(r_shape)} do not fit direction '{direction}'")
    if attrs.get("hidden_size", hidden) != hidden:
        raise NotExpandable(f"hidden_size {attrs['hidden_size']} differs from R's {hidden}")
    dtype = state.element_type(x)
    layout = attrs.get("layout", 0)
    if layout:
        x = b.transpose(x, [1, 0, 2])
        h0 = h0 and b.transpose(h0, [1, 0, 2])
        c0 = c0 and b.transpose(c0, [1, 0, 2])
    steps, batch = (x_shape[1], x_shape[0]) if layout else x_shape[:2]
    looped = keeps_loop(steps, state)
    if not looped and not isinstance(steps, int):
        raise NotExpandable("the sequence length is only known at run time and on this target tilec unrolls "
                            "recurrences over a static sequence length only")
    if steps == 0:
        raise NotExpandable("the sequence length is 0")
    cell = _Cell(b, op, attrs, hidden, dtype)
    activations = _activations(op, attrs, dirs)
    lens64 = _lengths(b, state, lens, steps)
    zeros = _zero_state(b, x, batch, hidden, dtype)
    y_parts, h_finals, c_finals = [], [], []
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        weights = cell.direction_weights(w, r, bias, peepholes, d)
        xw = weights.input_projection(x)
        h = b.gather(h0, d, 0) if h0 else zeros
        c = b.gather(c0, d, 0) if c0 else zeros
        if looped:
            h, c, y = _direction_loop(b, state, cell, weights, activations[d], (xw, h, c), lens64, steps, reverse)
            y_parts.append(y)
            h_finals.append(h)
            c_finals.append(c)
            continue
        masks = None if lens64 is None else [
            b.unsqueeze(b.op("Less", [b.const(np.array(t, np.int64), "step"), lens64]), [1]) for t in range(steps)]
        ys: dict[int, str] = {}
        for t in (reversed(range(steps)) if reverse else range(steps)):
            h_new, c_new = cell.step(weights, activations[d], b.gather(xw, t, 0), h, c)
            if masks is None:
                h, c, ys[t] = h_new, c_new, h_new
                continue
            h = b.op("Where", [masks[t], h_new, h])
            c = b.op("Where", [masks[t], c_new, c]) if op == "LSTM" else c
            if y_out:
                ys[t] = b.op("Where", [masks[t], h_new, cell.zero])
        if y_out:
            y_parts.append(b.stack([ys[t] for t in range(steps)], 0))
        h_finals.append(h)
        c_finals.append(c)
    # Y is [T, D, B, H] (layout 0) or [B, T, D, H]; Y_h and Y_c are [D, B, H] or [B, D, H].
    if y_out:
        _emit(b, b.stack(y_parts, 1), [2, 0, 1, 3], layout, y_out)
    if yh_out:
        _emit(b, b.stack(h_finals, 0), [1, 0, 2], layout, yh_out)
    if yc_out and op == "LSTM":
        _emit(b, b.stack(c_finals, 0), [1, 0, 2], layout, yc_out)


def _emit(b: Builder, value: str, batch_first: Sequence[int], layout: int, out: str) -> None:
    if layout:
        b.transpose(value, batch_first, out)
    else:
        b.op("Identity", [value], out)


@dataclass
class _Weights:
    """One direction's weights as the steps use them."""

    b: Builder
    w_t: str  # W^T, [input, gates*hidden]
    r_t: str  # R^T, [hidden, gates*hidden] (GRU: only the z and r columns)
    input_bias: str | None  # every bias that is simply added to X @ W^T
    r_t_h: str | None = None  # GRU: R_h^T
    r_bias_h: str | None = None  # GRU with linear_before_reset: Rb_h, applied inside the reset gate
    peepholes: list[str] | None = None  # LSTM: P_i, P_o, P_f

    def input_projection(self, x: str) -> str:
        xw = self.b.op("MatMul", [x, self.w_t])
        return self.b.op("Add", [xw, self.input_bias]) if self.input_bias else xw


class _Cell:
    """The per-step equations of one op; ``step`` returns the new hidden (and, for LSTM, cell) state."""

    def __init__(self, b: Builder, op: str, attrs: dict[str, Any], hidden: int, dtype: np.dtype) -> None:
        self.b, self.op, self.hidden, self.dtype = b, op, hidden, dtype
        self.clip = attrs.get("clip")
        self.linear_before_reset = bool(attrs.get("linear_before_reset", 0))
        self.input_forget = bool(attrs.get("input_forget", 0))
        self.zero = b.const(np.zeros((), dtype), "zero")
        self.one = b.const(np.ones((), dtype), "one")

    def direction_weights(self, w: str, r: str, bias: str, peepholes: str, d: int) -> _Weights:
        b, size = self.b, _GATES[self.op] * self.hidden
        weights = _Weights(b, b.transpose(b.gather(w, d, 0), [1, 0]), b.transpose(b.gather(r, d, 0), [1, 0]), None)
        if self.op == "GRU":
            weights.r_t_h = b.slice(weights.r_t, 2 * self.hidden, size, 1)
            weights.r_t = b.slice(weights.r_t, 0, 2 * self.hidden, 1)
        if bias:
            bias_d = b.gather(bias, d, 0)
            w_bias, r_bias = b.slice(bias_d, 0, size, 0), b.slice(bias_d, size, 2 * size, 0)
            if self.op == "GRU" and self.linear_before_reset:
                weights.r_bias_h = b.slice(r_bias, 2 * self.hidden, size, 0)
                r_bias = b.concat([b.slice(r_bias, 0, 2 * self.hidden, 0),
                                   b.const(np.zeros(self.hidden, self.dtype), "zeros")], 0)
            weights.input_bias = b.op("Add", [w_bias, r_bias])
        if self.op == "LSTM" and peepholes:
            weights.peepholes = b.split(b.gather(peepholes, d, 0), [self.hidden] * 3, 0)
        return weights

    def step(self, wt: _Weights, acts: list[_Activation], xw: str, h: str, c: str) -> tuple[str, str]:
        b = self.b
        recurrent = b.op("MatMul", [h, wt.r_t])
        if self.op == "RNN":
            return self.act(acts[0], b.op("Add", [xw, recurrent])), c
        if self.op == "GRU":
            x_z, x_r, x_h = b.split(xw, [self.hidden] * 3, 1)
            h_z, h_r = b.split(recurrent, [self.hidden] * 2, 1)
            z = self.act(acts[0], b.op("Add", [x_z, h_z]))
            reset = self.act(acts[0], b.op("Add", [x_r, h_r]))
            if self.linear_before_reset:
                h_lin = b.op("MatMul", [h, wt.r_t_h])
                if wt.r_bias_h:
                    h_lin = b.op("Add", [h_lin, wt.r_bias_h])
                gated = b.op("Mul", [reset, h_lin])
            else:
                gated = b.op("MatMul", [b.op("Mul", [reset, h]), wt.r_t_h])
            candidate = self.act(acts[1], b.op("Add", [x_h, gated]))
            # (1 - z) * candidate + z * h, with one multiplication fewer.
            return b.op("Add", [candidate, b.op("Mul", [z, b.op("Sub", [h, candidate])])]), c
        i, o, f, g = b.split(b.op("Add", [xw, recurrent]), [self.hidden] * 4, 1)
        p_i, p_o, p_f = wt.peepholes or (None, None, None)
        i = self.act(acts[0], self._peep(i, p_i, c))
        f = b.op("Sub", [self.one, i]) if self.input_forget else self.act(acts[0], self._peep(f, p_f, c))
        c_new = b.op("Add", [b.op("Mul", [f, c]), b.op("Mul", [i, self.act(acts[1], g)])])
        o = self.act(acts[0], self._peep(o, p_o, c_new))
        # onnxruntime clips the gates only, not the cell state h() reads (the spec leaves it open).
        return b.op("Mul", [o, self.act(acts[2], c_new, clip=False)]), c_new

    def _peep(self, gate: str, weight: str | None, c: str) -> str:
        return self.b.op("Add", [gate, self.b.op("Mul", [weight, c])]) if weight else gate

    def act(self, f: _Activation, x: str, clip: bool = True) -> str:
        b = self.b
        if self.clip is not None and clip:
            x = b.clip(x, float(self.clip), self.dtype)
        if f.name in _PLAIN_ACTIVATIONS:
            return b.op(_PLAIN_ACTIVATIONS[f.name], [x])
        if f.name == "affine":
            return b.op("Add", [b.op("Mul", [x, self._scalar(f.alpha)]), self._scalar(f.beta)])
        if f.name == "scaledtanh":
            return b.op("Mul", [b.op("Tanh", [b.op("Mul", [x, self._scalar(f.beta)])]), self._scalar(f.alpha)])
        if f.name == "hardsigmoid":
            return b.op("HardSigmoid", [x], alpha=f.alpha, beta=f.beta)
        return b.op({"leakyrelu": "LeakyRelu", "thresholdedrelu": "ThresholdedRelu", "elu": "Elu"}[f.name], [x],
                    alpha=f.alpha)

    def _scalar(self, value: float | None) -> str:
        return self.b.const(np.array(value, self.dtype), "param")


def _activations(op: str, attrs: dict[str, Any], dirs: int) -> list[list[_Activation]]:
    """Each direction's activations (f, g, h), alphas and betas consumed by the ones that take them."""
    per_direction = len(_DEFAULT_ACTIVATIONS[op])
    names = attrs.get("activations") or _DEFAULT_ACTIVATIONS[op] * dirs
    if len(names) != per_direction * dirs:
        raise NotExpandable(f"{len(names)} activations given; {op} with {dirs} direction(s) needs "
                            f"{per_direction * dirs}")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    parsed: list[_Activation] = []
    for name in names:
        if name.lower() not in _ACTIVATION_PARAMS:
            raise NotExpandable(f"unknown activation '{name}'")
        alpha, beta = _ACTIVATION_PARAMS[name.lower()]
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        parsed.append(_Activation(name.lower(), alpha, beta))
    return [parsed[d * per_direction:(d + 1) * per_direction] for d in range(dirs)]


def _direction_loop(b: Builder, state: "FoldedGraph", cell: "_Cell", weights: _Weights, acts: list[_Activation],
                    start: tuple[str, str, str], lens64: str | None, steps: Size,
                    reverse: bool) -> tuple[str, str, str]:
    """One direction as a loop of the run (run_loops.py) over the steps of ``xw`` (``start``: xw, h0, c0):
    its final h and c, and Y ([steps, batch, hidden]), each step's row at its own position."""
    xw, h0, c0 = start
    loop = LoopBuilder(b, state, steps)
    h = loop.carry(h0)
    c = loop.carry(c0) if cell.op == "LSTM" else c0
    loop.begin()
    h_new, c_new = cell.step(weights, acts, loop.scan_slice(xw, 0, reverse), h, c)
    y = h_new
    if lens64 is not None:
        mask = b.unsqueeze(b.op("Less", [loop.iteration(reverse), lens64]), [1])
        h_new, y = b.op("Where", [mask, h_new, h]), b.op("Where", [mask, h_new, cell.zero])
        c_new = b.op("Where", [mask, c_new, c]) if cell.op == "LSTM" else c_new
    finals = [b.fresh("h_final")] + ([b.fresh("c_final")] if cell.op == "LSTM" else [])
    ys = b.fresh("y")
    loop.end([h_new] + ([c_new] if cell.op == "LSTM" else []), [(y, 0, reverse)], finals + [ys])
    return finals[0], finals[1] if cell.op == "LSTM" else c0, ys


def _lengths(b: Builder, state: "FoldedGraph", lens: str, steps: Size) -> str | None:
    """``sequence_lens`` as int64, where some entry may be shorter than the sequence (else None)."""
    if not lens or (lens in state.constants and np.all(state.constants[lens] == steps)):
        return None
    return b.op("Cast", [lens], to=onnx.TensorProto.INT64)


def _zero_state(b: Builder, x: str, batch: Size, hidden: int, dtype: np.dtype) -> str:
    """The [batch, hidden] zeros a state starts from without an initial value (batch may be symbolic)."""
    if isinstance(batch, int):
        return b.const(np.zeros((batch, hidden), dtype), "zeros")
    shape = b.concat([b.slice(b.op("Shape", [x]), 1, 2, 0), b.ints([hidden], "hidden")], 0)
    return b.op("Expand", [b.const(np.zeros((1, hidden), dtype), "zeros"), shape])


def _input_shape(state: "FoldedGraph", x: str) -> list[Size]:
    """X's shape; its sequence and batch dims may be symbolic (a loop of the run steps over them)."""
    shape = state.symbolic_shape(x) if x else None
    if shape is None or len(shape) != 3 or not isinstance(shape[2], int):
        raise NotExpandable(f"the shape of X ('{x}') is not a rank-3 shape with a static input size (yet)")
    return shape


def _shape(state: "FoldedGraph", name: str, label: str) -> tuple[int, ...]:
    shape = state.static_shape(name) if name else None
    if shape is None or len(shape) != 3:
        raise NotExpandable(f"the shape of {label} ('{name}') is not a static rank-3 shape (yet); "
                            "tilec unrolls recurrences over a static sequence length")
    return shape


def _attr(attr: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


EXPANDERS = {"RNN": expand_recurrent, "GRU": expand_recurrent, "LSTM": expand_recurrent}
