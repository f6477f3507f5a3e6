"""Kernels equal up to names (the same layer repeated) share one LLVM function: the codegen
compiles each distinct kernel once, and every call still gets its own buffers."""

from __future__ import annotations

import numpy as np

from compiler.codegen.llvm.module import build_module
from compiler.codegen.target import resolve_target
from compiler.frontend import load_graph
from compiler.graph.passes import run_passes
from compiler.loopir.stmt import For, canonical_kernel, walk_stmts
from compiler.lowering.driver import lower_graph
from helpers_onnx import graph_model, rand
from onnx import helper

HOST = resolve_target("host")


def _three_layers(widths: tuple[int, int, int]):
    """x -> (MatMul + Relu) three times, the weights all different, the widths as given."""
    nodes, consts, previous = [], {}, "x"
    rows = 48
    width_in = 48
    for k, width in enumerate(widths):
        consts[f"w{k}"] = rand((width_in, width), seed=k) / np.float32(np.sqrt(width_in))  # keeps magnitudes ~1
        nodes += [helper.make_node("MatMul", [previous, f"w{k}"], [f"h{k}"]),
                  helper.make_node("Relu", [f"h{k}"], [f"y{k}"])]
        previous, width_in = f"y{k}", width
    feeds = {"x": rand((rows, 48), seed=9)}
    return graph_model(nodes, feeds, [previous], consts=consts), feeds


def _lowered(model):
    return lower_graph(run_passes(load_graph(model)), HOST)


def test_repeated_layers_compile_to_one_function(check):
    model, feeds = _three_layers((48, 48, 48))  # the 2nd and 3rd layers are the same computation
    program = _lowered(model)
    forms = [canonical_kernel(c.kernel) for c in program.calls]
    assert len(program.calls) == 3 and len(set(forms)) < len(forms)
    functions = [f for f in build_module(program.calls, HOST).functions if f.name.startswith("k")
                 and not f.is_declaration and ".par" not in f.name]
    assert len(functions) == len(set(forms))
    check(model, feeds)  # and each call still reads its own weights and writes its own output


def test_kernels_of_other_shapes_stay_apart():
    model, _ = _three_layers((48, 40, 56))
    forms = [canonical_kernel(c.kernel) for c in _lowered(model).calls]
    assert len(set(forms)) == len(forms)


def test_the_canonical_form_forgets_names_only():
    (a, b, c) = _lowered(_three_layers((48, 48, 48))[0]).calls
    assert a.kernel.name != b.kernel.name and canonical_kernel(b.kernel) == canonical_kernel(c.kernel)
    form = canonical_kernel(b.kernel)
    assert [p.name for p in form.params] == [f"p{i}" for i in range(len(form.params))]
    assert [(p.dtype, p.shape) for p in form.params] == [(p.dtype, p.shape) for p in b.kernel.params]
    assert np.all([p.name not in str(form.body) for p in b.kernel.params])
    loops = [n.var.name for n in walk_stmts(form.body) if isinstance(n, For)]
    assert loops and all(name.startswith("v") for name in loops)


def test_an_encoders_layers_share_their_kernels():
    """Loop variables named after tensors (packing loops) must not keep two layers apart."""
    from compiler.models.transformer import encoder

    calls = _lowered(encoder(layers=3, hidden=64, heads=4, seq=16)).calls
    per_layer = len(calls) // 3
    assert len({canonical_kernel(c.kernel) for c in calls}) <= per_layer + 2
