"""What an install (a wheel of pyproject.toml) carries: every non-Python file the compiler reads at run time.

The editable install of ``make setup`` reads them from the checkout, so a file that the packaging
leaves out only breaks ``pip install .`` users (it did: the CUDA templates were left out).
"""

from __future__ import annotations

import fnmatch
import pathlib
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA_SUFFIXES = {".j2", ".c", ".h"}


def test_every_data_file_is_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    includes = config["packages"]["find"]["include"]
    package_data = config["package-data"]
    data_files = [p for top in ("compiler", "codegen_templates") for p in (REPO / top).rglob("*")
                  if p.suffix in DATA_SUFFIXES]
    assert any(p.suffix == ".j2" for p in data_files) and any(p.suffix == ".c" for p in data_files)
    for path in data_files:
        # The nearest enclosing package (a folder with __init__.py) owns the file.
        package_dir = next(d for d in path.parents if (d / "__init__.py").exists())
        package = ".".join(package_dir.relative_to(REPO).parts)
        assert any(fnmatch.fnmatch(package, pattern) for pattern in includes), f"{package} is not packaged"
        relative = path.relative_to(package_dir).as_posix()
        globs = package_data.get(package, [])
        assert any(fnmatch.fnmatch(relative, g) for g in globs), f"{path.relative_to(REPO)} is not package data"


def _lock() -> dict[str, str]:
    """requirements.lock as {normalized name: version}."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements.lock: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_every_dependency_within_pyproject_ranges() -> None:
    """The lock that `make setup` installs satisfies the ranges users get from pyproject.toml, and
    it holds every package the project and its dev extra ask for (pip check, run by make setup,
    covers their transitive requirements)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _lock()
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {requirement.name}=={pins[name]}, outside pyproject's {requirement.specifier}"
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    for spec in build:
        requirement = Requirement(spec)
        assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)])


def test_the_installed_environment_is_the_lock() -> None:
    """What this test run imports is what the lock says (make setup installs it with --no-deps)."""
    import importlib.metadata
    import sys

    import pytest

    if pathlib.Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip(f"not the make setup venv ({sys.prefix}): an environment of your own may differ from the lock")

    from packaging.utils import canonicalize_name

    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    drift = {name: (version, installed.get(name)) for name, version in _lock().items() if installed.get(name) != version}
    assert not drift, f"installed versions differ from requirements.lock (pinned, installed): {drift}"
