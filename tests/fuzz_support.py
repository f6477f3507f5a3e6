"""Shared setup of the property-based fuzz tests (tests/runtime/test_fuzz_run_inputs.py,
tests/frontend/test_fuzz_models.py).

Every fuzz test is reproducible and bounded:

* ``fuzz_settings(n)``: at most ``n`` examples, derandomized (the same examples in the same order
  on every run and machine), no example database (nothing is written into the checkout), no
  per-example deadline (a compile takes a variable fraction of a second).
* ``bounded(seconds)``: wraps the test body so that once ``seconds`` of wall time are spent, the
  remaining examples pass without running; a slow machine runs a prefix of the same sequence. After
  a failure the budget is off, so hypothesis can replay and shrink the failing example.
* hypothesis keeps its files (a cache of the constants in the tested modules) in a per-user temporary
  folder, not in ``.hypothesis/`` of the checkout.
* ``watchdog(seconds)``: a hang is a bug too; past ``seconds`` faulthandler prints every thread's
  stack and ends the process (no pytest-timeout in the lock).
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import inspect
import os
import pathlib
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(pathlib.Path(tempfile.gettempdir()) / f"tilec-hypothesis-{os.getuid()}")


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    print_blob=False, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                            HealthCheck.filter_too_much])


@dataclass
class FuzzStats:
    """What one fuzz test did, for its summary line (pytest -s, or -rA shows it via the report)."""

    budget_s: float
    started: float | None = None
    ran: int = 0
    skipped: int = 0
    failing: bool = False
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def summary(self) -> str:
        elapsed = 0.0 if self.started is None else time.monotonic() - self.started
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.outcomes.items()))
        return f"{self.ran} examples in {elapsed:.1f} s ({self.skipped} past the budget skipped); {kinds}"


def bounded(seconds: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator (below ``@given``) limiting the wall time spent on new examples; see the module docstring.

    The body takes a keyword argument ``stats`` (its ``FuzzStats``, also ``wrapper.stats``), which the
    wrapper supplies and hides from pytest and hypothesis."""

    def decorate(body: Callable[..., Any]) -> Callable[..., Any]:
        stats = FuzzStats(seconds)

        @functools.wraps(body)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            now = time.monotonic()
            if stats.started is None:
                stats.started = now
            if not stats.failing and now - stats.started > seconds:
                stats.skipped += 1
                return None
            stats.ran += 1
            try:
                return body(*args, stats=stats, **kwargs)
            except BaseException:
                stats.failing = True
                raise

        signature = inspect.signature(body)
        del wrapper.__wrapped__  # type: ignore[attr-defined]
        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p for name, p in signature.parameters.items() if name != "stats"])
        wrapper.stats = stats  # type: ignore[attr-defined]
        return wrapper

    return decorate


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
