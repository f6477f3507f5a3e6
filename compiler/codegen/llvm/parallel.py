"""LLVM's work on several cores: jobs run in forked child processes.

llvmlite serialises every call into LLVM behind one process-wide lock, so threads cannot share the
work; processes can. A forked child inherits the lowered kernels, so nothing but each job's result
(an object file) crosses back.

Contract:

* ``run_jobs(jobs, on_done)`` is ``[job() for job in jobs]``, in order, calling ``on_done(index)`` here as
  each job finishes (progress). With more than one job, more than one CPU
  available to this process, ``fork`` on this platform and no other Python thread running (a child forked
  beside another thread could inherit a lock that thread holds, llvmlite's among them), the jobs run in
  forked children, as many at a time as there are CPUs (``TILEC_COMPILE_JOBS`` caps it; 1 means
  serially); otherwise here, one after another. The results are the same either way.
* A job's exception is raised here as itself (or, if it cannot be pickled, as a ``ToolchainError`` with
  its text); a child that dies without a result (a signal, a crash in LLVM) is a ``ToolchainError``
  naming how it ended. On any failure or interrupt the other children are killed and reaped.
"""

from __future__ import annotations

import os
import pickle
import signal
import tempfile
import threading
import time
from typing import Callable, Sequence, TypeVar

from compiler.errors import ToolchainError

T = TypeVar("T")
POLL_S = 0.005  # a job takes 0.1-5 s; this is how late its end may be seen


def run_jobs(jobs: Sequence[Callable[[], T]], on_done: Callable[[int], None] | None = None) -> list[T]:
    """``on_done(index)`` is called here as each job finishes."""
    done = on_done or (lambda index: None)
    workers = _workers(len(jobs))
    if workers > 1:
        return _forked(jobs, workers, done)
    results = []
    for index, job in enumerate(jobs):
        results.append(job())
        done(index)
    return results


def _workers(jobs: int) -> int:
    if jobs <= 1 or not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cap = os.environ.get("TILEC_COMPILE_JOBS", "")
    if cap.isdigit() and int(cap) > 0:
        cpus = min(cpus, int(cap))
    return min(cpus, jobs)


def _forked(jobs: Sequence[Callable[[], T]], workers: int, on_done: Callable[[int], None] = lambda index: None) -> list[T]:
    results: list[T | None] = [None] * len(jobs)
    running: dict[int, int] = {}  # pid -> job index
    with tempfile.TemporaryDirectory(prefix="tilec-llvm-") as tmp:
        paths = [os.path.join(tmp, f"job{i}.pickle") for i in range(len(jobs))]
        waiting = list(range(len(jobs)))
        try:
            while waiting or running:
                while waiting and len(running) < workers:
                    index = waiting.pop(0)
                    running[_start(jobs[index], paths[index])] = index
                ended = [(running.pop(pid), status) for pid, status in _finished(running)]
                for index, status in ended:
                    results[index] = _result(paths[index], status, index)
                    on_done(index)
        finally:
            for pid in running:  # still running after a failure or an interrupt
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    return results  # type: ignore[return-value]


def _finished(running: dict[int, int]) -> list[tuple[int, int]]:
    """The children of ``running`` that have ended (pid, status), waiting until one has. Only our own pids
    are waited for: another part of the program may have children of its own."""
    while True:
        done = []
        for pid in running:
            ended, status = os.waitpid(pid, os.WNOHANG)
            if ended:
                done.append((pid, status))
        if done:
            return done
        time.sleep(POLL_S)


def _start(job: Callable[[], object], path: str) -> int:
    pid = os.fork()
    if pid:
        return pid
    # The child: run the job, leave its outcome in ``path``, and never return into the parent's code.
    try:
        try:
            outcome: tuple[bool, object] = (True, job())
        except BaseException as exc:  # noqa: BLE001 - carried to the parent, raised there
            outcome = (False, exc)
        try:
            data = pickle.dumps(outcome)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text does
            data = pickle.dumps((False, ToolchainError(f"LLVM code generation failed: {outcome[1]!r}")))
        with open(path, "wb") as f:
            f.write(data)
    finally:
        os._exit(0)


def _result(path: str, status: int, index: int) -> object:
    try:
        with open(path, "rb") as f:
            ok, value = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        how = (f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exited with status {os.WEXITSTATUS(status)}")
        raise ToolchainError(f"LLVM code generation of module part {index} {how} without a result") from None
    if not ok:
        raise value  # type: ignore[misc]
    return value
