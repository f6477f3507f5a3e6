"""RNN, GRU and LSTM compiled end to end (expanded by compiler/frontend/recurrent.py).

Expected values come from onnxruntime (it implements sequence_lens, clip and the
optional activations; onnx's reference ignores them) or, for the plain forms,
from onnx's ReferenceEvaluator. The attribute-by-attribute coverage lives in
tests/frontend/test_frontend_recurrent.py; these cases check that the expanded
graphs compile and run. Tolerance: float32 rtol=1e-4, atol=1e-5.
"""

from __future__ import annotations

import pytest

from helpers_recurrent import ort_results, recurrent_model

CASES = [
    ("RNN", {"direction": "bidirectional"}, {"lens": [4, 2, 1]}),
    ("GRU", {"direction": "reverse", "linear_before_reset": 1}, {"lens": [3, 4, 2], "layout": 1}),
    ("GRU", {"activations": ["HardSigmoid", "LeakyRelu"], "activation_alpha": [0.2, 0.3]}, {"bias": False}),
    ("LSTM", {"direction": "bidirectional", "clip": 0.5}, {"peepholes": True, "lens": [4, 1, 3]}),
    ("LSTM", {"input_forget": 1}, {"initial": False}),
]


@pytest.mark.parametrize("op,attrs,kw", CASES, ids=lambda v: str(v))
def test_recurrent_compiled_matches_onnxruntime(check, op, attrs, kw):
    expected = ort_results(op, attrs, kw.get("layout", 0), **{k: v for k, v in kw.items() if k != "layout"})
    model, feeds = recurrent_model(op, attrs, **kw)
    check(model, feeds, rtol=1e-4, atol=1e-5, expected=expected)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_defaults_compiled_match_the_reference(check, op):
    model, feeds = recurrent_model(op, {})
    check(model, feeds, rtol=1e-4, atol=1e-5)
