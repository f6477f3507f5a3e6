"""The table of ONNX ops tilec lowers: op type → ``OpDef``.

Each op family module exports ``OPS``, a list of ``OpDef`` made with ``defop``;
this module merges them into one read-only mapping. ``kind`` tells the fusion
pass how an op may be grouped: ``elementwise`` (output index = input index,
fusable into its producer's epilogue), ``view`` (same bytes, new shape: no
kernel at all) or ``compute`` (anything else).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from compiler.ops.api import LoweringContext, Tensor

Lowering = Callable[[LoweringContext], list[Tensor]]
KINDS = ("elementwise", "view", "compute")


@dataclass(frozen=True)
class OpDef:
    op_type: str
    lower: Lowering
    kind: str = "compute"
    domain: str = ""
    since: int = 1  # the oldest opset version this lowering handles

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind


def defop(op_type: str, lower: Lowering, kind: str = "compute", since: int = 1, domain: str = "") -> OpDef:
    return OpDef(op_type, lower, kind, domain, since)


def _build() -> Mapping[tuple[str, str], OpDef]:
    """Every ``OPS`` list of the op family modules in this package (found by listing it, so adding a
    family is adding a module)."""
    import importlib
    import pkgutil

    import compiler.ops as package

    table: dict[tuple[str, str], OpDef] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for op in getattr(module, "OPS", ()):
            key = (op.domain, op.op_type)
            assert key not in table, f"{op.op_type} defined twice"
            table[key] = op
    return MappingProxyType(table)


OPS: Mapping[tuple[str, str], OpDef] = _build()


def lookup(op_type: str, domain: str = "") -> OpDef | None:
    return OPS.get(("" if domain == "ai.onnx" else domain, op_type))
