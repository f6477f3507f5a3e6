"""Fixtures for runtime tests: the fake model of runtime_fake_model.py, linked and written as an artifact."""

from __future__ import annotations

import copy
import pathlib
import sys
from typing import Any, Callable

import pytest
from runtime_fake_model import FAKE_MODEL_C, HOST_ARCH, HOST_TRIPLE, WEIGHTS, compile_c, fake_manifest

from compiler.artifact.format import write_artifact
from compiler.codegen.link import link_shared_object


@pytest.fixture(scope="session")
def fake_native(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if sys.platform != "linux" or HOST_ARCH not in ("x86_64", "aarch64"):
        pytest.skip("the fake model runs on x86_64 or aarch64 Linux only")
    obj = compile_c(FAKE_MODEL_C, HOST_TRIPLE, tmp_path_factory.mktemp("fake_obj"))
    return link_shared_object([obj], HOST_TRIPLE, None)


@pytest.fixture
def make_artifact(tmp_path: pathlib.Path, fake_native: bytes) -> Callable[..., pathlib.Path]:
    """Write the fake artifact; ``edit(manifest)`` may change the manifest first."""

    def make(name: str = "fake.tilec", edit: Callable[[dict[str, Any]], None] | None = None) -> pathlib.Path:
        manifest = copy.deepcopy(fake_manifest())
        if edit is not None:
            edit(manifest)
        return write_artifact(tmp_path / name, manifest, {"native": fake_native, "weights": WEIGHTS.tobytes()})

    return make


@pytest.fixture
def fake_artifact(make_artifact: Callable[..., pathlib.Path]) -> pathlib.Path:
    return make_artifact()
