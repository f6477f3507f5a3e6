"""Rerun the ONNX conformance suite and rewrite expected_failures.txt from the outcomes.

    .venv/bin/python tests/conformance/update_expected_failures.py [-n 2] [--reclassify] [-k EXPR]

Every failing case is listed once, ``test_name  # reason``, grouped by reason. A case
that was already listed keeps its reason (edit reasons by hand, e.g. ``bug: ...``),
unless ``--reclassify`` is given; new failures get a reason derived from the error.
With ``-k`` only the selected cases are rerun: the others keep their entries.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from test_onnx_backend import EXPECTED_FAILURES, case_name, read_expected_failures  # noqa: E402

RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"}
TRAINING_OPS = {"Adagrad", "Adam", "Momentum", "Gradient"}
HEADER = """\
# ONNX backend conformance cases tilec is known to fail (tests/conformance/test_onnx_backend.py).
# One case per line: `test_name  # reason`, grouped by cause. Listed cases run as
# xfail(strict=True): a listed case that passes fails the suite, so remove it then.
# Regenerate: .venv/bin/python tests/conformance/update_expected_failures.py
"""


def model_ops() -> dict[str, list[str]]:
    """Case name -> op types of its model (top-level graph)."""
    import onnx
    from onnx.backend.test.loader import load_model_tests

    ops: dict[str, list[str]] = {}
    for kind in ("node", "simple", "pytorch-converted", "pytorch-operator"):
        for case in load_model_tests(kind=kind):
            model = case.model
            if model is None and case.model_dir:
                path = os.path.join(case.model_dir, "model.onnx")
                if not os.path.exists(path):
                    continue
                model = onnx.load(path)
            if model is not None:
                ops[case.name] = sorted({n.op_type for n in model.graph.node})
    return ops


def classify(message: str, ops: list[str]) -> str:
    first = message.strip().splitlines()[0] if message.strip() else ""
    if random := sorted(RANDOM_OPS & set(ops)):
        return f"random op ({', '.join(random)}): outputs differ per run"
    if training := sorted(TRAINING_OPS & set(ops)):
        return f"training op ({', '.join(training)})"
    if "DataDependentError" in first:
        return "data-dependent shape: a size is computed from run-time tensor data"
    if "unsupported operators" in message:
        missing = sorted(set(re.findall(r"^\s+([\w.]+) '", message, re.M)))
        return f"unsupported op {', '.join(missing)}"
    if m := re.search(r"ONNX element type (\w+) is not supported", message):
        return "string dtype" if m.group(1) == "STRING" else f"dtype {m.group(1)} not supported"
    if m := re.search(r"is a (sequence_type|optional_type|map_type)", message):
        return "non-tensor types (sequence/optional/map)"
    if "sequence" in first.lower() and "ValueError" in first:
        return "non-tensor types (sequence/optional/map)"
    if m := re.search(r"(\w+) '[^']*' \(opset \d+\): input \d+ \((\w+)\) must be a compile-time constant", message):
        return f"{m.group(1)}: input '{m.group(2)}' given at run time (tilec needs it constant)"
    if m := re.search(r"output \d+ of (\w+) '[^']*' \(opset \d+\)\) (?:has shape|could not be inferred)", message) or \
            re.search(r"of value '[^']*' \(output \d+ of (\w+)", message):
        return f"data-dependent or uninferable output shape ({m.group(1)})"
    if "symbolic" in message or "has no declared shape" in message or "graph input" in first and "inferred" in first:
        return "graph input without a static shape"
    if "store of a vector into one element" in message:
        return "bug: schedule vectorizes a reduction whose accumulator is a scalar (store of a vector into acc)"
    if "integer op pow" in message:
        return "bug: elementwise Pow on integers emits a pow the LLVM codegen lacks"
    if re.search(r"variable \w+ is not bound", message):
        return "bug: a zero-size tensor leaves a loop variable unbound (lowering/schedule of empty extents)"
    if m := re.search(r"UnsupportedOpError: (\w+) '[^']*' \(opset \d+\): ([^\n]*)", message):
        return f"{m.group(1)}: {m.group(2)[:100]}"
    if ("Not equal to tolerance" in message or "Mismatched elements" in message) and len(ops) > 4:
        return "wrong result (function-expanded graph of many ops)"
    if "Not equal to tolerance" in message or "Mismatched elements" in message or "mismatch" in message.lower():
        return f"wrong result ({', '.join(ops)})"
    text = re.sub(r"\s+", " ", first)[:140]
    return f"error: {text}" if text else "error"


def run_suite(workers: str, keyword: str | None) -> dict[str, str]:
    """Case name -> failure message, for every case that failed."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.xml")
        cmd = [sys.executable, "-m", "pytest", str(HERE / "test_onnx_backend.py"), "-q", "-p", "no:warnings",
               "-p", "no:cacheprovider", f"--junitxml={report}"]
        if workers not in ("0", ""):
            cmd += ["-n", workers]
        if keyword:
            cmd += ["-k", keyword]
        env = dict(os.environ, TILEC_CONFORMANCE_NO_XFAIL="1")
        subprocess.run(cmd, cwd=ROOT, env=env, check=False)
        failures, ran = {}, set()
        for tc in ET.parse(report).iter("testcase"):
            name = case_name(tc.get("name", ""))
            ran.add(name)
            bad = tc.find("failure")
            if bad is None:
                bad = tc.find("error")
            if bad is not None:
                failures[name] = (bad.get("message") or "") + "\n" + (bad.text or "")
        return failures, ran


def write(entries: dict[str, str], path: pathlib.Path = EXPECTED_FAILURES) -> None:
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for name, reason in entries.items():
        groups[reason].append(name)
    lines = [HEADER]
    for reason, names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"\n# --- {reason} ({len(names)})\n")
        width = max(len(n) for n in names)
        lines.extend(f"{n:<{width}}  # {reason}\n" for n in sorted(names))
    path.write_text("".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", default="2", help="pytest-xdist workers (0: in-process)")
    parser.add_argument("-k", default=None, help="only rerun cases matching this pytest -k expression")
    parser.add_argument("--reclassify", action="store_true", help="derive every reason again from the errors")
    args = parser.parse_args()
    old = read_expected_failures()
    failures, ran = run_suite(args.n, args.k)
    ops = model_ops()
    entries = {name: reason for name, reason in old.items() if name not in ran}
    for name, message in failures.items():
        keep = old.get(name) if not args.reclassify else None
        entries[name] = keep or classify(message, ops.get(name, []))
    write(entries)
    fixed = sorted(n for n in old if n in ran and n not in failures)
    print(f"{len(ran)} cases run, {len(failures)} failing; {len(fixed)} listed case(s) now pass; "
          f"{len(entries)} entries written to {EXPECTED_FAILURES}")


if __name__ == "__main__":
    main()
