"""Readable text for the loop IR, used by golden tests and ``tilec compile --dump-ir``.

Example::

    kernel k0 "Relu" (x: float32[4, 8], y: float32[4, 8]) {
      for i0 in 0..4 {
        vectorized for i1 in 0..8 {
          y[i0, i1] = max(x[i0, i1], 0.0)
        }
      }
    }
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Binary, Buffer, Call, Cast, Const, Expr, Load, PackWord, Select, Var, WordDot
from compiler.loopir.stmt import Alloc, Barrier, For, ForKind, If, Kernel, Prefetch, Seq, Stmt, Store

_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "rem": "%", "lt": "<", "le": "<=", "gt": ">",
          "ge": ">=", "eq": "==", "ne": "!=", "and": "&&", "or": "||", "xor": "^", "shl": "<<", "shr": ">>"}


def format_expr(e: Expr) -> str:
    if isinstance(e, Const):
        if isinstance(e.value, bool):
            return "true" if e.value else "false"
        return repr(e.value) if e.dtype is not e.dtype.I64 else str(e.value)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Load):
        return f"{e.buffer.name}[{', '.join(format_expr(i) for i in e.indices)}]"
    if isinstance(e, Binary):
        if e.op in _INFIX:
            return f"({format_expr(e.a)} {_INFIX[e.op]} {format_expr(e.b)})"
        return f"{e.op}({format_expr(e.a)}, {format_expr(e.b)})"
    if isinstance(e, Call):
        return f"{e.func}({', '.join(format_expr(a) for a in e.args)})"
    if isinstance(e, Select):
        return f"select({format_expr(e.cond)}, {format_expr(e.true_value)}, {format_expr(e.false_value)})"
    if isinstance(e, Cast):
        # Only the attributes that change the conversion: saturate for float8, round_mode for e8m0.
        mode = "" if e.saturate or e.type.format is None else ", saturate=0"
        mode += f", round_mode={e.round_mode}" if e.type is DType.F8E8M0 else ""
        return f"{e.type.value}({format_expr(e.value)}{mode})"
    if isinstance(e, PackWord):
        return f"pack{len(e.parts)}({', '.join(format_expr(p) for p in e.parts)})"
    if isinstance(e, WordDot):
        return f"dot{e.parts}_{e.form}({format_expr(e.a)}, {format_expr(e.b)})"
    raise TypeError(f"cannot print {type(e).__name__}")


def format_size(d: "int | Expr") -> str:
    """A dimension or loop extent: the int, or its expression without outer parentheses."""
    if isinstance(d, int):
        return str(d)
    text = format_expr(d)
    return text[1:-1] if text.startswith("(") and text.endswith(")") else text


def format_buffer(b: Buffer) -> str:
    return f"{b.name}: {b.dtype.value}[{', '.join(map(format_size, b.shape))}]"


def _format_stmt(s: Stmt, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    if isinstance(s, For):
        when = f" if {format_size(s.work)} >= {s.min_work}" if s.work is not None and s.kind is ForKind.PARALLEL else ""
        out.append(f"{pad}{s.kind.value} {s.var.name} in 0..{format_size(s.extent)}{when} {{")
        _format_stmt(s.body, indent + 1, out)
        out.append(f"{pad}}}")
    elif isinstance(s, Seq):
        for child in s.stmts:
            _format_stmt(child, indent, out)
    elif isinstance(s, Alloc):
        out.append(f"{pad}alloc {format_buffer(s.buffer)} {s.buffer.scope}")
        _format_stmt(s.body, indent, out)
    elif isinstance(s, If):
        out.append(f"{pad}if {format_expr(s.cond)} {{")
        _format_stmt(s.body, indent + 1, out)
        out.append(f"{pad}}}")
    elif isinstance(s, Barrier):
        out.append(f"{pad}barrier")
    elif isinstance(s, Store):
        target = f"{s.buffer.name}[{', '.join(format_expr(i) for i in s.indices)}]"
        out.append(f"{pad}{target} = {format_expr(s.value)}")
    elif isinstance(s, Prefetch):
        out.append(f"{pad}prefetch {format_expr(s.address)}")
    elif hasattr(s, "format_line"):
        # A statement a target defines for itself (CUDA's warp-level matrix ops) prints its own line.
        out.append(pad + s.format_line(format_expr))
    else:
        raise TypeError(f"cannot print {type(s).__name__}")


def format_stmt(s: Stmt) -> str:
    out: list[str] = []
    _format_stmt(s, 0, out)
    return "\n".join(out)


def format_kernel(k: Kernel) -> str:
    params = ", ".join(format_buffer(b) for b in k.params)
    label = f' "{k.label}"' if k.label else ""
    when = f" when {format_expr(k.guard)}" if k.guard is not None else ""
    out = [f"kernel {k.name}{label} ({params}){when} {{"]
    _format_stmt(k.body, 1, out)
    out.append("}")
    return "\n".join(out)
