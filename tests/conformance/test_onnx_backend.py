"""ONNX's backend conformance suite (node, simple, pytorch-converted, pytorch-operator cases) on tilec.

Every case compiles its model with ``compiler.backend`` and compares the outputs
with ONNX's reference data. Cases known to fail are listed in
``expected_failures.txt`` (``test_name  # reason``) and marked
``xfail(strict=True)``: a listed case that starts passing fails the run, so the
list stays honest; ``update_expected_failures.py`` rewrites it.

The run ends with a summary (``counts.py``, loaded by tests/conftest.py): how many passing
cases the compiled artifact computed from run-time input data and how many were folded at
compile time (every output a constant of the artifact), with the folded ones' names.

Environment: ``TILEC_CONFORMANCE_NO_XFAIL=1`` ignores the list (the update script
uses it to see every outcome); ``TILEC_BACKEND_CACHE`` keeps compiled artifacts.
"""

from __future__ import annotations

import os
import pathlib
import re

import onnx.backend.test
import pytest

import compiler.backend

HERE = pathlib.Path(__file__).parent
EXPECTED_FAILURES = HERE / "expected_failures.txt"

# Case groups the suite runs; ONNX's "real" model cases need network downloads and are excluded.
INCLUDE = [r"^test_"]
EXCLUDE = [
    r"^OnnxBackendRealModelTest",
]


def read_expected_failures(path: pathlib.Path = EXPECTED_FAILURES) -> dict[str, str]:
    """``{case name: reason}`` from the list (comments and blank lines ignored)."""
    cases: dict[str, str] = {}
    if not path.exists():
        return cases
    for line in path.read_text().splitlines():
        name, _, reason = line.partition("#")
        name = name.strip()
        if name:
            cases[name] = reason.strip()
    return cases


def case_name(method: str) -> str:
    """``test_abs_cpu`` -> ``test_abs`` (the list names cases device-independently)."""
    return re.sub(r"_cpu$", "", method)


backend_test = onnx.backend.test.BackendTest(compiler.backend, __name__)
for pattern in INCLUDE:
    backend_test.include(pattern)

_test_cases = backend_test.test_cases
_test_cases.pop("OnnxBackendRealModelTest", None)  # downloads; never run here



def _prepare(cls: type, expected: dict[str, str]) -> None:
    for attr in [a for a in vars(cls) if a.startswith("test_")]:
        if not attr.endswith("_cpu"):
            delattr(cls, attr)  # other devices: tilec's backend runs on CPU only
        elif case_name(attr) in expected:
            mark = pytest.mark.xfail(strict=True, reason=expected[case_name(attr)] or "expected failure")
            setattr(cls, attr, mark(getattr(cls, attr)))


for _cls in _test_cases.values():
    _prepare(_cls, {} if os.environ.get("TILEC_CONFORMANCE_NO_XFAIL") else read_expected_failures())
del _cls

globals().update(_test_cases)
