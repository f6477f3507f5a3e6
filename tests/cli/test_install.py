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
