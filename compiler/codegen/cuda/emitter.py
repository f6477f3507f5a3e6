"""Loop IR → CUDA C, one ``__global__`` function per top-level loop nest.

Contract: ``emit_module(calls, target)`` returns a ``CudaModule``: the source of
one self-contained translation unit (prelude + kernels, rendered from
``codegen_templates/cuda``) and one ``Launch`` per kernel launch, in run order.

The loop IR comes from the same frontend, passes, lowerings and driver as the
CPU path, scheduled by the CUDA target's schedule (``schedule.py``). Each
top-level statement of a kernel body is one launch, mapped to blocks and
threads as ``schedule.map_threads`` says: a flat nest is spread over the grid
with a grid-stride loop (at most ``MAX_GRID`` blocks of ``BLOCK_SIZE``
threads), a blocked nest (``block for`` / ``thread for`` loops) gets one block
per ``block for`` iteration. Inside a thread:

- parallel / serial / vectorized loops: ``for`` loops (vectorized lanes are serial here);
- unrolled: a ``for`` loop under ``#pragma unroll``;
- ``Alloc`` (a local accumulator tile): a per-thread local array; a ``shared``
  one (blocked nests): a ``__shared__`` array of the block; a ``fragment`` one:
  an array of the warp's tensor-core accumulator fragments;
- ``If``: ``if``; ``Barrier``: ``__syncthreads()``;
- the warp-level statements of ``tensor_cores.py`` (``tl_wmma`` calls; the
  module then includes ``wmma.cuh.j2``) and ``row_reduce.py`` (a shuffle
  loop), from ``warp_ops.cu.j2``.

Index math is 32-bit (``int`` loop variables) in a kernel whose buffers,
threads and grid all stay below 2^31 (``INDEX32_LIMIT``): GPUs do 64-bit
integer arithmetic in several instructions. There, an index expression (an
address, an operand of a comparison) whose value and every partial value
provably fit in int32, given its loop variables' extents, is emitted in
``int``; any other int64 expression (one reading memory, or values such as
Range's ``start + i * delta``) stays 64-bit, with the loop variables widened.
Other kernels keep ``long long`` throughout.

Values are computed in their C type (float16 / bfloat16 in float, float16
results rounded to float16 after every operation, as the CPU path's half
arithmetic); memory types follow the artifact's layout (bool as one byte,
float16 / bfloat16 as 16-bit patterns), converted at loads and stores; so do
shared tiles that tensor cores read (tensor-core operands are 16-bit in memory).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import jinja2
import numpy as np

from codegen_templates import TEMPLATES
from compiler import __version__
from compiler.codegen.cuda.schedule import ThreadMapping, map_threads
from compiler.codegen.cuda.target import CudaTarget
from compiler.codegen.cuda.row_reduce import WarpReduce
from compiler.codegen.cuda.tensor_cores import FragmentFill, FragmentStore, WarpMma
from compiler.codegen.llvm.module import BufferRef, KernelCall
from compiler.dtypes import DType
from compiler.errors import UnsupportedOpError
from compiler.loopir.expr import Binary, Buffer, Call, Cast, Const, Expr, Load, Select, Var, flat_index
from compiler.loopir.stmt import (Alloc, Barrier, For, ForKind, If, Kernel, Prefetch, Seq, Stmt, Store, loads_and_stores,
                                  walk_stmts)

TEMPLATE_DIR = TEMPLATES / "cuda"

_VALUE_TYPES = {
    DType.BOOL: "bool", DType.I8: "signed char", DType.I16: "short", DType.I32: "int", DType.I64: "tl_i64",
    DType.U8: "unsigned char", DType.U16: "unsigned short", DType.U32: "unsigned int", DType.U64: "tl_u64",
    DType.F16: "float", DType.BF16: "float", DType.F32: "float", DType.F64: "double",
    # Sub-byte codes (weights of a weight-only quantized product): read from their bytes, never stored.
    DType.U4: "unsigned char", DType.U2: "unsigned char",
}
_MEMORY_TYPES = {**_VALUE_TYPES, DType.BOOL: "unsigned char", DType.F16: "unsigned short",
                 DType.BF16: "unsigned short"}
# Call functions spelled tl_<name>(x) by the prelude (float and double overloads; ints where noted).
_UNARY_MATH = [("exp", "exp"), ("log", "log"), ("sqrt", "sqrt"), ("tanh", "tanh"), ("erf", "erf"), ("sin", "sin"),
               ("cos", "cos"), ("tan", "tan"), ("asin", "asin"), ("acos", "acos"), ("atan", "atan"),
               ("sinh", "sinh"), ("cosh", "cosh"), ("asinh", "asinh"), ("acosh", "acosh"), ("atanh", "atanh"),
               ("floor", "floor"), ("ceil", "ceil"), ("round", "rint"), ("trunc", "trunc"), ("abs", "fabs")]
_BINARY_MATH = [("pow", "pow"), ("atan2", "atan2"), ("fmod", "fmod")]
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "rem": "%", "and": "&", "or": "|", "xor": "^",
          "shl": "<<", "shr": ">>"}
_COMPARE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}

BLOCK_SIZE = 256
# Flat launches: more blocks than this share the work through the grid-stride loop
# (a few waves of a large GPU; enough to hide latency, few enough to amortise index math).
MAX_GRID = 8192
INDEX32_LIMIT = 2**31


def value_type(d: DType) -> str:
    return _VALUE_TYPES[_supported(d)]


def memory_type(d: DType) -> str:
    return _MEMORY_TYPES[_supported(d)]


def _supported(d: DType) -> DType:
    if d not in _VALUE_TYPES:
        raise UnsupportedOpError(f"the CUDA backend does not support element type {d.value} yet "
                                 "(the CPU backend does)")
    return d


@dataclass(frozen=True)
class Launch:
    """One kernel launch of the plan: ``name<<<grid, block, shared_mem>>>(args...)``."""

    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    args: tuple[BufferRef, ...]
    total: int  # flat: threads' worth of work (grid-stride); blocked: grid * block
    kernel: str  # the loop IR kernel it comes from
    # Threads of a block meet at __syncthreads (blocked launches): they must run concurrently.
    # Not in the manifest: a GPU runs every launch that way.
    cooperative: bool = False

    def to_json(self) -> dict:
        return {"name": self.name, "grid": list(self.grid), "block": list(self.block),
                "shared_mem": self.shared_mem, "kernel": self.kernel, "threads": self.total,
                "args": [{"kind": a.kind, "index": a.index, "offset": a.offset} for a in self.args]}


@dataclass
class CudaModule:
    source: str
    launches: list[Launch] = field(default_factory=list)


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render_prelude() -> str:
    return _environment().get_template("prelude.cuh.j2").render(**_prelude_context())


def _prelude_context() -> dict:
    return {"float_types": [("float", "f"), ("double", "")], "unary_math": _UNARY_MATH, "binary_math": _BINARY_MATH,
            # wmma.cuh.j2: tensor-core operand precisions and the 32-bit registers of one m16n16k16 A / B fragment
            "precisions": [("f16", 8), ("bf16", 4)]}


def emit_module(calls: list[KernelCall], target: CudaTarget) -> CudaModule:
    kernels, launches, used = [], [], set()
    tensor_cores = False
    for call in calls:
        for j, mapping in enumerate(map_threads(call.kernel.body)):
            if mapping.empty:
                continue
            name = _unique(f"{call.kernel.name}_{j}", used)
            info, launch = _emit_nest(call, mapping, name)
            kernels.append(info)
            launches.append(launch)
            tensor_cores = tensor_cores or bool(_tensor_core_tiles(mapping.body))
    source = _environment().get_template("module.cu.j2").render(
        version=__version__, arch=target.arch, kernels=kernels, tensor_cores=tensor_cores, **_prelude_context())
    return CudaModule(source, launches)


def _unique(name: str, used: set[str]) -> str:
    base, k = name, 1
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def _emit_nest(call: KernelCall, mapping: ThreadMapping, name: str) -> tuple[dict, Launch]:
    kernel = call.kernel
    accessed: dict[str, bool] = {}
    for buffer, is_store in loads_and_stores(mapping.body):
        if buffer.scope == "global":
            accessed[buffer.name] = accessed.get(buffer.name, False) or is_store
    params, args = [], []
    for buffer, ref in zip(kernel.params, call.args):
        if buffer.name in accessed:
            const = "" if accessed[buffer.name] else "const "
            params.append(f"{const}{memory_type(buffer.dtype)}* __restrict__ {_global_name(buffer)}")
            args.append(ref)
    loops = " x ".join(f"{f.var.name}:{f.extent}" for f in mapping.threads) or "one thread"
    if mapping.blocked:
        block, grid, total = mapping.total, mapping.grid, mapping.total * mapping.grid
        span = total  # the largest thread / block index + 1
        blocks = " x ".join(f"{f.var.name}:{f.extent}" for f in mapping.blocks)
        comment = f"blocks over {blocks}; threads of a block over {loops}"
    else:
        total = mapping.total
        block = min(BLOCK_SIZE, -(-total // 32) * 32)
        grid = min(-(-total // block), MAX_GRID)
        span = total + grid * block  # the grid-stride loop's last increment
        comment = f"threads over {loops}"
    buffers = [b for b in kernel.params if b.name in accessed] + list(mapping.shared)
    index32 = span < INDEX32_LIMIT and all(b.numel < INDEX32_LIMIT for b in buffers)
    packed = _tensor_core_tiles(mapping.body)
    em = StmtEmitter(packed, index32, {f.var: f.extent for f in (*mapping.blocks, *mapping.threads)})
    em.stmt(mapping.body, 0)
    if mapping.blocked:
        index_lines = em.decode("tl_block", mapping.blocks) + em.decode("tl_thread", mapping.threads)
    else:
        index_lines = em.decode("tl_idx", mapping.threads)
    # 32-byte alignment: where tensor cores load or store fragments, wmma needs it.
    shared_lines = [f"alignas(32) __shared__ {(memory_type if b.name in packed else value_type)(b.dtype)} "
                    f"{_shared_name(b)}[{b.numel}];" for b in mapping.shared]
    info = {"name": name, "params": params, "blocked": mapping.blocked, "body_lines": em.lines,
            "shared_lines": shared_lines, "block": block, "total": total, "index_lines": index_lines,
            "index_type": em.index_type, "suffix": em.suffix, "comment": f"{kernel.name} ({kernel.label}); {comment}"}
    return info, Launch(name, (grid, 1, 1), (block, 1, 1), 0, tuple(args), total, kernel.name,
                        mapping.synchronises)


def _tensor_core_tiles(body: Stmt) -> frozenset[str]:
    """Shared tiles read by tensor cores: they hold memory types (16-bit patterns), not value types."""
    return frozenset(b.name for s in walk_stmts(body) if isinstance(s, WarpMma) for b in (s.a_tile, s.b_tile))


def _int_range(e: Expr, extents: dict[Var, int]) -> tuple[int, int] | None:
    """Bounds of the int64 index expression ``e`` over its loop variables' ranges, or None where they are
    unknown (it reads memory, casts, divides by a variable...) or ``e`` or a partial value may leave int32."""
    if e.dtype is not DType.I64:
        return None
    if isinstance(e, Const):
        lo = hi = int(e.value)
    elif isinstance(e, Var):
        if e not in extents:
            return None
        lo, hi = 0, max(extents[e] - 1, 0)
    elif isinstance(e, Select):
        t, f = _int_range(e.true_value, extents), _int_range(e.false_value, extents)
        if t is None or f is None:
            return None
        lo, hi = min(t[0], f[0]), max(t[1], f[1])
    elif isinstance(e, Binary):
        a, b = _int_range(e.a, extents), _int_range(e.b, extents)
        if a is None or b is None:
            return None
        constant_divisor = b[0] == b[1] and b[0] > 0
        if e.op == "add":
            lo, hi = a[0] + b[0], a[1] + b[1]
        elif e.op == "sub":
            lo, hi = a[0] - b[1], a[1] - b[0]
        elif e.op == "mul":
            products = [x * y for x in a for y in b]
            lo, hi = min(products), max(products)
        elif e.op == "div" and constant_divisor:  # C truncates: monotonic in the dividend
            lo, hi = _truncated_div(a[0], b[0]), _truncated_div(a[1], b[0])
        elif e.op == "rem" and constant_divisor:
            lo, hi = (0, min(a[1], b[0] - 1)) if a[0] >= 0 else (-(b[0] - 1), b[0] - 1)
        elif e.op in ("min", "max"):
            pick = min if e.op == "min" else max
            lo, hi = pick(a[0], b[0]), pick(a[1], b[1])
        else:
            return None
    else:
        return None
    return (lo, hi) if -INDEX32_LIMIT <= lo and hi < INDEX32_LIMIT else None


def _truncated_div(a: int, b: int) -> int:
    return -(-a // b) if a < 0 else a // b


def _var_name(v: Var) -> str:
    return f"v_{v.name}"


def _global_name(b: Buffer) -> str:
    return f"g_{b.name}"


def _local_name(b: Buffer) -> str:
    return f"l_{b.name}"


def _shared_name(b: Buffer) -> str:
    return f"s_{b.name}"


def _name(b: Buffer) -> str:
    return {"local": _local_name, "shared": _shared_name}.get(b.scope, _global_name)(b)


class StmtEmitter:
    """Statements and expressions → lines of C (mirrors the LLVM FunctionEmitter's walk)."""

    def __init__(self, packed: frozenset[str] = frozenset(), index32: bool = False,
                 extents: dict[Var, int] | None = None) -> None:
        self.lines: list[str] = []
        self.packed = packed  # non-global buffers stored in memory types
        self.index32 = index32  # loop variables are int; fitting index expressions are int math
        self.index_type, self.suffix = ("int", "") if index32 else ("tl_i64", "LL")
        self.extents = dict(extents or {})  # loop variables in scope
        self.narrow = False  # emitting an int64 expression known to fit int32, in int

    def decode(self, source: str, loops: tuple[For, ...]) -> list[str]:
        """Lines binding the variables of ``loops`` (row-major, innermost fastest) from the flat index ``source``."""
        if not loops:
            return []
        rest = f"{source}_rest"
        lines = [f"{self.index_type} {rest} = {source};"]
        for k, loop in reversed(list(enumerate(loops))):
            var = _var_name(loop.var)
            if k == 0:
                lines.append(f"const {self.index_type} {var} = {rest};")
            else:
                lines.append(f"const {self.index_type} {var} = {rest} % {loop.extent}{self.suffix};")
                lines.append(f"{rest} /= {loop.extent}{self.suffix};")
        return lines

    def index(self, e: Expr) -> str:
        """``e`` where only its value matters (an address, a comparison operand): in int where it fits."""
        if not self.index32:
            return self.expr(e)
        saved, self.narrow = self.narrow, _int_range(e, self.extents) is not None
        try:
            return self.expr(e)
        finally:
            self.narrow = saved

    def nested(self) -> "StmtEmitter":
        """An emitter for statements spliced into a template, in this one's scope."""
        return StmtEmitter(self.packed, self.index32, self.extents)

    def lines_of(self, depth: int, text: str) -> None:
        for row in text.splitlines():
            self.line(depth, row)

    def warp_op(self, macro: str, **kwargs) -> str:
        return str(getattr(_environment().get_template("warp_ops.cu.j2").module, macro)(**kwargs))

    def line(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text)

    # --- statements -----------------------------------------------------------------

    def stmt(self, s: Stmt, depth: int) -> None:
        if isinstance(s, Seq):
            for child in s.stmts:
                self.stmt(child, depth)
        elif isinstance(s, Store):
            self.store(s, depth)
        elif isinstance(s, Prefetch):
            pass  # a CPU cache hint: GPU schedules stage their operands through shared memory instead
        elif isinstance(s, Alloc) and s.buffer.scope == "fragment":
            self.line(depth, "{")
            self.line(depth + 1, self.warp_op("declare", acc=_local_name(s.buffer), count=s.buffer.numel))
            self.stmt(s.body, depth + 1)
            self.line(depth, "}")
        elif isinstance(s, Alloc):
            if s.buffer.scope != "local":
                raise ValueError(f"{s.buffer.name}: only local buffers can be allocated inside a thread")
            # A block of its own: a schedule may allocate the same accumulator again (a tail tile).
            self.line(depth, "{")
            self.line(depth + 1, f"{value_type(s.buffer.dtype)} {_local_name(s.buffer)}[{max(1, s.buffer.numel)}];")
            self.stmt(s.body, depth + 1)
            self.line(depth, "}")
        elif isinstance(s, For):
            self.loop(s, depth)
        elif isinstance(s, If):
            self.line(depth, f"if ({self.expr(s.cond)}) {{")
            self.stmt(s.body, depth + 1)
            self.line(depth, "}")
        elif isinstance(s, Barrier):
            self.line(depth, "__syncthreads();")
        elif isinstance(s, FragmentFill):
            self.lines_of(depth, self.warp_op("fill", acc=_local_name(s.acc), count=s.acc.numel,
                                           value=constant(Const(s.value, DType.F32))))
        elif isinstance(s, WarpMma):
            fm, fn = s.acc.shape
            precision = {DType.F16: "f16", DType.BF16: "bf16"}[s.a_tile.dtype]
            self.lines_of(depth, self.warp_op("mma", acc=_local_name(s.acc), fm=fm, fn=fn, precision=precision,
                                           a=_name(s.a_tile), lda=s.a_tile.shape[1], row=self.index(s.row),
                                           b=_name(s.b_tile), ldb=s.b_tile.shape[1], col=self.index(s.col),
                                           bk=s.a_tile.shape[0]))
        elif isinstance(s, WarpReduce):
            update = self.nested()
            update.stmt(s.update, 0)
            self.lines_of(depth, self.warp_op("warp_reduce", acc=_local_name(s.acc), other=_local_name(s.other),
                                              update_lines=update.lines))
        elif isinstance(s, FragmentStore):
            fm, fn = s.acc.shape
            self.lines_of(depth, self.warp_op("store", acc=_local_name(s.acc), fm=fm, fn=fn, out=_name(s.out),
                                           ldc=s.out.shape[1], row=self.index(s.row), col=self.index(s.col)))
        else:
            raise TypeError(f"cannot emit {type(s).__name__}")

    def loop(self, s: For, depth: int) -> None:
        if s.extent == 0:
            return
        if s.kind in (ForKind.GPU_BLOCK, ForKind.GPU_THREAD):
            raise ValueError(f"loop {s.var.name}: block / thread loops must enclose the whole nest")
        if s.kind is ForKind.UNROLLED:
            self.line(depth, "#pragma unroll")
        v = _var_name(s.var)
        self.extents[s.var] = s.extent
        self.line(depth, f"for ({self.index_type} {v} = 0; {v} < {s.extent}{self.suffix}; ++{v}) {{")
        self.stmt(s.body, depth + 1)
        self.line(depth, "}")

    def store(self, s: Store, depth: int) -> None:
        if s.buffer.dtype.elements_per_byte > 1 and s.buffer.scope == "global":
            raise UnsupportedOpError(f"the CUDA backend does not store {s.buffer.dtype.value} tensors yet "
                                     "(the CPU backend does)")
        value = self.expr(s.value)
        self.line(depth, f"{self.address(s.buffer, s.indices)} = {self.to_memory(value, s.buffer)};")

    # --- memory ---------------------------------------------------------------------

    def address(self, buffer: Buffer, indices: tuple[Expr, ...]) -> str:
        return f"{_name(buffer)}[{self.index(flat_index(buffer, indices))}]"

    def to_memory(self, value: str, buffer: Buffer) -> str:
        if buffer.scope != "global" and buffer.name not in self.packed:  # local and shared arrays hold value types
            return value
        d = buffer.dtype
        if d is DType.BOOL:
            return f"(unsigned char)({value})"
        if d is DType.F16:
            return f"tl_f2h({value})"
        if d is DType.BF16:
            return f"tl_f2bf({value})"
        return value

    def load(self, e: Load) -> str:
        d = e.buffer.dtype
        if d.elements_per_byte > 1 and e.buffer.scope == "global":
            return self._load_code(e)
        text = self.address(e.buffer, e.indices)
        if e.buffer.scope != "global" and e.buffer.name not in self.packed:
            return text
        if d is DType.BOOL:
            return f"({text} != 0)"
        if d is DType.F16:
            return f"tl_h2f({text})"
        if d is DType.BF16:
            return f"tl_bf2f({text})"
        return text

    def _load_code(self, e: Load) -> str:
        """An unsigned sub-byte element: its bits of byte ``flat / per`` (low bits first)."""
        d = e.buffer.dtype
        flat = self.index(flat_index(e.buffer, e.indices))
        per = d.elements_per_byte
        field = f"({_name(e.buffer)}[({flat}) >> {per.bit_length() - 1}] >> ((({flat}) & {per - 1}) * {d.bits}))"
        return f"((unsigned char)({field} & {(1 << d.bits) - 1}))"

    # --- expressions ----------------------------------------------------------------

    def expr(self, e: Expr) -> str:
        if isinstance(e, Const):
            if self.narrow and e.dtype is DType.I64:
                return f"({e.value})" if e.value < 0 else str(e.value)
            return constant(e)
        if isinstance(e, Var):
            if self.index32 and not self.narrow and e.dtype is DType.I64:
                return f"((tl_i64){_var_name(e)})"  # an int loop variable in 64-bit math
            return _var_name(e)
        if isinstance(e, Load):
            return self.load(e)
        if isinstance(e, Binary):
            return self.binary(e)
        if isinstance(e, Call):
            return self.call(e)
        if isinstance(e, Select):
            return f"({self.expr(e.cond)} ? {self.expr(e.true_value)} : {self.expr(e.false_value)})"
        if isinstance(e, Cast):
            return self.cast(self.expr(e.value), e.value.dtype, e.type)
        raise TypeError(f"cannot emit {type(e).__name__}")

    def binary(self, e: Binary) -> str:
        d = e.a.dtype
        op = e.op
        if op in _COMPARE and d is DType.I64:
            return f"({self.index(e.a)} {_COMPARE[op]} {self.index(e.b)})"
        a, b = self.expr(e.a), self.expr(e.b)
        if op in _COMPARE:
            # C's float comparisons are ordered, != unordered: LLVM's fcmp o<op> / une.
            return f"({a} {_COMPARE[op]} {b})"
        if op in ("min", "max"):
            return f"tl_{op}({a}, {b})"
        if d.is_float:
            if op in ("add", "sub", "mul", "div"):
                return _rounded(f"({a} {_INFIX[op]} {b})", d)
            if op == "rem":
                return _rounded(f"tl_fmod({a}, {b})", d)
            if op in ("pow", "atan2"):
                return _rounded(f"tl_{op}({a}, {b})", d)
            raise ValueError(f"float op {op}")
        if op in _INFIX:
            if d.bits >= 32:
                return f"({a} {_INFIX[op]} {b})"
            # C promotes narrow integers to int: cast back so wrap-around matches the IR type.
            return f"(({value_type(d)})({a} {_INFIX[op]} {b}))"
        raise ValueError(f"integer op {op}")

    def call(self, e: Call) -> str:
        args = [self.expr(a) for a in e.args]
        d = e.args[0].dtype
        f = e.func
        x = args[0]
        if f == "neg":
            return f"(-{x})" if d.is_float else f"(({value_type(d)})(-{x}))"
        if f == "not":
            return f"(!{x})" if d is DType.BOOL else f"(({value_type(d)})(~{x}))"
        if f == "isnan":
            return f"tl_isnan({x})"
        if f in ("isinf_pos", "isinf_neg"):
            sign = "" if f == "isinf_pos" else "-"
            return f"({x} == ({value_type(d)}){sign}TL_INF)"
        if f == "abs" and not d.is_float:
            return f"tl_abs({x})" if d.is_signed else x
        if f == "sign":
            return f"tl_sign({x})"
        text = f"tl_{f}({', '.join(args)})"
        return text if f in _EXACT_CALLS else _rounded(text, e.type)

    def cast(self, x: str, src: DType, dst: DType) -> str:
        if src is dst:
            return x
        if dst is DType.BOOL:
            return f"({x} != 0)"
        if dst is DType.F16:
            return f"tl_round_h((float)({x}))"
        if dst is DType.BF16:
            return f"tl_round_bf((float)({x}))"
        return f"(({value_type(dst)})({x}))"


# Functions whose result is exactly representable in the argument's type (no rounding to float16 needed).
_EXACT_CALLS = ("abs", "floor", "ceil", "round", "trunc")


def _rounded(text: str, d: DType) -> str:
    """A float16 operation's result: computed in float, rounded to float16 as the IR's float16 arithmetic is
    (so ``x / s`` then ``round`` sees what numpy and the CPU path see). bfloat16 is computed in float, as on
    the CPU, and rounded where it is cast or stored."""
    return f"tl_round_h({text})" if d is DType.F16 else text


def constant(e: Const) -> str:
    d = e.dtype
    if d is DType.BOOL:
        return "true" if e.value else "false"
    if d.is_float:
        v = float(e.value)
        if d is DType.F16:
            v = float(np.float16(v))
        elif d is DType.BF16:
            bits = np.array([v], np.float32).view(np.uint32)[0]
            v = float(np.array([(int(bits) + 0x7FFF + ((int(bits) >> 16) & 1)) >> 16 << 16], np.uint32)
                      .view(np.float32)[0]) if math.isfinite(v) else v
        elif d is DType.F32:
            v = float(np.float32(v))
        t = value_type(d)
        if math.isnan(v):
            return f"(({t})TL_NAN)"
        if math.isinf(v):
            return f"(({t}){'-' if v < 0 else ''}TL_INF)"
        text = f"{v.hex()}{'f' if t == 'float' else ''}"
        return f"({text})" if text.startswith("-") else text
    v = int(e.value)
    t = value_type(d)
    if not d.is_signed:
        return f"(({t}){v & ((1 << d.bits) - 1)}ULL)"
    if v == -(1 << (d.bits - 1)):
        return f"(({t})(-{(1 << (d.bits - 1)) - 1}LL - 1))"
    if d is DType.I64:
        return f"({v}LL)" if v < 0 else f"{v}LL"
    return f"(({t}){v})"


def kernel_launches(kernel: Kernel) -> int:
    """How many launches a loop IR kernel becomes (one per top-level nest that does work)."""
    return sum(1 for m in map_threads(kernel.body) if not m.empty)


