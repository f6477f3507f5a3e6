"""Loop IR expressions: side-effect-free trees over loop variables and buffer loads.

Nodes are frozen dataclasses, so two expressions built the same way compare
equal (tests assert structural equality). Index arithmetic is int64. The
constructor helpers (``add``, ``mul``, ``select``, ...) fold constants and
identities, which keeps index expressions small for the printer and lets the
codegen recognise contiguous accesses with ``linear_coefficient``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Union

from compiler.dtypes import DType

Number = Union[int, float, bool]

ARITH_OPS = ("add", "sub", "mul", "div", "rem", "min", "max", "pow", "and", "or", "xor", "shl", "shr", "atan2")
COMPARE_OPS = ("lt", "le", "gt", "ge", "eq", "ne")
# Math functions the codegens know; each maps a float (or int, for abs/neg/not) to the same type.
CALL_FUNCS = (
    "neg", "not", "abs", "exp", "log", "sqrt", "tanh", "erf", "sin", "cos", "tan", "asin", "acos", "atan",
    "sinh", "cosh", "asinh", "acosh", "atanh", "floor", "ceil", "round", "trunc", "sign", "isnan", "isinf_pos",
    "isinf_neg", "fma",
)


@dataclass(frozen=True)
class Expr:
    """Base of all expressions; ``dtype`` is the result type."""

    @property
    def dtype(self) -> DType:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    # Operator sugar so lowerings read like the math they describe.
    def __add__(self, other: "Expr | Number") -> "Expr":
        return add(self, as_expr(other, self.dtype))

    def __radd__(self, other: Number) -> "Expr":
        return add(as_expr(other, self.dtype), self)

    def __sub__(self, other: "Expr | Number") -> "Expr":
        return sub(self, as_expr(other, self.dtype))

    def __rsub__(self, other: Number) -> "Expr":
        return sub(as_expr(other, self.dtype), self)

    def __mul__(self, other: "Expr | Number") -> "Expr":
        return mul(self, as_expr(other, self.dtype))

    def __rmul__(self, other: Number) -> "Expr":
        return mul(as_expr(other, self.dtype), self)

    def __truediv__(self, other: "Expr | Number") -> "Expr":
        return div(self, as_expr(other, self.dtype))

    def __rtruediv__(self, other: Number) -> "Expr":
        return div(as_expr(other, self.dtype), self)

    def __floordiv__(self, other: "Expr | Number") -> "Expr":
        return div(self, as_expr(other, self.dtype))

    def __mod__(self, other: "Expr | Number") -> "Expr":
        return binary("rem", self, as_expr(other, self.dtype))

    def __neg__(self) -> "Expr":
        return call("neg", self)


@dataclass(frozen=True)
class Const(Expr):
    value: Number
    type: DType = DType.I64

    @property
    def dtype(self) -> DType:
        return self.type


@dataclass(frozen=True)
class Var(Expr):
    """A loop variable (int64) or another named scalar bound by an enclosing statement."""

    name: str
    type: DType = DType.I64

    @property
    def dtype(self) -> DType:
        return self.type


@dataclass(frozen=True)
class Buffer:
    """A dense, row-major array. ``scope`` is ``global`` (a kernel parameter) or ``local``.

    A global buffer's dims may be symbolic (int64 expressions over ``sizes.SizeVar`` s); a local
    one's are ints (it is a register tile or a stack array)."""

    name: str
    dtype: DType
    shape: "tuple[int | Expr, ...]"
    scope: str = "global"

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> "int | Expr":
        if self.is_static:
            return math.prod(self.shape)
        total: Expr = Const(1)
        for d in self.shape:
            total = mul(total, d if isinstance(d, Expr) else Const(d))
        return total

    @property
    def strides(self) -> "tuple[int | Expr, ...]":
        if self.is_static:
            strides, acc = [], 1
            for dim in reversed(self.shape):
                strides.append(acc)
                acc *= dim
            return tuple(reversed(strides))
        out: list[Expr] = []
        step: Expr = Const(1)
        for dim in reversed(self.shape):
            out.append(step)
            step = mul(step, dim if isinstance(dim, Expr) else Const(dim))
        return tuple(s.value if isinstance(s, Const) else s for s in reversed(out))

    def __getitem__(self, indices: "Expr | int | tuple[Expr | int, ...]") -> "Load":
        if not isinstance(indices, tuple):
            indices = (indices,)
        return Load(self, tuple(as_expr(i) for i in indices))


@dataclass(frozen=True)
class Load(Expr):
    buffer: Buffer
    indices: tuple[Expr, ...]

    @property
    def dtype(self) -> DType:
        return self.buffer.dtype


@dataclass(frozen=True)
class Binary(Expr):
    op: str
    a: Expr
    b: Expr

    @property
    def dtype(self) -> DType:
        return DType.BOOL if self.op in COMPARE_OPS else self.a.dtype


@dataclass(frozen=True)
class Call(Expr):
    """A math function or intrinsic (see CALL_FUNCS); result type is ``type``."""

    func: str
    args: tuple[Expr, ...]
    type: DType

    @property
    def dtype(self) -> DType:
        return self.type


@dataclass(frozen=True)
class Select(Expr):
    cond: Expr
    true_value: Expr
    false_value: Expr

    @property
    def dtype(self) -> DType:
        return self.true_value.dtype


@dataclass(frozen=True)
class Cast(Expr):
    """Conversion to ``type``. ``saturate`` and ``round_mode`` are ONNX Cast's attributes: the first
    applies to float8 results (out of range: clamp to the largest finite value, or inf/NaN), the
    second only to float8e8m0 results (``up`` / ``down`` / ``nearest``); others round to nearest even."""

    value: Expr
    type: DType
    saturate: bool = True
    round_mode: str = "up"

    @property
    def dtype(self) -> DType:
        return self.type


@dataclass(frozen=True)
class PackWord(Expr):
    """Four 8-bit or two 16-bit values as one int32 word, ``parts[k]`` in bits ``w k .. w k + w - 1``
    (``w`` = 32 / len(parts), little-endian order): the operand layout of the word dot products below.
    Consecutive elements of one buffer become one 32-bit load."""

    parts: tuple[Expr, ...]

    @property
    def dtype(self) -> DType:
        return DType.I32

    @property
    def part_bits(self) -> int:
        return 32 // len(self.parts)


#: The element type of each word dot product's operands: ``u8s8`` multiplies bytes of ``a`` read as
#: uint8 by bytes of ``b`` read as int8, ``s8s8`` both read as int8; ``bf16`` multiplies the two
#: bfloat16 halves of both.
WORD_DOT_PARTS = {"u8s8": 4, "s8s8": 4, "bf16": 2}


@dataclass(frozen=True)
class WordDot(Expr):
    """``sum_k part k of a * part k of b`` over the parts of int32 words ``a`` and ``b`` (see
    ``WORD_DOT_PARTS``). ``u8s8``: exact in int32, one lane of x86's ``vpdpbusd`` (VNNI) or aarch64's
    ``usdot`` (I8MM); ``s8s8``: one lane of aarch64's ``sdot`` (dot product extension). ``bf16``: the
    products exact in float32, summed in float32, one lane of x86's ``vdpbf16ps`` (AVX512-BF16).
    Elsewhere the parts are widened, multiplied and added. Contractions are rewritten into it
    (``compiler.schedule.contraction.dot_product_form``)."""

    a: Expr
    b: Expr
    form: str = "u8s8"

    @property
    def dtype(self) -> DType:
        return DType.F32 if self.form == "bf16" else DType.I32

    @property
    def parts(self) -> int:
        return WORD_DOT_PARTS[self.form]


# --- constructors with folding ------------------------------------------------------


def as_expr(x: "Expr | Number", dtype: DType = DType.I64) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, bool) and dtype is DType.I64:
        return Const(x, DType.BOOL)
    return const(x, dtype)


def const(value: Number, dtype: DType) -> Const:
    if dtype is DType.BOOL:
        return Const(bool(value), dtype)
    if dtype.is_float:
        return Const(float(value), dtype)
    return Const(int(value), dtype)


def _is_const(e: Expr, value: Number | None = None) -> bool:
    return isinstance(e, Const) and (value is None or e.value == value)


def binary(op: str, a: Expr, b: Expr) -> Expr:
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: operand types differ ({a.dtype.value} vs {b.dtype.value})")
    if isinstance(a, Const) and isinstance(b, Const) and a.dtype is DType.I64 and op in _FOLD_INT:
        return Const(_FOLD_INT[op](a.value, b.value), DType.I64)
    if op == "pow" and a.dtype in (DType.F32, DType.F64) and isinstance(b, Const) and b.value in (2.0, 3.0, 4.0):
        # A vectorized llvm.pow is one libm call per lane unless fast-math allows the expansion, and
        # exporters write x**3 (tanh-Gelu), x**2 (norms) as Pow: products are within 2 ulp, as
        # onnxruntime's squared and cubed fast paths are.
        square = Binary("mul", a, a)
        return {2.0: square, 3.0: Binary("mul", square, a), 4.0: Binary("mul", square, square)}[b.value]
    return Binary(op, a, b)


_FOLD_INT: dict[str, Callable[[int, int], int]] = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "min": min,
    "max": max,
}


def add(a: Expr, b: Expr) -> Expr:
    if a.dtype.is_int:
        if _is_const(b, 0):
            return a
        if _is_const(a, 0):
            return b
        # Gather constants to the right so (x + 1) + 2 becomes x + 3.
        if isinstance(b, Const) and isinstance(a, Binary) and a.op == "add" and isinstance(a.b, Const):
            return add(a.a, Const(a.b.value + b.value, a.dtype))
    return binary("add", a, b)


def sub(a: Expr, b: Expr) -> Expr:
    if a.dtype.is_int and _is_const(b, 0):
        return a
    if a.dtype.is_int and isinstance(b, Const):
        return add(a, Const(-b.value, b.dtype))
    return binary("sub", a, b)


def mul(a: Expr, b: Expr) -> Expr:
    if a.dtype.is_int:
        if _is_const(a, 0) or _is_const(b, 0):
            return Const(0, a.dtype)
        if _is_const(b, 1):
            return a
        if _is_const(a, 1):
            return b
    return binary("mul", a, b)


def div(a: Expr, b: Expr) -> Expr:
    if a.dtype.is_int and _is_const(b, 1):
        return a
    if a.dtype.is_int and isinstance(a, Const) and isinstance(b, Const) and a.value >= 0 and b.value > 0:
        return Const(a.value // b.value, a.dtype)
    return binary("div", a, b)


def min_(a: Expr, b: "Expr | Number") -> Expr:
    return binary("min", a, as_expr(b, a.dtype))


def max_(a: Expr, b: "Expr | Number") -> Expr:
    return binary("max", a, as_expr(b, a.dtype))


def compare(op: str, a: Expr, b: "Expr | Number") -> Expr:
    assert op in COMPARE_OPS, op
    return binary(op, a, as_expr(b, a.dtype))


def logical_and(a: Expr, b: Expr) -> Expr:
    if _is_const(a, True):
        return b
    if _is_const(b, True):
        return a
    return binary("and", a, b)


def select(cond: Expr, t: Expr, f: Expr) -> Expr:
    if _is_const(cond, True):
        return t
    if _is_const(cond, False):
        return f
    return Select(cond, t, f)


def call(func: str, *args: Expr, dtype: DType | None = None) -> Expr:
    assert func in CALL_FUNCS, func
    return Call(func, tuple(args), dtype or args[0].dtype)


def cast(value: Expr, dtype: DType, saturate: bool = True, round_mode: str = "up") -> Expr:
    if value.dtype is dtype:
        return value
    if isinstance(value, Cast) and value.value.dtype is dtype and _round_trips(value.value, value.type):
        return value.value  # a quantized value and back (requantize, then dequantize): nothing changes
    if isinstance(value, Const) and not dtype.is_float and not value.dtype.is_float:
        return Const(int(value.value), dtype) if dtype is not DType.BOOL else Const(bool(value.value), dtype)
    # Attributes that cannot change this conversion take their defaults, so equal casts compare equal.
    saturate = saturate or dtype.format is None
    round_mode = round_mode if dtype is DType.F8E8M0 else "up"
    return Cast(value, dtype, saturate, round_mode)


_EXACT_INTEGER_BITS = {DType.F64: 53, DType.F32: 24, DType.F16: 11, DType.BF16: 8}


def _round_trips(e: Expr, narrow: DType) -> bool:
    """Whether float ``e`` converts to integer type ``narrow`` and back unchanged: it is clamped into
    ``narrow``'s range (``min(max(integral, lo), hi)``) and its float type holds every such integer."""
    if not narrow.is_int or narrow is DType.BOOL or narrow.bits >= _EXACT_INTEGER_BITS.get(e.dtype, 0):
        return False
    lo, hi = (-(1 << (narrow.bits - 1)), (1 << (narrow.bits - 1)) - 1) if narrow.is_signed else (0, (1 << narrow.bits) - 1)
    if not (isinstance(e, Binary) and e.op == "min" and isinstance(e.b, Const) and e.b.value <= hi):
        return False
    inner = e.a
    return isinstance(inner, Binary) and inner.op == "max" and isinstance(inner.b, Const) and inner.b.value >= lo \
        and _integral(inner.a)


def _integral(e: Expr) -> bool:
    """Whether float ``e`` is always an integer (or NaN-free rounding of one): round/floor/ceil/trunc results,
    integer constants and conversions from integers, and sums, differences and products of those."""
    if isinstance(e, Call):
        return e.func in ("round", "floor", "ceil", "trunc")
    if isinstance(e, Const):
        return float(e.value).is_integer()
    if isinstance(e, Cast):
        return not e.value.dtype.is_float
    if isinstance(e, Binary):
        return e.op in ("add", "sub", "mul") and _integral(e.a) and _integral(e.b)
    return False


# --- traversal ----------------------------------------------------------------------


def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Load):
        return e.indices
    if isinstance(e, Binary):
        return (e.a, e.b)
    if isinstance(e, Call):
        return e.args
    if isinstance(e, Select):
        return (e.cond, e.true_value, e.false_value)
    if isinstance(e, Cast):
        return (e.value,)
    if isinstance(e, PackWord):
        return e.parts
    if isinstance(e, WordDot):
        return (e.a, e.b)
    return ()


def walk(e: Expr) -> Iterator[Expr]:
    yield e
    for c in children(e):
        yield from walk(c)


def rebuild(e: Expr, kids: tuple[Expr, ...]) -> Expr:
    """``e`` with its children replaced, re-running the folding constructors."""
    if isinstance(e, Load):
        return Load(e.buffer, kids)
    if isinstance(e, Binary):
        folding = {"add": add, "sub": sub, "mul": mul, "div": div}.get(e.op)
        return folding(*kids) if folding else binary(e.op, *kids)
    if isinstance(e, Call):
        return Call(e.func, kids, e.type)
    if isinstance(e, Select):
        return select(*kids)
    if isinstance(e, Cast):
        return cast(kids[0], e.type, e.saturate, e.round_mode)
    if isinstance(e, PackWord):
        return PackWord(kids)
    if isinstance(e, WordDot):
        return WordDot(*kids, form=e.form)
    return e


def substitute(e: Expr, mapping: dict[Var, Expr]) -> Expr:
    """Replace variables (by equality) with expressions, folding as it goes."""
    if not mapping:
        return e
    if isinstance(e, Var):
        return mapping.get(e, e)
    kids = children(e)
    if not kids:
        return e
    new = tuple(substitute(c, mapping) for c in kids)
    return e if new == kids else rebuild(e, new)


def map_loads(e: Expr, fn: Callable[[Load], Expr | None]) -> Expr:
    """Rewrite every load: ``fn`` sees it (indices already rewritten) and returns a replacement or None."""
    if isinstance(e, Load):
        load = Load(e.buffer, tuple(map_loads(i, fn) for i in e.indices))
        out = fn(load)
        return load if out is None else out
    kids = children(e)
    if not kids:
        return e
    new = tuple(map_loads(k, fn) for k in kids)
    return e if new == kids else rebuild(e, new)


def free_vars(e: Expr) -> set[Var]:
    return {x for x in walk(e) if isinstance(x, Var)}


def linear_coefficient(e: Expr, v: Var) -> int | None:
    """The constant c with ``e = c*v + (terms free of v)``, or None if ``e`` is not affine in ``v``."""
    if e == v:
        return 1
    if v not in free_vars(e):
        return 0
    if isinstance(e, Binary) and e.op in ("add", "sub"):
        ca, cb = linear_coefficient(e.a, v), linear_coefficient(e.b, v)
        if ca is None or cb is None:
            return None
        return ca + cb if e.op == "add" else ca - cb
    if isinstance(e, Binary) and e.op == "mul":
        if isinstance(e.a, Const):
            c = linear_coefficient(e.b, v)
            return None if c is None else c * int(e.a.value)
        if isinstance(e.b, Const):
            c = linear_coefficient(e.a, v)
            return None if c is None else c * int(e.b.value)
    if isinstance(e, Cast) and e.dtype is DType.I64:
        return linear_coefficient(e.value, v)
    return None


def flat_index(buffer: Buffer, indices: tuple[Expr, ...]) -> Expr:
    """Row-major element offset of ``buffer[indices]``."""
    offset: Expr = Const(0)
    for index, stride in zip(indices, buffer.strides):
        offset = add(offset, mul(index, stride if isinstance(stride, Expr) else Const(stride)))
    return offset
