"""Loop IR → LLVM IR (llvmlite), one function per kernel.

Contract: a kernel becomes ``void @name(ptr ctx, ptr noalias %buf...)`` with one
pointer per global buffer in ``Kernel.params`` order; a kernel whose extents or
buffer shapes use size variables takes ``ptr dims`` (the run's int64 size values,
in ``ModuleEmitter.dims`` order) after ``ctx`` and reads them once at entry. Loop
kinds map as (a symbolic extent makes an unrolled or vectorized loop a counted one):

- serial: a counted loop;
- unrolled: the body emitted once per iteration with the variable a constant;
- vectorized: the body emitted once per power-of-two part of the extent (24 → 16 + 8;
  ``codegen.target.vector_parts``), a ragged remainder as one vector whose extra lanes
  are masked off (23 → 32 with 23 active: masked loads and stores in global memory;
  local buffers get rows padded to the parts' total, so their accesses stay whole
  vectors that LLVM keeps in registers), with the variable as that part's lane vector
  ``<b, b+1, ..., b+W-1>``; accesses
  contiguous in it become vector loads/stores, invariant ones scalars (broadcast
  where mixed), loads with a small constant stride (a stride-2 pool) two vector
  loads and a shuffle, others gathers/scatters;
- parallel: the body is outlined into ``void (ptr closure, i64 begin, i64 end)``
  and handed to ``tilec_parallel_for`` from the support library.
Local buffers become entry-block allocas, which LLVM promotes to registers.

Narrow types: float8 / float4 / bfloat16 values live in float32 registers and
are encoded / decoded at loads and stores (``narrow.py``); a ``Cast`` to one of
them rounds to its grid right away, so fused cast chains keep ONNX semantics.
Sub-byte elements of global buffers are packed (``compiler.dtypes``): a load
extracts its bit field; a store read-modify-writes its byte, with atomic
and/or inside a parallel loop, because a neighbour in the same byte may be
written by another thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import llvmlite
import llvmlite.ir as ir
import ml_dtypes
import numpy as np

from compiler.codegen.target import MAX_SHUFFLED_LOAD_STRIDE, WORD_DOT_FEATURES, padded_extent, vector_parts
from compiler.dtypes import DType
from compiler.loopir.expr import (Binary, Buffer, Call, Cast, Const, Expr, Load, PackWord, Select, Var, WordDot, flat_index,
                                  linear_coefficient, substitute, walk)
from compiler.loopir.sizes import SizeVar, size_expr, static_value
from compiler.loopir.stmt import (Alloc, For, ForKind, Kernel, Prefetch, Seq, Stmt, Store, kernel_size_vars, loads_and_stores,
                                  walk_stmts)
from compiler.codegen.llvm import narrow, vecmath
from compiler.codegen.llvm.types import I1, I8, I32, I64, PTR, VOID, is_vector, mangle, memory_type, value_type, vectorized

if llvmlite.ir_layer_typed_pointers_enabled:
    raise ImportError("tilec needs llvmlite's opaque-pointer IR layer: import compiler before llvmlite "
                      "(or set LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS=0)")

# Functions with no LLVM intrinsic: called per lane from libm (float / double spellings).
_LIBM = {"erf": ("erff", "erf"), "asinh": ("asinhf", "asinh"), "acosh": ("acoshf", "acosh"),
         "atanh": ("atanhf", "atanh"), "atan2": ("atan2f", "atan2")}
_INTRINSIC = {"exp": "llvm.exp", "log": "llvm.log", "sqrt": "llvm.sqrt", "sin": "llvm.sin", "cos": "llvm.cos",
              "tan": "llvm.tan", "asin": "llvm.asin", "acos": "llvm.acos", "atan": "llvm.atan",
              "sinh": "llvm.sinh", "cosh": "llvm.cosh", "tanh": "llvm.tanh", "floor": "llvm.floor",
              "ceil": "llvm.ceil", "round": "llvm.roundeven", "trunc": "llvm.trunc", "abs": "llvm.fabs",
              "fma": "llvm.fma", "pow": "llvm.pow", "max": "llvm.maximum", "min": "llvm.minimum"}
_FCMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


class _BFloatType(ir.Type):
    """LLVM's ``bfloat`` (llvmlite has none): only the element type of ``vdpbf16ps``'s operands, which are
    bitcast from int32 words, so it needs no constants."""

    def _to_string(self) -> str:
        return "bfloat"


_BFLOAT = _BFloatType()


@dataclass
class ModuleEmitter:
    module: ir.Module
    functions: dict[str, ir.Function] = field(default_factory=dict)
    outlined: int = 0
    # The size variables, in the order of the run's dims array.
    dims: tuple[str, ...] = ()
    # The target's LLVM features: which instructions ``WordDot`` may lower to.
    features: tuple[str, ...] = ()

    def declare(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        if name not in self.functions:
            existing = self.module.globals.get(name)
            self.functions[name] = existing or ir.Function(self.module, ir.FunctionType(ret, args), name)
        return self.functions[name]

    def intrinsic(self, base: str, t: ir.Type, nargs: int) -> ir.Function:
        return self.declare(f"{base}.{mangle(t)}", t, [t] * nargs)

    def parallel_for(self) -> ir.Function:
        return self.declare("tilec_parallel_for", VOID, [PTR, PTR, PTR, I64])

    def kernel_type(self, kernel: Kernel) -> ir.FunctionType:
        """``void (ctx[, dims], params...)``: dims only for a kernel that reads size variables."""
        leading = 2 if kernel_size_vars(kernel) else 1
        return ir.FunctionType(VOID, [PTR] * (leading + len(kernel.params)))

    def declare_kernel(self, kernel: Kernel) -> ir.Function:
        """A kernel another module of the same artifact defines (``add_kernel(..., shared=True)``)."""
        return self.declare(kernel.name, VOID, list(self.kernel_type(kernel).args))

    def add_kernel(self, kernel: Kernel, shared: bool = False) -> ir.Function:
        """The kernel's function; ``shared``: external (another module of the artifact calls it), else internal."""
        sizes = sorted(kernel_size_vars(kernel), key=lambda v: self.dim_index(v))
        fn = ir.Function(self.module, self.kernel_type(kernel), kernel.name)
        leading = len(fn.args) - len(kernel.params)  # ctx[, dims]
        if not shared:
            fn.linkage = "internal"
        # Called once from tilec_run: inlining every such kernel into it made one giant function for
        # LLVM to optimize (DenseNet-121: 14 s against 4 s), for no gain at run time.
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        for i, arg in enumerate(fn.args[leading:]):
            arg.add_attribute("noalias")
            arg.name = kernel.params[i].name
        fn.args[0].name = "ctx"
        pointers = {b.name: arg for b, arg in zip(kernel.params, fn.args[leading:])}
        body = FunctionEmitter(self, fn, fn.args[0], pointers, {}, concurrent=False)
        if sizes:
            fn.args[1].name = "dims"
            for v in sizes:
                slot = body.allocas.gep(fn.args[1], [ir.Constant(I64, self.dim_index(v))], inbounds=True, source_etype=I64)
                body.env[v] = body.allocas.load(slot, name=v.name, typ=I64, align=8)
        body.stmt(kernel.body)
        body.finish()
        return fn

    def dim_index(self, v: SizeVar) -> int:
        try:
            return self.dims.index(v.name)
        except ValueError:
            raise ValueError(f"size variable {v.name} is not among the module's dims {list(self.dims)}") from None


class FunctionEmitter:
    def __init__(self, mod: ModuleEmitter, fn: ir.Function, ctx: ir.Value, pointers: dict[str, ir.Value],
                 env: dict[Var, ir.Value], concurrent: bool) -> None:
        self.mod = mod
        # Whether other threads run this code at the same time (an outlined parallel loop body).
        self.concurrent = concurrent
        self.fn = fn
        self.ctx = ctx
        self.pointers = dict(pointers)
        self.env = dict(env)
        self.entry = fn.append_basic_block("entry")
        self.allocas = ir.IRBuilder(self.entry)
        body = fn.append_basic_block("body")
        self.b = ir.IRBuilder(body)
        self.vector: _VectorPart | None = None

    def put(self, value: ir.Value, ptr: ir.Value, align: int | None = None) -> None:
        """Store without llvmlite's pointee check: a vector may be stored through a scalar's address."""
        st = ir.instructions.StoreInstr(self.b.block, value, ptr)
        st.align = align
        self.b._insert(st)  # noqa: SLF001 - IRBuilder.store would reject opaque-pointer stores of other types

    def finish(self) -> None:
        self.allocas.branch(self.fn.basic_blocks[1])
        self.b.ret_void()

    # --- statements -----------------------------------------------------------------

    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Seq):
            for child in s.stmts:
                self.stmt(child)
        elif isinstance(s, Store):
            self.store(s)
        elif isinstance(s, Alloc):
            t = memory_type(s.buffer.dtype)
            size = _layout(s.buffer).numel
            self.pointers[s.buffer.name] = self.allocas.alloca(ir.ArrayType(t, size), name=s.buffer.name)
            self.stmt(s.body)
        elif isinstance(s, For):
            self.loop(s)
        elif isinstance(s, Prefetch):
            self.prefetch(s)
        else:
            raise TypeError(f"cannot emit {type(s).__name__}")

    def loop(self, s: For) -> None:
        known = static_value(s.extent)
        if known == 0:
            return
        if s.kind is ForKind.UNROLLED and known is not None:
            for k in range(known):
                self.env[s.var] = ir.Constant(I64, k)
                self.stmt(s.body)
            del self.env[s.var]
        elif s.kind is ForKind.VECTORIZED and known is not None and known > 1:
            if self.vector is not None:
                raise ValueError(f"nested vectorized loops ({self.vector.var.name}, {s.var.name})")
            base = 0
            for width, active in vector_parts(known, masked=_maskable(s.body)):
                lanes = list(range(base, base + width))
                self.vector = _VectorPart(s.var, width, base, active) if width > 1 else None
                self.env[s.var] = ir.Constant(ir.VectorType(I64, width), lanes) if width > 1 else ir.Constant(I64, base)
                self.stmt(s.body)
                base += active
            self.vector = None
            del self.env[s.var]
        elif s.kind is ForKind.PARALLEL and self.vector is None and (known is None or known > 1):
            if s.work is None:
                self.parallel(s)
                return
            # Decided per run: the pool only where this run's sizes give the loop the work to pay for it.
            enough = self.b.icmp_signed(">=", self.index(s.work), ir.Constant(I64, s.min_work))
            with self.b.if_else(enough) as (on_pool, inline):
                with on_pool:
                    self.parallel(s)
                with inline:
                    self.counted_loop(s.var, ir.Constant(I64, 0), self.index(size_expr(s.extent)), s.body)
        else:
            self.counted_loop(s.var, ir.Constant(I64, 0), self.index(size_expr(s.extent)), s.body)

    def counted_loop(self, var: Var, begin: ir.Value, end: ir.Value, body: Stmt) -> None:
        pre = self.b.block
        head = self.fn.append_basic_block(f"{var.name}.head")
        loop = self.fn.append_basic_block(f"{var.name}.body")
        done = self.fn.append_basic_block(f"{var.name}.done")
        self.b.branch(head)
        self.b.position_at_end(head)
        i = self.b.phi(I64, name=var.name)
        i.add_incoming(begin, pre)
        self.b.cbranch(self.b.icmp_signed("<", i, end), loop, done)
        self.b.position_at_end(loop)
        self.env[var] = i
        self.stmt(body)
        del self.env[var]
        i.add_incoming(self.b.add(i, ir.Constant(I64, 1), flags=["nsw"]), self.b.block)
        self.b.branch(head)
        self.b.position_at_end(done)

    def parallel(self, s: For) -> None:
        """Outline ``s``'s body and run it as ``tilec_parallel_for(ctx, fn, closure, extent)``."""
        used = _used_buffers(s.body)
        captured_ptrs = [(name, p) for name, p in self.pointers.items() if name in used]
        captured_vars = list(self.env.items())
        fields = [PTR] * (1 + len(captured_ptrs)) + [v.type for _, v in captured_vars]
        closure_t = ir.LiteralStructType(fields)
        self.mod.outlined += 1
        worker = ir.Function(self.mod.module, ir.FunctionType(VOID, [PTR, I64, I64]),
                             f"{self.fn.name}.par{self.mod.outlined}")
        worker.linkage = "internal"
        worker.attributes.add("nounwind")
        closure = self.allocas.alloca(closure_t, name="closure")
        values = [self.ctx] + [p for _, p in captured_ptrs] + [v for _, v in captured_vars]
        for k, value in enumerate(values):
            self.put(value, self.b.gep(closure, [ir.Constant(I32, 0), ir.Constant(I32, k)], inbounds=True,
                                           source_etype=closure_t))
        inner = FunctionEmitter(self.mod, worker, None, {}, {}, concurrent=True)
        arg, begin, end = worker.args
        loaded = [inner.b.load(inner.b.gep(arg, [ir.Constant(I32, 0), ir.Constant(I32, k)], inbounds=True,
                                           source_etype=closure_t), typ=fields[k])
                  for k in range(len(values))]
        inner.ctx = loaded[0]
        inner.pointers = {name: loaded[1 + k] for k, (name, _) in enumerate(captured_ptrs)}
        inner.env = {var: loaded[1 + len(captured_ptrs) + k] for k, (var, _) in enumerate(captured_vars)}
        inner.counted_loop(s.var, begin, end, s.body)
        inner.finish()
        self.b.call(self.mod.parallel_for(), [self.ctx, worker, closure, self.index(size_expr(s.extent))])

    # --- memory ---------------------------------------------------------------------

    def _address(self, buffer: Buffer, indices: tuple[Expr, ...], for_store: bool = False) -> tuple[str, ir.Value, int]:
        """(kind, where, stride): ('scalar'|'contiguous'|'masked', pointer), ('strided', pointer to lane 0;
        loads only) or ('gather', vector of indices); 'masked': contiguous, but only the part's active
        lanes may be touched. ``stride`` is the elements between lanes (0 outside vector parts)."""
        offset = flat_index(_layout(buffer), indices)
        base = self.pointers[buffer.name]
        mtype = memory_type(buffer.dtype)
        if self.vector is None:
            return "scalar", self.b.gep(base, [self.index(offset)], inbounds=True, source_etype=mtype), 0
        part = self.vector
        coeff = linear_coefficient(offset, part.var)
        if coeff == 0:
            return "scalar", self.b.gep(base, [self.index(offset)], inbounds=True, source_etype=mtype), 0
        if coeff == 1 or (coeff is not None and 1 < coeff <= MAX_SHUFFLED_LOAD_STRIDE and not for_store):
            start = self.index(substitute(offset, {part.var: Const(part.first)}))
            pointer = self.b.gep(base, [start], inbounds=True, source_etype=mtype)
            if coeff != 1:
                return "strided", pointer, coeff
            whole = not part.masked or _stays_in_padded_row(buffer, indices, part)
            return ("contiguous" if whole else "masked"), pointer, 1
        return "gather", self.index(offset), 0

    def _mask(self) -> ir.Constant:
        part = self.vector
        return ir.Constant(ir.VectorType(I1, part.width), [k < part.active for k in range(part.width)])

    def _masked_intrinsic(self, kind: str, vt: ir.VectorType) -> ir.Function:
        mask_t = ir.VectorType(I1, vt.count)
        if kind == "load":
            return self.mod.declare(f"llvm.masked.load.{mangle(vt)}.p0", vt, [PTR, I32, mask_t, vt])
        return self.mod.declare(f"llvm.masked.store.{mangle(vt)}.p0", VOID, [vt, PTR, I32, mask_t])

    def index(self, e: Expr) -> ir.Value:
        v = self.expr(e)
        if v.type != I64 and not (is_vector(v) and v.type.element == I64):
            raise TypeError(f"index expression is {v.type}, not i64")
        return v

    def load(self, e: Load) -> ir.Value:
        dtype = e.buffer.dtype
        if _is_packed(e.buffer):
            return self._from_memory(self._load_packed(e), dtype)
        mtype = memory_type(dtype)
        kind, where, stride = self._address(e.buffer, e.indices)
        if kind == "scalar":
            return self._from_memory(self.b.load(where, typ=mtype, align=mtype_align(mtype)), dtype)
        lanes = self.vector.width
        vt = ir.VectorType(mtype, lanes)
        if kind == "contiguous":
            return self._from_memory(self.b.load(where, typ=vt, align=mtype_align(mtype)), dtype)
        if kind == "masked":
            align = ir.Constant(I32, mtype_align(mtype))
            loaded = self.b.call(self._masked_intrinsic("load", vt), [where, align, self._mask(), ir.Constant(vt, None)])
            return self._from_memory(loaded, dtype)
        if kind == "strided":
            return self._from_memory(self._strided_load(where, mtype, stride), dtype)
        base = self.pointers[e.buffer.name]
        result = ir.Constant(vt, None)
        for lane in range(self.vector.active):
            idx = self.b.extract_element(where, ir.Constant(I32, lane))
            ptr = self.b.gep(base, [idx], inbounds=True, source_etype=mtype)
            result = self.b.insert_element(result, self.b.load(ptr, typ=mtype), ir.Constant(I32, lane))
        return self._from_memory(result, dtype)

    def _strided_load(self, start: ir.Value, mtype: ir.Type, stride: int) -> ir.Value:
        """Lanes ``start[0], start[stride], ...`` of the current part from contiguous loads and a shuffle,
        never touching memory past the last active lane: for a whole part, two loads (the first half's
        span, and one ending exactly at the last lane); for a masked part, one masked load."""
        part = self.vector
        lanes, align = part.width, mtype_align(mtype)
        if part.masked:
            vt = ir.VectorType(mtype, lanes * stride)
            last = (part.active - 1) * stride
            mask = ir.Constant(ir.VectorType(I1, lanes * stride), [k <= last for k in range(lanes * stride)])
            span = self.b.call(self._masked_intrinsic("load", vt), [start, ir.Constant(I32, align), mask, ir.Constant(vt, None)])
            return self.b.shuffle_vector(span, span, ir.Constant(ir.VectorType(I32, lanes), [j * stride for j in range(lanes)]))
        half = lanes // 2
        width = half * stride
        vt = ir.VectorType(mtype, width)
        low = self.b.load(start, typ=vt, align=align)
        high_start = self.b.gep(start, [ir.Constant(I64, (lanes - 1) * stride - (width - 1))], inbounds=True,
                                source_etype=mtype)
        high = self.b.load(high_start, typ=vt, align=align)
        # In ``high``, lane half + j sits at (lanes - 1 - (half - 1 - j)) * stride - high's offset.
        picks = [j * stride for j in range(half)] + [width + (width - 1) - (half - 1 - j) * stride for j in range(half)]
        return self.b.shuffle_vector(low, high, ir.Constant(ir.VectorType(I32, lanes), picks))

    def prefetch(self, s: Prefetch) -> None:
        buffer, indices = s.address.buffer, s.address.indices
        if self.vector is not None:
            raise ValueError(f"prefetch of {buffer.name} inside vector lanes")
        if _is_packed(buffer):  # the byte holding the element
            ((where, _),) = self._packed_field(buffer, indices)
        else:
            _, where, _ = self._address(buffer, indices)
        # llvm.prefetch(address, read, locality 2: keep in L2 (x86 prefetcht1, arm64 PLDL2KEEP), data)
        fn = self.mod.declare("llvm.prefetch.p0", VOID, [PTR, I32, I32, I32])
        self.b.call(fn, [where, ir.Constant(I32, 0), ir.Constant(I32, 2), ir.Constant(I32, 1)])

    def store(self, s: Store) -> None:
        dtype = s.buffer.dtype
        mtype = memory_type(dtype)
        value = self.expr(s.value)
        if _is_packed(s.buffer):
            self._store_packed(s, value)
            return
        kind, where, _ = self._address(s.buffer, s.indices, for_store=True)
        if kind == "scalar":
            if is_vector(value):
                raise ValueError(f"store of a vector into one element of {s.buffer.name}")
            self.put(self._to_memory(value, dtype), where, align=mtype_align(mtype))
            return
        lanes = self.vector.width
        value = self._to_memory(self.broadcast(value, lanes), dtype)
        if kind == "contiguous":
            self.put(value, where, align=mtype_align(mtype))
            return
        if kind == "masked":
            align = ir.Constant(I32, mtype_align(mtype))
            self.b.call(self._masked_intrinsic("store", value.type), [value, where, align, self._mask()])
            return
        base = self.pointers[s.buffer.name]
        for lane in range(self.vector.active):
            idx = self.b.extract_element(where, ir.Constant(I32, lane))
            ptr = self.b.gep(base, [idx], inbounds=True, source_etype=mtype)
            self.put(self.b.extract_element(value, ir.Constant(I32, lane)), ptr)

    def _packed_field(self, buffer: Buffer, indices: tuple[Expr, ...]) -> list[tuple[ir.Value, ir.Value]]:
        """(byte pointer, i8 bit offset) of each lane's element of a packed buffer."""
        offset = self.index(flat_index(buffer, indices))
        per = buffer.dtype.elements_per_byte
        lanes = [offset] if not is_vector(offset) else [
            self.b.extract_element(offset, ir.Constant(I32, k)) for k in range(offset.type.count)]
        fields = []
        for lane in lanes:
            byte = self.b.lshr(lane, ir.Constant(I64, per.bit_length() - 1))
            ptr = self.b.gep(self.pointers[buffer.name], [byte], inbounds=True, source_etype=I8)
            slot = self.b.and_(lane, ir.Constant(I64, per - 1))
            fields.append((ptr, self.b.trunc(self.b.mul(slot, ir.Constant(I64, buffer.dtype.bits)), I8)))
        return fields

    def _load_packed(self, e: Load) -> ir.Value:
        """The element's code (``i<bits>``; a vector in a vectorized loop), extracted from its byte."""
        code_t = ir.IntType(e.buffer.dtype.bits)
        whole_bytes = self._whole_bytes(e)
        if whole_bytes is not None:
            return self._unpacked_bytes(whole_bytes, e.buffer.dtype)
        codes = [self.b.trunc(self.b.lshr(self.b.load(ptr, typ=I8), shift), code_t)
                 for ptr, shift in self._packed_field(e.buffer, e.indices)]
        if len(codes) == 1 and self.vector is None:
            return codes[0]
        if len(codes) == 1:
            return self.broadcast(codes[0], self.vector.width)
        result = ir.Constant(ir.VectorType(code_t, len(codes)), None)
        for k, code in enumerate(codes):
            result = self.b.insert_element(result, code, ir.Constant(I32, k))
        return result

    def _whole_bytes(self, e: Load) -> ir.Value | None:
        """For a vector part whose lanes are consecutive elements starting on a byte boundary (a
        weight-only quantized product's codes): a pointer to their first byte; None otherwise."""
        part, per = self.vector, e.buffer.dtype.elements_per_byte
        if part is None or part.masked or part.width % per:
            return None
        offset = flat_index(e.buffer, e.indices)
        if linear_coefficient(offset, part.var) != 1:
            return None
        start = substitute(offset, {part.var: Const(part.first)})
        if not _multiple_of(start, per):
            return None
        byte = self.b.lshr(self.index(start), ir.Constant(I64, per.bit_length() - 1))
        return self.b.gep(self.pointers[e.buffer.name], [byte], inbounds=True, source_etype=I8)

    def _unpacked_bytes(self, pointer: ir.Value, dtype: DType) -> ir.Value:
        """The part's ``width`` codes from the ``width / per`` bytes at ``pointer``: one load, a shift and
        mask per field, and one shuffle that puts element ``k`` (field ``k % per`` of byte ``k // per``) in
        lane ``k``."""
        width, per, bits = self.vector.width, dtype.elements_per_byte, dtype.bits
        count = width // per
        packed = self.b.load(pointer, typ=ir.VectorType(I8, count), align=1)
        fields = [self.b.and_(self.b.lshr(packed, self.broadcast(ir.Constant(I8, bits * j), count)),
                              self.broadcast(ir.Constant(I8, (1 << bits) - 1), count)) for j in range(per)]
        while len(fields) > 1:  # concatenate: fields[0] | fields[1] | ...
            n = fields[0].type.count
            fields = [self.b.shuffle_vector(fields[j], fields[j + 1], ir.Constant(ir.VectorType(I32, 2 * n),
                                                                                 list(range(2 * n))))
                      for j in range(0, len(fields), 2)]
        order = ir.Constant(ir.VectorType(I32, width), [(k % per) * count + k // per for k in range(width)])
        codes = self.b.shuffle_vector(fields[0], ir.Constant(fields[0].type, None), order)
        return self.b.trunc(codes, ir.VectorType(ir.IntType(bits), width))

    def _store_packed(self, s: Store, value: ir.Value) -> None:
        fields = self._packed_field(s.buffer, s.indices)
        if is_vector(value) and len(fields) == 1:
            raise ValueError(f"store of a vector into one element of {s.buffer.name}")
        code = self._to_memory(self.broadcast(value, len(fields)) if len(fields) > 1 else value, s.buffer.dtype)
        field_mask = ir.Constant(I8, (1 << s.buffer.dtype.bits) - 1)
        for k, (ptr, shift) in enumerate(fields):
            lane = self.b.extract_element(code, ir.Constant(I32, k)) if is_vector(code) else code
            bits = self.b.shl(self.b.zext(lane, I8), shift)
            keep = self.b.not_(self.b.shl(field_mask, shift))
            if self.concurrent:
                # Neighbours in this byte may be stored by other threads: clear and set only our bits.
                self.b.atomic_rmw("and", ptr, keep, "monotonic")
                self.b.atomic_rmw("or", ptr, bits, "monotonic")
            else:
                self.put(self.b.or_(self.b.and_(self.b.load(ptr, typ=I8), keep), bits), ptr)

    def _from_memory(self, v: ir.Value, dtype: DType) -> ir.Value:
        lanes = v.type.count if is_vector(v) else None
        if dtype is DType.BOOL:
            return self.b.icmp_unsigned("!=", v, ir.Constant(v.type, None))
        if dtype is DType.BF16:
            wide = self.b.zext(v, vectorized(I32, lanes))
            shifted = self.b.shl(wide, self.broadcast(ir.Constant(I32, 16), lanes))
            return self.b.bitcast(shifted, vectorized(ir.FloatType(), lanes))
        if dtype.format is not None:
            return narrow.decode(self.b, v, dtype.format)
        return v

    def _to_memory(self, v: ir.Value, dtype: DType) -> ir.Value:
        lanes = v.type.count if is_vector(v) else None
        if dtype is DType.BOOL:
            return self.b.zext(v, vectorized(I8, lanes))
        if dtype is DType.BF16:
            return self._float_to_bf16(v, lanes)
        if dtype.format is not None:
            # A Cast's result is on the grid already (infinity included, where saturate=0 made one);
            # other values round to nearest and overflow to inf / NaN, as IEEE arithmetic would.
            # (float8e8m0 rounds "nearest" here: "up" would move its smallest value, a float32
            # subnormal with a fraction, one code up.)
            code = narrow.encode(self.b, v, dtype.format, saturate=False, round_mode="nearest")
            return self.b.trunc(code, vectorized(memory_type(dtype), lanes))
        return v

    def _float_to_bf16(self, v: ir.Value, lanes: int | None) -> ir.Value:
        # Round to nearest even on the dropped 16 bits; NaN stays a (quiet) NaN.
        i32 = vectorized(I32, lanes)
        bits = self.b.bitcast(v, i32)
        c = lambda k: self.broadcast(ir.Constant(I32, k), lanes)  # noqa: E731
        lsb = self.b.and_(self.b.lshr(bits, c(16)), c(1))
        rounded = self.b.add(bits, self.b.add(c(0x7FFF), lsb))
        is_nan = self.b.fcmp_unordered("uno", v, v)
        out = self.b.select(is_nan, self.b.or_(bits, c(0x400000)), rounded)
        return self.b.trunc(self.b.lshr(out, c(16)), vectorized(ir.IntType(16), lanes))

    # --- expressions ----------------------------------------------------------------

    def broadcast(self, v: ir.Value, lanes: int | None) -> ir.Value:
        if lanes is None or is_vector(v):
            return v
        vt = ir.VectorType(v.type, lanes)
        if isinstance(v, ir.Constant):
            return ir.Constant(vt, [v.constant] * lanes)
        one = self.b.insert_element(ir.Constant(vt, None), v, ir.Constant(I32, 0))
        return self.b.shuffle_vector(one, ir.Constant(vt, None), ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))

    def _match(self, *vals: ir.Value) -> list[ir.Value]:
        lanes = next((v.type.count for v in vals if is_vector(v)), None)
        return [self.broadcast(v, lanes) for v in vals]

    def expr(self, e: Expr) -> ir.Value:
        if isinstance(e, Const):
            return constant(e)
        if isinstance(e, Var):
            try:
                return self.env[e]
            except KeyError:
                raise ValueError(f"variable {e.name} is not bound") from None
        if isinstance(e, Load):
            return self.load(e)
        if isinstance(e, Binary):
            return self._bf16_rounded(self.binary(e), e.dtype)
        if isinstance(e, Call):
            return self._bf16_rounded(self.call(e), e.dtype)
        if isinstance(e, Select):
            c, t, f = self._match(self.expr(e.cond), self.expr(e.true_value), self.expr(e.false_value))
            return self.b.select(c, t, f)
        if isinstance(e, Cast):
            return self.cast(self.expr(e.value), e.value.dtype, e.type, e.saturate, e.round_mode)
        if isinstance(e, PackWord):
            return self.pack_word(e)
        if isinstance(e, WordDot):
            return self.word_dot(None, e)
        raise TypeError(f"cannot emit {type(e).__name__}")

    def pack_word(self, e: PackWord) -> ir.Value:
        """Parts as an int32 word: one unaligned 32-bit load where they are consecutive elements of a buffer
        (a row of activations read in place), else each one's bits widened and shifted into place."""
        bits = e.part_bits
        first = e.parts[0]
        if (isinstance(first, Load) and first.buffer.dtype.bits == bits and not _is_packed(first.buffer)
                and all(isinstance(p, Load) and p.buffer == first.buffer for p in e.parts)):
            base = flat_index(_layout(first.buffer), first.indices)
            offsets = [flat_index(_layout(p.buffer), p.indices) for p in e.parts]
            vector = self.vector.var if self.vector is not None else None
            if all(_offset_difference(o, base) == k for k, o in enumerate(offsets)) and (
                    vector is None or linear_coefficient(base, vector) == 0):
                ptr = self.b.gep(self.pointers[first.buffer.name], [self.index(base)], inbounds=True,
                                 source_etype=ir.IntType(bits))
                return self.b.load(ptr, typ=I32, align=bits // 8)
        word = None
        for k, part in enumerate(e.parts):
            v = self.expr(part)
            lanes = v.type.count if is_vector(v) else None
            if part.dtype is DType.BF16:
                # In a register a bfloat16 is the float32 its bits shifted up make (``_from_memory``).
                wide = self.b.lshr(self.b.bitcast(v, vectorized(I32, lanes)), self.broadcast(ir.Constant(I32, 16), lanes))
            else:
                wide = self.b.zext(v, vectorized(I32, lanes))
            if k:
                wide = self.b.shl(wide, self.broadcast(ir.Constant(I32, bits * k), lanes))
            word = wide if word is None else self.b.or_(*self._match(word, wide))
        return word

    def word_dot(self, acc: ir.Value | None, e: WordDot) -> ir.Value:
        """``acc + WordDot(a, b)`` lane by lane (``acc`` None: 0): x86's ``vpdpbusd`` (VNNI) or ``vdpbf16ps``
        (AVX512-BF16) on each 16 / 8 / 4 lanes, aarch64's ``usdot`` / ``sdot`` / ``bfdot`` on each 4; elsewhere
        (and for other widths) the parts widened, multiplied and summed."""
        a, b = self._match(self.expr(e.a), self.expr(e.b))
        if acc is not None:
            acc, a, b = self._match(acc, a, b)
        lanes = a.type.count if is_vector(a) else 1
        result = ir.FloatType() if e.form == "bf16" else I32
        chunk = self._word_dot_chunk(e.form, lanes)
        if chunk is None:
            return self._word_dot_widened(acc, a, b, lanes, e.form)
        if acc is None:
            acc = ir.Constant(ir.VectorType(result, lanes), None)
        vt = ir.VectorType(result, chunk)
        parts = ir.VectorType(_BFLOAT if e.form == "bf16" else I8, e.parts * chunk)
        if "neon" in self.mod.features:
            name = {"u8s8": "usdot.v4i32.v16i8", "s8s8": "sdot.v4i32.v16i8", "bf16": "bfdot.v4f32.v8bf16"}[e.form]
            fn = self.mod.declare(f"llvm.aarch64.neon.{name}", vt, [vt, parts, parts])
        elif e.form == "u8s8":
            parts = ir.VectorType(I32, chunk)  # vpdpbusd's operands are typed as words
            fn = self.mod.declare(f"llvm.x86.avx512.vpdpbusd.{32 * chunk}", vt, [vt, parts, parts])
        else:
            fn = self.mod.declare(f"llvm.x86.avx512bf16.dpbf16ps.{32 * chunk}", vt, [vt, parts, parts])
        convert = lambda v: v if v.type == parts else self.b.bitcast(v, parts)  # noqa: E731
        pieces = []
        for start in range(0, lanes, chunk):
            picks = ir.Constant(ir.VectorType(I32, chunk), list(range(start, start + chunk)))
            acc_part, a_part, b_part = (v if chunk == lanes else self.b.shuffle_vector(v, v, picks) for v in (acc, a, b))
            pieces.append(self.b.call(fn, [acc_part, convert(a_part), convert(b_part)]))
        while len(pieces) > 1:  # concatenated pairwise: a shuffle joins two vectors of one width
            width = 2 * pieces[0].type.count
            join = ir.Constant(ir.VectorType(I32, width), list(range(width)))
            pieces = [self.b.shuffle_vector(x, y, join) for x, y in zip(pieces[::2], pieces[1::2])]
        return pieces[0]

    def _word_dot_chunk(self, form: str, lanes: int) -> int | None:
        """Lanes per dot product instruction for ``lanes`` lanes of ``form`` (None: widen instead):
        x86's 512-bit ones take 16 (8 and 4 with AVX512-VL), aarch64's 4."""
        features = self.mod.features
        arch = "aarch64" if "neon" in features else "x86_64"
        if dict(WORD_DOT_FEATURES[arch]).get(form) not in features or lanes not in (4, 8, 16, 32):
            return None
        if arch == "aarch64":
            return 4
        chunk = min(lanes, 16)
        return chunk if chunk == 16 or "avx512vl" in features else None

    def _word_dot_widened(self, acc: ir.Value | None, a: ir.Value, b: ir.Value, lanes: int, form: str) -> ir.Value:
        """The portable ``WordDot``: parts widened (bytes zero- / sign-extended to int32 as the form reads
        them, bfloat16 halves shifted into float32), multiplied, each word's products added in order."""
        vector = lanes > 1 or is_vector(a)
        if form in ("u8s8", "s8s8"):
            bytes_t, wide_t = ir.VectorType(I8, 4 * lanes), ir.VectorType(I32, 4 * lanes)
            widen_a = self.b.zext if form == "u8s8" else self.b.sext
            product = self.b.mul(widen_a(self.b.bitcast(a, bytes_t), wide_t),
                                 self.b.sext(self.b.bitcast(b, bytes_t), wide_t))
            terms = []
            for k in range(4):
                picks = ir.Constant(ir.VectorType(I32, lanes), [4 * j + k for j in range(lanes)])
                term = self.b.shuffle_vector(product, product, picks)
                terms.append(term if vector else self.b.extract_element(term, ir.Constant(I32, 0)))
            add = self.b.add
        else:
            count = lanes if vector else None
            f32 = vectorized(ir.FloatType(), count)
            low = lambda v: self.b.bitcast(self.b.shl(v, self.broadcast(ir.Constant(I32, 16), count)), f32)  # noqa: E731
            high = lambda v: self.b.bitcast(self.b.and_(v, self.broadcast(ir.Constant(I32, -65536), count)), f32)  # noqa: E731
            terms = [self.b.fmul(low(a), low(b)), self.b.fmul(high(a), high(b))]
            add = self.b.fadd
        total = acc
        for term in terms:
            total = term if total is None else add(total, term)
        return total

    def _bf16_rounded(self, v: ir.Value, dtype: DType) -> ir.Value:
        """A bfloat16 result (computed in a float register) rounded to bfloat16, as each op's output
        must be: without it a fused chain of bfloat16 ops would round only when stored."""
        if dtype is not DType.BF16:
            return v
        return self._from_memory(self._float_to_bf16(v, v.type.count if is_vector(v) else None), DType.BF16)

    def binary(self, e: Binary) -> ir.Value:
        if e.op == "add" and isinstance(e.b, WordDot):
            # A reduction's update ``acc + dot(a, b)``: the accumulating form, one vpdpbusd / vdpbf16ps.
            return self.word_dot(self.expr(e.a), e.b)
        a, b = self._match(self.expr(e.a), self.expr(e.b))
        dtype = e.a.dtype
        op = e.op
        if op in _FCMP:
            if dtype.is_float:
                return self.b.fcmp_unordered("!=", a, b) if op == "ne" else self.b.fcmp_ordered(_FCMP[op], a, b)
            cmp = self.b.icmp_signed if dtype.is_signed else self.b.icmp_unsigned
            return cmp(_FCMP[op], a, b)
        if dtype.is_float:
            simple = {"add": self.b.fadd, "sub": self.b.fsub, "mul": self.b.fmul, "div": self.b.fdiv,
                      "rem": self.b.frem}
            if op in simple:
                # contract: let LLVM fuse a*b+c into one FMA (one rounding instead of two).
                return simple[op](a, b, flags=("contract",))
            if op in ("min", "max") and "neon" not in self.mod.features:
                # NaN-propagating as llvm.maximum/minimum, whose x86 lowering also orders signed zeros
                # (five instructions on the accumulator's chain in a max-reduction): one vmaxps/vminps
                # (which returns its second operand ``a`` when either is NaN) and a blend for a NaN ``b``.
                picked = self.b.select(self.b.fcmp_ordered(">" if op == "max" else "<", b, a), b, a)
                return self.b.select(self.b.fcmp_unordered("uno", b, b), b, picked)
            if op in ("min", "max", "pow"):
                return self.b.call(self.mod.intrinsic(_INTRINSIC[op], a.type, 2), [a, b])
            if op == "atan2":
                return self.libm("atan2", dtype, [a, b])
            raise ValueError(f"float op {op}")
        signed = dtype.is_signed
        simple = {"add": self.b.add, "sub": self.b.sub, "mul": self.b.mul, "and": self.b.and_, "or": self.b.or_,
                  "xor": self.b.xor, "shl": self.b.shl, "div": self.b.sdiv if signed else self.b.udiv,
                  "rem": self.b.srem if signed else self.b.urem, "shr": self.b.ashr if signed else self.b.lshr}
        if op in simple:
            return simple[op](a, b)
        if op in ("min", "max"):
            cmp = self.b.icmp_signed if signed else self.b.icmp_unsigned
            return self.b.select(cmp("<" if op == "min" else ">", a, b), a, b)
        raise ValueError(f"integer op {op}")

    def call(self, e: Call) -> ir.Value:
        args = self._match(*(self.expr(a) for a in e.args))
        x = args[0]
        dtype = e.args[0].dtype
        f = e.func
        if f == "neg":
            return self.b.fneg(x) if dtype.is_float else self.b.neg(x)
        if f == "not":
            return self.b.not_(x)
        if f == "isnan":
            return self.b.fcmp_unordered("uno", x, x)
        if f in ("isinf_pos", "isinf_neg"):
            inf = self.broadcast(ir.Constant(value_type(dtype), math.inf if f == "isinf_pos" else -math.inf),
                                 x.type.count if is_vector(x) else None)
            return self.b.fcmp_ordered("==", x, inf)
        if f == "sign":
            return self.sign(x, dtype)
        if f == "abs" and not dtype.is_float:
            if not dtype.is_signed:
                return x
            return self.b.select(self.b.icmp_signed("<", x, ir.Constant(x.type, None)), self.b.neg(x), x)
        if f in vecmath.FUNCTIONS and isinstance(x.type.element if is_vector(x) else x.type, ir.FloatType):
            return vecmath.emit(f, self.b, self.mod.module, x, self.mod.features)
        if f in vecmath.FUNCTIONS and dtype is DType.F16 and len(args) == 1:
            # In float, rounded back to half as libm's float result would be (not lane by lane through libm).
            wide = vecmath.emit(f, self.b, self.mod.module, self.cast(x, DType.F16, DType.F32), self.mod.features)
            return self.cast(wide, DType.F32, DType.F16)
        if f in _LIBM:
            return self.libm(f, dtype, args)
        if f in _INTRINSIC:
            return self.b.call(self.mod.intrinsic(_INTRINSIC[f], x.type, len(args)), args)
        raise ValueError(f"unknown function {f}")

    def sign(self, x: ir.Value, dtype: DType) -> ir.Value:
        lanes = x.type.count if is_vector(x) else None
        const_of = lambda k: self.broadcast(ir.Constant(value_type(dtype), k), lanes)  # noqa: E731
        zero, one, minus = const_of(0), const_of(1), const_of(-1)
        if dtype.is_float:
            # NaN and signed zeros pass through, as numpy.sign does.
            inner = self.b.select(self.b.fcmp_ordered("<", x, zero), minus, x)
            return self.b.select(self.b.fcmp_ordered(">", x, zero), one, inner)
        cmp = self.b.icmp_signed if dtype.is_signed else self.b.icmp_unsigned
        return self.b.select(cmp(">", x, zero), one, self.b.select(cmp("<", x, zero), minus, zero))

    def libm(self, name: str, dtype: DType, args: list[ir.Value]) -> ir.Value:
        """Call a libm function lane by lane (no LLVM intrinsic exists for it)."""
        if dtype is DType.F16:
            # libm has no half-precision spellings: call the float one (its result rounds back to half).
            wide = self.libm(name, DType.F32, [self.cast(a, DType.F16, DType.F32) for a in args])
            return self.cast(wide, DType.F32, DType.F16)
        scalar_t = value_type(dtype)
        fn = self.mod.declare(_LIBM[name][dtype is DType.F64], scalar_t, [scalar_t] * len(args))
        if not is_vector(args[0]):
            return self.b.call(fn, args)
        out = ir.Constant(args[0].type, None)
        for lane in range(args[0].type.count):
            k = ir.Constant(I32, lane)
            out = self.b.insert_element(out, self.b.call(fn, [self.b.extract_element(a, k) for a in args]), k)
        return out

    def cast(self, v: ir.Value, src: DType, dst: DType, saturate: bool = True, round_mode: str = "up") -> ir.Value:
        lanes = v.type.count if is_vector(v) else None
        target = vectorized(value_type(dst), lanes)
        if src is dst:
            return v
        if dst.is_narrow_float:
            return self._round_to_narrow(v, src, dst, saturate, round_mode)
        if value_type(src) == value_type(dst):
            return v
        if dst is DType.BOOL:
            zero = self.broadcast(ir.Constant(value_type(src), 0), lanes)
            return self.b.fcmp_unordered("!=", v, zero) if src.is_float else self.b.icmp_unsigned("!=", v, zero)
        if src is DType.BOOL:
            return self.b.uitofp(v, target) if dst.is_float else self.b.zext(v, target)
        if src.is_float and dst.is_float:
            wider = _float_bits(dst) > _float_bits(src)
            return self.b.fpext(v, target) if wider else self.b.fptrunc(v, target)
        if src.is_float and dst.bits < 8:
            # int4 / int2 keep the low bits of the truncated value (frontend/narrow_cast.py's rule).
            wide = self.b.fptosi(v, vectorized(I64, lanes))
            return self.b.trunc(wide, target)
        if src.is_float:
            return self.b.fptosi(v, target) if dst.is_signed else self.b.fptoui(v, target)
        if dst.is_float:
            return self.b.sitofp(v, target) if src.is_signed else self.b.uitofp(v, target)
        if dst.bits < src.bits:
            return self.b.trunc(v, target)
        return self.b.sext(v, target) if src.is_signed else self.b.zext(v, target)

    def _round_to_narrow(self, v: ir.Value, src: DType, dst: DType, saturate: bool, round_mode: str) -> ir.Value:
        """``v`` rounded to ``dst``'s grid, still in a float32 register (Cast semantics, see narrow.py)."""
        lanes = v.type.count if is_vector(v) else None
        f32 = vectorized(ir.FloatType(), lanes)
        f64 = vectorized(ir.DoubleType(), lanes)
        # The encoders read float32. Wider sources (float64, integers through float64, exact below
        # 2**53) round to odd on the way: it keeps the information a later round to nearest even
        # at <= 22 bits needs, so the value is rounded once, as the spec asks, not twice.
        if src is DType.BOOL or (src.is_int and not src.is_signed):
            v = self.b.uitofp(v, f32) if src.bits <= 16 else self._round_to_odd_f32(self.b.uitofp(v, f64))
        elif src.is_int:
            v = self.b.sitofp(v, f32) if src.bits <= 16 else self._round_to_odd_f32(self.b.sitofp(v, f64))
        elif src is DType.F16:
            v = self.b.fpext(v, f32)
        elif src is DType.F64:
            v = self._round_to_odd_f32(v)
        if dst is DType.BF16:
            return self._from_memory(self._float_to_bf16(v, lanes), dst)
        return narrow.decode(self.b, narrow.encode(self.b, v, dst.format, saturate, round_mode), dst.format)

    def _round_to_odd_f32(self, v: ir.Value) -> ir.Value:
        """float64 ``v`` in float32, rounded to odd: truncated toward zero, the last bit set if inexact
        (beyond float32's range: its largest value, which every narrow encoding treats as overflow)."""
        lanes = v.type.count if is_vector(v) else None
        i32 = vectorized(I32, lanes)
        near = self.b.fptrunc(v, vectorized(ir.FloatType(), lanes))
        back = self.b.fpext(near, v.type)
        inexact = self.b.fcmp_ordered("!=", back, v)
        zero = self.broadcast(ir.Constant(v.type.element if lanes else v.type, 0.0), lanes)
        away = self.b.select(self.b.fcmp_ordered(">", v, zero), self.b.fcmp_ordered(">", back, v),
                             self.b.fcmp_ordered("<", back, v))
        bits = self.b.bitcast(near, i32)
        one = self.broadcast(ir.Constant(I32, 1), lanes)
        toward_zero = self.b.select(away, self.b.sub(bits, one), bits)
        odd = self.b.select(inexact, self.b.or_(toward_zero, one), toward_zero)
        return self.b.bitcast(odd, near.type)


def _offset_difference(x: Expr, y: Expr) -> int | None:
    """The constant ``x - y`` of two index expressions that differ only in constant terms, else None."""
    if x == y:
        return 0
    if isinstance(x, Const) and isinstance(y, Const):
        return int(x.value) - int(y.value)
    if isinstance(x, Binary) and x.op == "add" and isinstance(x.b, Const):
        d = _offset_difference(x.a, y)
        if d is not None:
            return d + int(x.b.value)
    if isinstance(y, Binary) and y.op == "add" and isinstance(y.b, Const):
        d = _offset_difference(x, y.a)
        if d is not None:
            return d - int(y.b.value)
    if isinstance(x, Binary) and isinstance(y, Binary) and x.op == y.op == "add" and x.a == y.a:
        return _offset_difference(x.b, y.b)
    return None


def _multiple_of(e: Expr, m: int) -> bool:
    """Whether index expression ``e`` is a multiple of ``m`` for every value of its variables."""
    if isinstance(e, Const):
        return int(e.value) % m == 0
    if isinstance(e, Binary) and e.op in ("add", "sub"):
        return _multiple_of(e.a, m) and _multiple_of(e.b, m)
    if isinstance(e, Binary) and e.op == "mul":
        return _multiple_of(e.a, m) or _multiple_of(e.b, m)
    return False


def _is_packed(buffer: Buffer) -> bool:
    """Sub-byte elements are packed in global buffers; a local scratch buffer keeps one per byte."""
    return buffer.dtype.elements_per_byte > 1 and buffer.scope == "global"


@dataclass(frozen=True)
class _VectorPart:
    """One part of a vectorized loop: lanes ``first .. first + width - 1`` of ``var``, the first
    ``active`` of them real iterations (the rest fill the vector and never touch global memory)."""

    var: Var
    width: int
    first: int
    active: int

    @property
    def masked(self) -> bool:
        return self.active < self.width


def _layout(buffer: Buffer) -> Buffer:
    """The shape ``buffer`` is addressed with: local buffers' rows padded for masked vector parts."""
    if buffer.scope != "local" or not buffer.shape:
        return buffer
    return Buffer(buffer.name, buffer.dtype, (*buffer.shape[:-1], padded_extent(buffer.shape[-1])), "local")


def _stays_in_padded_row(buffer: Buffer, indices: tuple[Expr, ...], part: _VectorPart) -> bool:
    """Whether a whole-vector access of a masked part stays inside one padded row of a local buffer."""
    if buffer.scope != "local" or not indices:
        return False
    if any(linear_coefficient(i, part.var) != 0 for i in indices[:-1]):
        return False
    start = substitute(indices[-1], {part.var: Const(part.first)})
    return (linear_coefficient(indices[-1], part.var) == 1 and isinstance(start, Const)
            and 0 <= start.value and start.value + part.width <= _layout(buffer).shape[-1])


def _maskable(body: Stmt) -> bool:
    """Whether the extra lanes of a masked part may compute on filler values: not when an integer
    division could trap on them, nor through packed sub-byte buffers (per-lane byte updates)."""
    for buffer, _ in loads_and_stores(body):
        if _is_packed(buffer):
            return False
    for e in (x for st in walk_stmts(body) if isinstance(st, Store) for root in (st.value, *st.indices) for x in walk(root)):
        if (isinstance(e, Binary) and e.op in ("div", "rem") and not e.dtype.is_float
                and not (isinstance(e.b, Const) and e.b.value != 0)):
            return False
    return True


def _float_bits(d: DType) -> int:
    return 32 if d.is_narrow_float else d.bits


def mtype_align(t: ir.Type) -> int:
    if isinstance(t, ir.IntType):
        return max(1, t.width // 8)
    return {ir.HalfType: 2, ir.FloatType: 4, ir.DoubleType: 8}[type(t)]


def constant(e: Const) -> ir.Constant:
    t = value_type(e.dtype)
    if e.dtype is DType.BOOL:
        return ir.Constant(I1, int(bool(e.value)))
    if e.dtype is DType.BF16:
        # The nearest bfloat16 (ml_dtypes rounds to nearest even, as the stores do).
        return ir.Constant(t, float(np.array(e.value, np.float32).astype(ml_dtypes.bfloat16)))
    if e.dtype.is_float:
        return ir.Constant(t, float(e.value))
    # Wrap to the type's width (e.g. a folded cast of 200 to int4), as the conversion would.
    bits = e.dtype.bits
    value = int(e.value) & ((1 << bits) - 1)
    if e.dtype.is_signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return ir.Constant(t, value)


def _used_buffers(s: Stmt) -> set[str]:
    names = {b.name for b, _ in loads_and_stores(s)}
    names |= {n.buffer.name for n in walk_stmts(s) if isinstance(n, Alloc)}
    return names
