"""Fuzzing ``InferenceSession.run()``'s input validation (issue 17) on small compiled models.

Hypothesis draws a feed for one of five models (float32 Add + MatMul with two outputs, an int64
Gather with a run-time index check, a bool/float16 Where with a 0-d input, int4 / bfloat16 inputs
carried as codes, a zero-size input) and an ``output_names``, starting from valid values and
mutating them: names missing, extra, misspelled or not strings; every kind of numpy dtype (bool,
ints of both byte orders, float16..longdouble, complex, datetime, timedelta, str, bytes,
structured, object, ml_dtypes' types); wrong ranks and dimensions, 0-d and zero-size arrays,
huge dimensions made with broadcasting (nothing is allocated); layouts (Fortran order, negative
and other strides, broadcast, read-only, unaligned); subclasses (np.matrix, masked arrays);
non-arrays (lists, scalars, None, objects whose ``__array__`` raises, fake GPU tensors); and feeds
that are not dicts.

The oracle (``problems``) states the runtime's contract (runtime_stub/session.py) independently:
when it finds no problem the outputs must match a numpy reference exactly (up to float rounding of
the MatMul); otherwise ``run`` must raise the ``TilecError`` subclass for one of the problems, with
a message naming it (the input or output name, and what was expected and got). Anything else (an
exception type outside the hierarchy, a result where an error was due, a wrong result) fails.
"""

from __future__ import annotations

import collections
import pathlib
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import hypothesis.extra.numpy as hnp
import ml_dtypes
import numpy as np
import onnx
import pytest
from fuzz_support import bounded, fuzz_settings, watchdog
from helpers_onnx import compiled
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from runtime_stub import InferenceSession
from runtime_stub.errors import InvalidInputError, InvalidOutputNameError, TilecError

BUDGET_S = 40.0
MAX_EXAMPLES = 3000

# --- the models -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    dtype: np.dtype  # the API dtype run() takes
    shape: tuple[int, ...]
    ml_dtype: Any = None  # the ml_dtypes type also accepted (narrow types carried as codes)


@dataclass(frozen=True)
class Case:
    name: str
    model: onnx.ModelProto
    inputs: dict[str, InputSpec]
    outputs: tuple[str, ...]
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]  # API-form inputs -> outputs
    exact: bool = True  # False: float rounding may differ (a MatMul's summation order)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: list[onnx.TensorProto] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "fuzz", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


_vi = helper.make_tensor_value_info
GATHER_DATA = np.arange(15, dtype=np.float32).reshape(5, 3)


class GatherIndexOutOfRange(Exception):
    pass


def _gather_reference(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    idx = feed["idx"]
    if np.any((idx < -5) | (idx >= 5)):
        raise GatherIndexOutOfRange
    return {"out": GATHER_DATA[idx]}


def _int4_values(codes: np.ndarray) -> np.ndarray:
    low = (codes & 0x0F).astype(np.int8)
    return np.where(low >= 8, low - 16, low).astype(np.float32)


def _bfloat16_values(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


CASES = [
    Case("addmm",
         _model([helper.make_node("Add", ["x", "y"], ["z"]), helper.make_node("MatMul", ["z", "w"], ["o"])],
                [_vi("x", TensorProto.FLOAT, [2, 3]), _vi("y", TensorProto.FLOAT, [2, 3]),
                 _vi("w", TensorProto.FLOAT, [3, 4])],
                [_vi("z", TensorProto.FLOAT, [2, 3]), _vi("o", TensorProto.FLOAT, [2, 4])]),
         {"x": InputSpec(np.dtype(np.float32), (2, 3)), "y": InputSpec(np.dtype(np.float32), (2, 3)),
          "w": InputSpec(np.dtype(np.float32), (3, 4))},
         ("z", "o"),
         lambda f: {"z": f["x"] + f["y"], "o": (f["x"] + f["y"]) @ f["w"]}, exact=False),
    Case("gather",
         _model([helper.make_node("Gather", ["data", "idx"], ["out"], name="gather", axis=0)],
                [_vi("idx", TensorProto.INT64, [4])], [_vi("out", TensorProto.FLOAT, [4, 3])],
                [numpy_helper.from_array(GATHER_DATA, "data")]),
         {"idx": InputSpec(np.dtype(np.int64), (4,))}, ("out",), _gather_reference),
    Case("where",
         _model([helper.make_node("Where", ["c", "a", "b"], ["o"])],
                [_vi("c", TensorProto.BOOL, [3]), _vi("a", TensorProto.FLOAT16, [3]),
                 _vi("b", TensorProto.FLOAT16, [])],
                [_vi("o", TensorProto.FLOAT16, [3])]),
         {"c": InputSpec(np.dtype(np.bool_), (3,)), "a": InputSpec(np.dtype(np.float16), (3,)),
          "b": InputSpec(np.dtype(np.float16), ())},
         ("o",), lambda f: {"o": np.where(f["c"], f["a"], f["b"])}),
    Case("narrow",
         _model([helper.make_node("Cast", ["q"], ["qf"], to=TensorProto.FLOAT),
                 helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
                 helper.make_node("Add", ["qf", "hf"], ["s"])],
                [_vi("q", TensorProto.INT4, [2, 3]), _vi("h", TensorProto.BFLOAT16, [2, 3])],
                [_vi("s", TensorProto.FLOAT, [2, 3])]),
         {"q": InputSpec(np.dtype(np.uint8), (2, 3), ml_dtypes.int4),
          "h": InputSpec(np.dtype(np.uint16), (2, 3), ml_dtypes.bfloat16)},
         ("s",), lambda f: {"s": _int4_values(f["q"]) + _bfloat16_values(f["h"])}),
    Case("empty",
         _model([helper.make_node("Neg", ["e"], ["ne"])], [_vi("e", TensorProto.FLOAT, [0, 3])],
                [_vi("ne", TensorProto.FLOAT, [0, 3])]),
         {"e": InputSpec(np.dtype(np.float32), (0, 3))}, ("ne",), lambda f: {"ne": -f["e"]}),
]


@pytest.fixture(scope="module")
def sessions(compile_cache: pathlib.Path) -> dict[str, InferenceSession]:
    opened = {case.name: InferenceSession(compiled(case.model, compile_cache), threads=1) for case in CASES}
    yield opened
    for session in opened.values():
        session.close()


# --- values -----------------------------------------------------------------------------------------


class RaisingArray:
    """``__array__`` raises: the runtime must not call it (or must report it as a bad input)."""

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise RuntimeError("__array__ must not be called")


class ArrayLike:
    """Has ``__array__`` giving the right array, but is not a numpy array: the contract refuses it."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._array


class FakeCudaTensor:
    """A ``__cuda_array_interface__`` of drawn (often malformed) fields: a CPU artifact refuses it, naming the input."""

    def __init__(self, interface: Any) -> None:
        self.__cuda_array_interface__ = interface


class FakeDLPack:
    def __init__(self, device: Any, capsule: Any) -> None:
        self._device, self._capsule = device, capsule

    def __dlpack_device__(self) -> Any:
        return self._device

    def __dlpack__(self, stream: Any = None) -> Any:
        if isinstance(self._capsule, Exception):
            raise self._capsule
        return self._capsule


def _elements(spec: InputSpec) -> st.SearchStrategy:
    if spec.dtype == np.float32:
        return st.floats(-100, 100, width=32)  # validation is under test, not MatMul rounding at 1e38
    if spec.dtype == np.int64:
        return st.one_of(st.integers(-5, 4), st.integers(-5, 4), st.integers(-2**63, 2**63 - 1))
    return hnp.from_dtype(spec.dtype)  # bool, float16 (NaN, inf, subnormals), any uint8 / uint16 code


def _valid_array(draw: st.DrawFn, spec: InputSpec) -> np.ndarray:
    return draw(hnp.arrays(spec.dtype, spec.shape, elements=_elements(spec)))


def _layout(draw: st.DrawFn, array: np.ndarray, spec: InputSpec) -> Any:
    """The same values in another memory layout or container type (all valid but the masked one)."""
    kinds = ["as is", "fortran", "reversed", "strided", "read-only", "unaligned", "broadcast", "masked",
             "masked+mask", "scalar"]
    if array.ndim == 2:
        kinds.append("matrix")
    if spec.ml_dtype is not None:
        kinds.append("ml_dtypes")
    kind = draw(st.sampled_from(kinds))
    if kind == "fortran":
        return np.asfortranarray(array)
    if kind == "reversed" and array.ndim:
        return np.ascontiguousarray(array[::-1])[::-1]  # negative strides
    if kind == "strided":
        wide = np.zeros(tuple(2 * d + 1 for d in array.shape), dtype=array.dtype)
        view = wide[(*(slice(1, None, 2) for _ in array.shape), Ellipsis)]  # a 0-d view too
        view[...] = array
        return view
    if kind == "read-only":
        copy = array.copy()
        copy.setflags(write=False)
        return copy
    if kind == "unaligned" and array.dtype.itemsize > 1:
        raw = bytearray(array.nbytes + 1)
        unaligned = np.ndarray(array.shape, array.dtype, buffer=raw, offset=1)
        unaligned[...] = array
        return unaligned
    if kind == "broadcast" and array.ndim and array.shape[0] > 0:
        return np.broadcast_to(array[:1], array.shape)  # stride 0, read-only; the values differ
    if kind == "masked":
        return np.ma.masked_array(array, mask=np.zeros(array.shape, dtype=bool))
    if kind == "masked+mask" and array.size:
        mask = np.zeros(array.shape, dtype=bool)
        mask.flat[draw(st.integers(0, array.size - 1))] = True
        return np.ma.masked_array(array, mask=mask)
    if kind == "scalar" and array.ndim == 0:
        return array[()]  # an np.generic
    if kind == "matrix":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)  # numpy discourages np.matrix
            return np.asmatrix(array)
    if kind == "ml_dtypes":
        return array.view(spec.ml_dtype)
    return array


def _dtypes() -> st.SearchStrategy[np.dtype]:
    """Every kind of numpy dtype, both byte orders, plus ml_dtypes' types and object."""
    return st.one_of(
        hnp.boolean_dtypes(), hnp.integer_dtypes(endianness="?"), hnp.unsigned_integer_dtypes(endianness="?"),
        hnp.floating_dtypes(endianness="?", sizes=(16, 32, 64, 128)), hnp.complex_number_dtypes(endianness="?"),
        hnp.datetime64_dtypes(endianness="?"), hnp.timedelta64_dtypes(endianness="?"),
        hnp.unicode_string_dtypes(), hnp.byte_string_dtypes(), hnp.array_dtypes(allow_subarrays=True),
        st.just(np.dtype(object)), st.just(np.dtype("V4")),
        st.sampled_from([np.dtype(t) for t in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2,
                                               ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2,
                                               ml_dtypes.float4_e2m1fn)]))


def _wrong_shape(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    kind = draw(st.sampled_from(["random", "one dim off", "rank+1", "rank-1", "huge"]))
    if kind == "one dim off" and shape:
        axis = draw(st.integers(0, len(shape) - 1))
        dims = list(shape)
        dims[axis] = draw(st.sampled_from([0, 1, dims[axis] + 1, max(dims[axis] - 1, 0), 2 * dims[axis] + 7]))
        return tuple(dims)
    if kind == "rank+1":
        return (draw(st.sampled_from([1, 2])), *shape) if draw(st.booleans()) else (*shape, 1)
    if kind == "rank-1" and shape:
        return shape[1:]
    if kind == "huge":  # made with broadcasting by _sized: nothing is allocated
        return tuple(draw(st.lists(st.sampled_from([2**20, 2**31, 2**40, 3, 1, 0]), min_size=1, max_size=3)))
    return draw(hnp.array_shapes(min_dims=0, max_dims=6, min_side=0, max_side=6))


def _sized(dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """An array of ``dtype`` and ``shape`` that allocates at most one element (broadcast when large)."""
    dims = list(shape)
    # numpy's limit on an array's bytes, which it checks over the nonzero dimensions even when one is 0
    while int(np.prod([max(d, 1) for d in dims], dtype=object)) * max(dtype.itemsize, 1) >= 2**62:
        dims.pop(0)
    if int(np.prod(dims, dtype=object)) <= 4096:
        return np.zeros(dims, dtype=dtype)
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(dims))


def _non_array(draw: st.DrawFn, array: np.ndarray) -> Any:
    kind = draw(st.sampled_from(["list", "float", "int", "bool", "None", "str", "bytes", "dict", "raising __array__",
                                 "__array__", "memoryview", "tuple", "object", "cuda array interface", "dlpack"]))
    if kind == "list":
        return array.tolist()
    if kind == "float":
        return draw(st.floats(allow_nan=True))
    if kind == "int":
        return draw(st.integers())
    if kind == "bool":
        return draw(st.booleans())
    if kind == "None":
        return None
    if kind == "str":
        return draw(st.text(max_size=5))
    if kind == "bytes":
        return array.tobytes()
    if kind == "dict":
        return {"data": array}
    if kind == "raising __array__":
        return RaisingArray()
    if kind == "__array__":
        return ArrayLike(array)
    if kind == "memoryview":
        return memoryview(np.ascontiguousarray(array).view(np.uint8)) if array.size else memoryview(b"")
    if kind == "tuple":
        return tuple(array.reshape(-1).tolist())
    if kind == "object":
        return object()
    if kind == "cuda array interface":
        fields = {"shape": st.one_of(st.just(array.shape), st.integers(), st.none(), st.text(max_size=2)),
                  "typestr": st.one_of(st.just(array.dtype.str), st.text(max_size=4), st.integers()),
                  "data": st.one_of(st.tuples(st.integers(0, 2**64), st.booleans()), st.none(), st.text(max_size=3),
                                    st.tuples(st.floats(), st.booleans()), st.tuples(st.text(max_size=2), st.none())),
                  "version": st.integers(0, 4), "strides": st.one_of(st.none(), st.just((4, 1)), st.text(max_size=2)),
                  "stream": st.one_of(st.none(), st.integers(-2, 2**40), st.text(max_size=3), st.floats()),
                  "mask": st.one_of(st.none(), st.integers())}
        interface = draw(st.fixed_dictionaries({}, optional=fields))
        return FakeCudaTensor(draw(st.one_of(st.just(interface), st.just([1]), st.none())))
    capsule = draw(st.sampled_from([5, None, object(), RuntimeError("producer failed"), b"capsule"]))
    device = draw(st.sampled_from([(2, 0), (13, 1), (1, 0), ("cuda", 0), None, (2,)]))
    return FakeDLPack(device, capsule)


@st.composite
def input_values(draw: st.DrawFn, spec: InputSpec) -> Any:
    kind = draw(st.sampled_from(["valid"] * 6 + ["dtype", "shape", "dtype+shape", "non-array"]))
    if kind == "valid":
        return _layout(draw, _valid_array(draw, spec), spec)
    if kind == "dtype":
        return _sized(draw(_dtypes()), spec.shape)
    if kind == "shape":
        return _sized(spec.dtype, _wrong_shape(draw, spec.shape))
    if kind == "dtype+shape":
        return _sized(draw(_dtypes()), _wrong_shape(draw, spec.shape))
    return _non_array(draw, _valid_array(draw, spec))


class CustomFeed(Mapping):
    """A Mapping that is not a dict: the contract takes any Mapping."""

    def __init__(self, items: dict[Any, Any]) -> None:
        self._items = items

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


_NON_STR_KEYS = st.one_of(st.integers(), st.none(), st.binary(max_size=3), st.tuples(st.text(max_size=2)),
                          st.floats(allow_nan=False), st.frozensets(st.integers(), max_size=2))


@st.composite
def feeds(draw: st.DrawFn, case: Case) -> Any:
    feed: dict[Any, Any] = {name: draw(input_values(spec)) for name, spec in case.inputs.items()}
    for _ in range(draw(st.integers(0, 2))):
        mutation = draw(st.sampled_from(["drop", "extra", "rename", "non-str key"]))
        names = [k for k in feed if isinstance(k, str)]
        if mutation == "drop" and names:
            del feed[draw(st.sampled_from(names))]
        elif mutation == "extra":
            feed[draw(st.text(max_size=4))] = draw(input_values(InputSpec(np.dtype(np.float32), (2, 3))))
        elif mutation == "rename" and names:
            old = draw(st.sampled_from(names))
            new = draw(st.sampled_from([old.upper(), old + "_", " " + old, old + "\x00", old * 2, ""]))
            feed[new] = feed.pop(old)
        elif mutation == "non-str key":
            feed[draw(_NON_STR_KEYS)] = draw(input_values(next(iter(case.inputs.values()))))
    container = draw(st.sampled_from(["dict"] * 8 + ["OrderedDict", "mappingproxy", "Mapping", "items",
                                                     "None", "str", "keys", "tuple"]))
    if container == "OrderedDict":
        return collections.OrderedDict(feed)
    if container == "mappingproxy":
        return types.MappingProxyType(feed)
    if container == "Mapping":
        return CustomFeed(feed)
    if container == "items":
        return list(feed.items())
    if container == "None":
        return None
    if container == "str":
        return "x"
    if container == "keys":
        return set(k for k in feed if isinstance(k, str))
    if container == "tuple":
        return tuple(feed.values())
    return feed


_NAME_ENTRIES = lambda case: st.one_of(  # noqa: E731
    st.sampled_from(case.outputs), st.text(max_size=4), st.integers(), st.none(), st.binary(max_size=2),
    st.lists(st.sampled_from(case.outputs), max_size=1))


class Names:
    """An iterable of names that is neither a list nor a tuple (run() takes any iterable)."""

    def __init__(self, entries: list[Any]) -> None:
        self._entries = entries

    def __iter__(self):
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"Names({self._entries!r})"


@st.composite
def output_names(draw: st.DrawFn, case: Case) -> Any:
    # Mostly None: a bad output_names is reported before the feed is looked at.
    kind = draw(st.sampled_from(["None"] * 12 + ["list", "list", "tuple", "iterable", "str", "bytes", "int",
                                                "object"]))
    if kind == "None":
        return None
    if kind in ("list", "tuple", "iterable"):
        valid_only = draw(st.booleans())
        entries = draw(st.lists(st.sampled_from(case.outputs) if valid_only else _NAME_ENTRIES(case), max_size=4))
        return entries if kind == "list" else tuple(entries) if kind == "tuple" else Names(entries)
    if kind == "str":
        return draw(st.sampled_from(case.outputs))
    if kind == "bytes":
        return draw(st.sampled_from(case.outputs)).encode()
    if kind == "int":
        return draw(st.integers())
    return object()


# --- the oracle -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    error: type[TilecError]
    fragments: tuple[str, ...]  # each must appear in the message


def _input_problem(name: str, spec: InputSpec, value: Any) -> Problem | None:
    label = f"input {name!r}"
    if isinstance(value, (FakeCudaTensor, FakeDLPack)):
        device = value._device if isinstance(value, FakeDLPack) else None
        is_dlpack_cuda = isinstance(device, tuple) and len(device) == 2 and device[0] in (2, 13)
        if isinstance(value, FakeCudaTensor) and isinstance(value.__cuda_array_interface__, dict) or is_dlpack_cuda:
            return Problem(InvalidInputError, (label,))  # a GPU tensor (malformed or not) for a CPU artifact
    if not isinstance(value, (np.ndarray, np.generic)):
        return Problem(InvalidInputError, (label, "must be a numpy array", type(value).__name__))
    if isinstance(value, np.ma.MaskedArray) and np.ma.getmask(value) is not np.ma.nomask and value.mask.any():
        return Problem(InvalidInputError, (label, "masked"))
    array = np.asarray(value)
    ml_name = np.dtype(spec.ml_dtype).name if spec.ml_dtype is not None else None
    if array.dtype != spec.dtype and not (array.dtype.name == ml_name and array.dtype.itemsize == spec.dtype.itemsize):
        return Problem(InvalidInputError, (label, f"has dtype {array.dtype}", f"expected {spec.dtype}"))
    if array.shape != spec.shape:
        return Problem(InvalidInputError, (label, f"has shape {list(array.shape)}", f"expected {list(spec.shape)}"))
    return None


def problems(case: Case, feed: Any, names: Any) -> list[Problem]:
    """Everything wrong with the call, as the runtime's contract says; [] if it must succeed."""
    found: list[Problem] = []
    if names is not None:
        if isinstance(names, (str, bytes)):
            found.append(Problem(InvalidOutputNameError, ("output_names must be a list", repr(names))))
        elif not isinstance(names, (list, tuple, Names)):
            found.append(Problem(InvalidOutputNameError, ("output_names must be a list", type(names).__name__)))
        else:
            for entry in names:
                if not isinstance(entry, str):
                    found.append(Problem(InvalidOutputNameError, ("output_names holds", repr(entry))))
                elif entry not in case.outputs:
                    found.append(Problem(InvalidOutputNameError, (f"no output {entry!r}",)))
    if not isinstance(feed, Mapping):
        found.append(Problem(InvalidInputError, ("input_feed must be a dict", type(feed).__name__)))
        return found
    for key in feed:
        if not isinstance(key, str) or key not in case.inputs:
            found.append(Problem(InvalidInputError, ("unknown input(s)", repr(key))))
    for name, spec in case.inputs.items():
        if name not in feed:
            found.append(Problem(InvalidInputError, ("missing input(s)", repr(name))))
        else:
            problem = _input_problem(name, spec, feed[name])
            if problem is not None:
                found.append(problem)
    return found


def _api_form(spec: InputSpec, value: Any) -> np.ndarray:
    array = np.asarray(value)
    return array.view(spec.dtype) if array.dtype != spec.dtype else array


def _check_outputs(case: Case, feed: Mapping[str, Any], names: Any, got: list[np.ndarray]) -> None:
    want = case.reference({name: _api_form(spec, feed[name]) for name, spec in case.inputs.items()})
    selected = list(case.outputs) if names is None else list(names)
    assert len(got) == len(selected)
    for name, result in zip(selected, got):
        expected = np.asarray(want[name])
        assert type(result) is np.ndarray and result.dtype == expected.dtype and result.shape == expected.shape, \
            (name, type(result), result.dtype, result.shape, expected.dtype, expected.shape)
        if case.exact:
            np.testing.assert_array_equal(result, expected, err_msg=name)
        else:
            np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-3, err_msg=name)


# --- the test ---------------------------------------------------------------------------------------


@st.composite
def calls(draw: st.DrawFn) -> tuple[Case, Any, Any]:
    case = draw(st.sampled_from(CASES))
    return case, draw(feeds(case)), draw(output_names(case))


@fuzz_settings(MAX_EXAMPLES)
@given(call=calls())
@bounded(BUDGET_S)
def test_fuzz_run_validates_inputs(sessions: dict[str, InferenceSession], call: tuple[Case, Any, Any], *,
                                   stats) -> None:
    case, feed, names = call
    expected_problems = problems(case, feed, names)
    with watchdog(60):
        try:
            got = sessions[case.name].run(names, feed)
        except TilecError as exc:
            message = str(exc)
            index_problem = (not expected_problems and case.name == "gather"
                             and isinstance(exc, InvalidInputError) and "out of range" in message and "idx" in message)
            if index_problem:
                with pytest.raises(GatherIndexOutOfRange):
                    _check_outputs(case, feed, names, [])
                stats.count("index out of range")
                return
            assert expected_problems, f"{case.name}: run raised {exc!r} for a valid call"
            assert any(isinstance(exc, p.error) and all(f in message for f in p.fragments) for p in expected_problems), \
                f"{case.name}: {type(exc).__name__}({message!r}) names none of {expected_problems}"
            stats.count(type(exc).__name__)
            return
    assert not expected_problems, f"{case.name}: run succeeded although {expected_problems}"
    _check_outputs(case, feed, names, got)
    stats.count("ran")


def test_fuzz_run_summary() -> None:
    """Reports what the fuzz test above did (visible with -s / -rA); fails if it tried too few examples."""
    stats = test_fuzz_run_validates_inputs.hypothesis.inner_test.stats
    print(f"run() input fuzzing: {stats.summary()}")
    if stats.started is not None:
        assert stats.ran >= 200, stats.summary()
