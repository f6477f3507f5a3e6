"""Stage 2, graph passes: graph IR -> graph IR, same semantics, fewer and simpler nodes.

``run_passes`` applies, in order: :func:`.cleanup.cleanup` (constant folding,
Identity/Dropout removal, dead-code elimination),
:func:`.fold_batchnorm.fold_batchnorm`, :func:`.grouped_heads.share_kv_heads`
(grouped-query attention without the repeated K/V copy) and :func:`.few_rows.dot_few_rows` (a few
query rows against K as stored, not a transposed copy), each followed by cleanup. Fusion is a separate pass that the
caller runs after ``run_passes``; it is deliberately not called here.
"""

from __future__ import annotations

from compiler.graph.ir import Graph
from compiler.graph.passes.cleanup import cleanup
from compiler.graph.passes.few_rows import dot_few_rows
from compiler.graph.passes.fold_batchnorm import fold_batchnorm
from compiler.graph.passes.grouped_heads import share_kv_heads

__all__ = ["run_passes", "cleanup", "dot_few_rows", "fold_batchnorm", "share_kv_heads"]


def run_passes(graph: Graph) -> Graph:
    """Run the non-fusion passes on ``graph`` (in place) and return it."""
    graph = cleanup(graph)
    graph = fold_batchnorm(graph)
    graph = cleanup(share_kv_heads(graph))  # the repeat_kv nodes it bypasses are dead
    graph = cleanup(dot_few_rows(graph))  # a transpose it bypasses is dead
    # --- fusion goes here: the caller runs it after run_passes (not this module's job). ---
    return graph
