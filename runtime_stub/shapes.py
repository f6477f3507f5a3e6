"""Binding an artifact's symbolic dimensions (size variables) from the shapes of a run's inputs.

Contract: ``SizeVariables(manifest)`` reads the manifest's ``dims`` (each ``{name, min, max}``, in the
order of the native ``dims`` array). ``bind(args, shapes)`` takes each input's declared shape (ints,
and names of size variables) and the shape the caller passed, and returns the value of every size
variable as the native code takes it, or raises ``InvalidInputError`` naming the input, the axis,
the variable, and its range or the conflicting value: a wrong rank or fixed dim, two inputs that
disagree on one variable, a value outside the variable's range, a variable no input sets. Only the
standard library: the caller makes the int64 array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from runtime_stub.errors import CorruptArtifactError, InvalidInputError

Dim = int | str


@dataclass(frozen=True)
class SizeRange:
    name: str
    lo: int
    hi: int


class SizeVariables:
    def __init__(self, manifest: Mapping[str, Any]) -> None:
        entries = manifest.get("dims", [])
        try:
            self.ranges = [SizeRange(str(e["name"]), int(e["min"]), int(e["max"])) for e in entries]
        except (TypeError, KeyError, ValueError):
            raise CorruptArtifactError(f"the manifest's 'dims' is malformed: {entries!r}") from None
        self._index = {r.name: k for k, r in enumerate(self.ranges)}
        if len(self._index) != len(self.ranges) or any(not 0 <= r.lo <= r.hi for r in self.ranges):
            raise CorruptArtifactError(f"the manifest's 'dims' is malformed: {entries!r}")

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def check_declared(self, name: str, shape: Sequence[Dim]) -> None:
        """An input's declared symbolic dims must be size variables (the manifest is trusted only so far)."""
        for d in shape:
            if isinstance(d, str) and d not in self._index:
                raise CorruptArtifactError(f"input {name!r} has dim {d!r}, which is no size variable of the manifest")

    def bind(self, names: Sequence[str], declared: Sequence[Sequence[Dim]], shapes: Sequence[Sequence[int]]) -> list[int]:
        values: list[int | None] = [None] * len(self.ranges)
        source: list[tuple[str, int]] = [("", 0)] * len(self.ranges)
        for name, want, have in zip(names, declared, shapes):
            if len(have) != len(want):
                raise InvalidInputError(f"input {name!r} has shape {list(have)} of rank {len(have)}, expected rank "
                                        f"{len(want)}: {_shape_text(want)}")
            for axis, (d, n) in enumerate(zip(want, have)):
                if isinstance(d, int):
                    if n != d:
                        raise InvalidInputError(f"input {name!r} has shape {list(have)}, expected {_shape_text(want)}: "
                                                f"axis {axis} must be {d}")
                    continue
                k = self._index[d]
                r = self.ranges[k]
                if values[k] is None:
                    if not r.lo <= n <= r.hi:
                        raise InvalidInputError(f"input {name!r} axis {axis} ({d}) is {n}, outside the compiled range "
                                                f"of {d}: [{r.lo}, {r.hi}] (compile with --dim {d}=MIN:MAX to change it)")
                    values[k], source[k] = n, (name, axis)
                elif values[k] != n:
                    first, first_axis = source[k]
                    raise InvalidInputError(f"inputs disagree on {d!r}: input {first!r} axis {first_axis} has "
                                            f"{values[k]}, input {name!r} axis {axis} has {n}")
        unset = [r.name for r, v in zip(self.ranges, values) if v is None]
        if unset:
            raise CorruptArtifactError(f"no input sets the size variable(s) {', '.join(unset)}")
        return [int(v) for v in values]  # type: ignore[arg-type]


def _shape_text(shape: Sequence[Dim]) -> str:
    return f"[{', '.join(map(str, shape))}]"
