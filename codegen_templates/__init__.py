"""The jinja2 templates the code generators fill: ``cuda/`` (kernel skeletons, index helpers, math
intrinsics, warp operations) for compiler/codegen/cuda/emitter.py.

A package only so that installs (wheels) carry the templates as package data; ``TEMPLATES`` is
their folder.
"""

from __future__ import annotations

import pathlib

TEMPLATES = pathlib.Path(__file__).resolve().parent
