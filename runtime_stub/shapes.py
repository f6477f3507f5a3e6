"""Binding an artifact's symbolic dimensions (size variables) from the shapes of a run's inputs.

Contract: ``SizeVariables(manifest)`` reads the manifest's ``dims`` (each ``{name, min, max}``, in the
order of the native ``dims`` array; a *value size* also has ``value: [input, index]``, an element of an
integer input of static shape that sets a shape at run time: a Reduce's axes). ``bind(args, shapes,
arrays)`` takes each input's declared shape (ints, and names of size variables), the shape the caller
passed and the array itself, and returns the value of every size variable as the native code takes it,
or raises ``InvalidInputError`` naming the input, the axis (or element), the variable, and its range or
the conflicting value: a wrong rank or fixed dim, two inputs that disagree on one variable, a value
outside the variable's range, a variable no input sets. Reading a value size is the one look at input
data here: bookkeeping, no arithmetic. ``binder(names, declared)`` is ``bind`` planned once for a
session's inputs. Only the standard library: the caller makes the int64 array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from runtime_stub.errors import CorruptArtifactError, InvalidInputError

Dim = int | str


@dataclass(frozen=True)
class SizeRange:
    name: str
    lo: int
    hi: int
    value: tuple[str, int] | None = None  # (input, element index) for a value size


# A float (OneHot's depth) truncates, as onnxruntime; a bool (an If's condition, as in optimum's
# ``use_cache_branch``) reads as 0 or 1.
_VALUE_DTYPES = ("int32", "int64", "float32", "float64", "bool")


class SizeVariables:
    def __init__(self, manifest: Mapping[str, Any]) -> None:
        entries = manifest.get("dims", [])
        try:
            self.ranges = [SizeRange(str(e["name"]), int(e["min"]), int(e["max"]), _value_source(e)) for e in entries]
            inputs = {str(e["name"]): e for e in manifest.get("inputs", [])}
        except (TypeError, KeyError, ValueError):
            raise CorruptArtifactError(f"the manifest's 'dims' is malformed: {entries!r}") from None
        self._index = {r.name: k for k, r in enumerate(self.ranges)}
        if len(self._index) != len(self.ranges) or any(not r.lo <= r.hi or (r.lo < 0 and r.value is None)
                                                       for r in self.ranges):
            raise CorruptArtifactError(f"the manifest's 'dims' is malformed: {entries!r}")
        for r in self.ranges:
            if r.value is not None and not _holds(inputs.get(r.value[0]), r.value[1]):
                raise CorruptArtifactError(f"size variable {r.name!r} is read from element {r.value[1]} of input "
                                           f"{r.value[0]!r}, which has no such integer element")

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def check_declared(self, name: str, shape: Sequence[Dim]) -> None:
        """An input's declared symbolic dims must be size variables (the manifest is trusted only so far)."""
        for d in shape:
            if isinstance(d, str) and d not in self._index:
                raise CorruptArtifactError(f"input {name!r} has dim {d!r}, which is no size variable of the manifest")

    def binder(self, names: Sequence[str], declared: Sequence[Sequence[Dim]]) -> Callable[[Sequence[Sequence[int]],
                                                                                         Sequence[Any]], list[int]]:
        """``bind`` for these inputs, planned once: a run's shapes are checked against per-input lists of
        fixed dims and variables; anything amiss is handed to ``bind`` for its message."""
        position = {name: k for k, name in enumerate(names)}
        values = [(k, position[r.value[0]], r.value[1], r.lo, r.hi) for k, r in enumerate(self.ranges)
                  if r.value is not None]
        plan = [(len(want), [(axis, d) for axis, d in enumerate(want) if isinstance(d, int)],
                 [(axis, self._index[d]) for axis, d in enumerate(want) if not isinstance(d, int)]) for want in declared]
        lo = [r.lo for r in self.ranges]
        hi = [r.hi for r in self.ranges]
        count = len(self.ranges)

        def bind_fast(shapes: Sequence[Sequence[int]], arrays: Sequence[Any]) -> list[int]:
            bound: list[Any] = [None] * count
            try:
                for k, source, element, low, high in values:
                    n = int(arrays[source].reshape(-1)[element])
                    if not low <= n <= high:
                        raise ValueError
                    bound[k] = n
                for (rank, fixed, variables), have in zip(plan, shapes):
                    if len(have) != rank or any(have[axis] != d for axis, d in fixed):
                        raise ValueError
                    for axis, k in variables:
                        n, v = have[axis], bound[k]
                        if v is None:
                            if not lo[k] <= n <= hi[k]:
                                raise ValueError
                            bound[k] = n
                        elif v != n:
                            raise ValueError
                if None in bound:
                    raise ValueError
            except (ValueError, OverflowError, TypeError):
                return self.bind(names, declared, shapes, arrays)  # raises the error that names the problem
            return bound

        return bind_fast

    def bind(self, names: Sequence[str], declared: Sequence[Sequence[Dim]], shapes: Sequence[Sequence[int]],
             arrays: Sequence[Any]) -> list[int]:
        values: list[int | None] = [None] * len(self.ranges)
        source: list[tuple[str, int]] = [("", 0)] * len(self.ranges)
        by_name = dict(zip(names, arrays))
        for k, r in enumerate(self.ranges):
            if r.value is None:
                continue
            name, element = r.value
            raw = by_name[name].reshape(-1)[element]
            try:
                n = int(raw)
            except (ValueError, OverflowError):  # NaN, infinity
                raise InvalidInputError(f"input {name!r} element {element} is {raw}, which sets a size and must be "
                                        "a finite number") from None
            if not r.lo <= n <= r.hi:
                raise InvalidInputError(f"input {name!r} element {element} is {n}, outside the range tilec compiled "
                                        f"for it: [{r.lo}, {r.hi}]")
            values[k] = n
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


def _value_source(entry: Mapping[str, Any]) -> tuple[str, int] | None:
    if "value" not in entry:
        return None
    name, element = entry["value"]
    return str(name), int(element)


def _holds(spec: Mapping[str, Any] | None, element: int) -> bool:
    """Whether the input ``spec`` (a manifest entry) is an integer tensor of static shape with that element."""
    if spec is None or spec.get("dtype") not in _VALUE_DTYPES:
        return False
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        return False
    count = 1
    for d in shape:
        count *= d
    return 0 <= element < count


def _shape_text(shape: Sequence[Dim]) -> str:
    return f"[{', '.join(map(str, shape))}]"
