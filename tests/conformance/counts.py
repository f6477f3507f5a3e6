"""Honest conformance counts: which passing ONNX backend cases the compiled artifact computed.

The ONNX backend compiles integer / scalar graph inputs that set a shape in as constants
(``compiler.backend``), and some cases then leave an artifact whose outputs are constants
computed at compile time. Each backend case's test call runs under
``compiler.backend.record_runs()``; the case is counted as **computed by the artifact** when
``compiler.backend.computed_by_artifact`` says so (every run of it computed at least one
output from run-time input data, as the artifact's manifest records per output:
``computed_from``), else as **folded at compile time**. The verdict travels in the report's
``user_properties`` (``("tilec_conformance", "computed" | "folded")``), which pytest-xdist
workers send to the controller, where ``pytest_terminal_summary`` counts them.

A pytest plugin that tests/conftest.py loads (``pytest_plugins``), not a conftest.py here: the
pytest-xdist controller collects nothing, so with ``make test`` (``pytest -n 2`` from the root,
testpaths ``tests``) it would never import a conftest.py of tests/conformance and print no summary.
"""

from __future__ import annotations

import textwrap
from typing import Iterator

import pytest

PROPERTY = "tilec_conformance"


def is_backend_case(item_or_report: pytest.Item | pytest.TestReport) -> bool:
    nodeid = item_or_report.nodeid
    return nodeid.split("::", 1)[0].endswith("conformance/test_onnx_backend.py")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if not is_backend_case(item):
        yield
        return
    import compiler.backend

    with compiler.backend.record_runs() as runs:
        yield
    # item.user_properties becomes the call report's user_properties (pytest copies it at makereport).
    item.user_properties.append((PROPERTY, classify(runs)))


def classify(runs) -> str:
    """``"computed"`` when the case's runs (``compiler.backend.BackendRun``s) computed its outputs from
    run-time input data (``compiler.backend.computed_by_artifact``), else ``"folded"``."""
    import compiler.backend

    return "computed" if compiler.backend.computed_by_artifact(runs) else "folded"


def verdict(report: pytest.TestReport) -> str | None:
    for name, value in report.user_properties:
        if name == PROPERTY:
            return value
    return None


def case_label(nodeid: str) -> str:
    """``...test_onnx_backend.py::OnnxBackendNodeModelTest::test_abs_cpu`` -> ``test_abs``."""
    name = nodeid.rsplit("::", 1)[-1]
    return name[: -len("_cpu")] if name.endswith("_cpu") else name


def conformance_counts(stats: dict[str, list]) -> dict[str, list[str]]:
    """Backend cases by outcome from the terminal reporter's ``stats``: computed and folded (passed), failed
    (a failure or error in any phase; a strict xfail that passed is one), xfailed, skipped. A passed case
    without a verdict never ran under the recorder: counted as folded, not as computed."""
    outcome: dict[str, str] = {}
    for category in ("passed", "xpassed", "failed", "error", "xfailed", "skipped"):
        for report in stats.get(category, []):
            if not isinstance(report, pytest.TestReport) or not is_backend_case(report):
                continue
            if category in ("passed", "xpassed"):  # xpassed: a non-strict xfail that passed (the list's are strict)
                if report.when == "call":
                    outcome.setdefault(report.nodeid, verdict(report) or "folded")
            elif category in ("failed", "error"):
                outcome[report.nodeid] = "failed"
            else:
                outcome.setdefault(report.nodeid, category)
    counts: dict[str, list[str]] = {k: [] for k in ("computed", "folded", "failed", "xfailed", "skipped")}
    for nodeid, kind in outcome.items():
        counts[kind].append(case_label(nodeid))
    return {k: sorted(v) for k, v in counts.items()}


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    counts = conformance_counts(terminalreporter.stats)
    if not any(counts.values()):
        return
    tr = terminalreporter
    tr.write_sep("=", "tilec ONNX conformance")
    tr.write_line(f"{len(counts['computed'])} cases computed by the artifact, "
                  f"{len(counts['folded'])} cases folded at compile time "
                  f"(passed, outputs constant); {len(counts['failed'])} failed, {len(counts['xfailed'])} xfailed, "
                  f"{len(counts['skipped'])} skipped")
    if counts["folded"]:
        width = max(60, getattr(getattr(tr, "_tw", None), "fullwidth", 100))
        for line in textwrap.wrap(f"folded at compile time: {' '.join(counts['folded'])}", width,
                                  subsequent_indent="  ", break_on_hyphens=False):
            tr.write_line(line)
