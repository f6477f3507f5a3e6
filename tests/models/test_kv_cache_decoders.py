"""KV-cache decoders (GPT-2-style and LLaMA-style with grouped-query attention and rotary embeddings, the
latter also with 4-bit weights), each compiled once and driven through a whole generation loop next to onnxruntime.

The models are built as exporters write them (``compiler.models.decoder``): a symbolic batch, past
length and new-token length; the causal mask, positions, head splits and ``repeat_kv`` computed from
Shape/Range/Expand in the graph. One artifact runs the prefill (an empty past) and every decode step
(the presents fed back as the past). Tolerance at every step: max |tilec - onnxruntime| <=
1e-4 * max |onnxruntime logits|, the same arg max, and the same generated tokens.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import compiler
from compiler.models.decoder import gpt2_decoder_model, greedy_generate, llama_decoder_model, step_feeds
from compiler.models.quantized import weights_to_4bit
from runtime_stub import InferenceSession
from runtime_stub.errors import InvalidInputError

pytestmark = pytest.mark.slow

RTOL = 1e-4
MAX_PAST = 512


def _llama_int4():
    """The LLaMA-style decoder with 4-bit weights (MatMulNBits), as onnxruntime's weight-only quantizer writes it."""
    model, shape = llama_decoder_model()
    return weights_to_4bit(model), shape


DECODERS = {"gpt2": gpt2_decoder_model, "llama_gqa": llama_decoder_model, "llama_gqa_int4": _llama_int4}


@pytest.fixture(scope="module")
def decoders(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("decoders")
    built = {}
    for name, make in DECODERS.items():
        model, shape = make()
        path = compiler.compile(model, folder / f"{name}.tilec", dim_bounds={"past_sequence_length": (0, MAX_PAST)})
        built[name] = (InferenceSession(path), ort.InferenceSession(model.SerializeToString()), shape)
    return built


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = float(np.abs(want).max())
    assert float(np.abs(got - want).max()) <= RTOL * scale
    assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", list(DECODERS))
def test_generation_matches_onnxruntime_at_every_step(decoders, name: str, batch: int) -> None:
    """A 16-token prefill, then 32 decode steps: past lengths 16 .. 47 cross the 16- and 32-wide tiles."""
    session, reference, shape = decoders[name]
    prompt = np.random.default_rng(batch).integers(0, shape.vocab, (batch, 16))
    want: dict[int, np.ndarray] = {}
    expected = greedy_generate(lambda f: reference.run(None, f), shape, prompt, 32, want.__setitem__)
    steps: list[int] = []

    def check(i: int, logits: np.ndarray) -> None:
        _close(logits, want[i])
        steps.append(i)

    tokens = greedy_generate(lambda f: session.run(None, f), shape, prompt, 32, check)
    assert steps == list(range(33))
    np.testing.assert_array_equal(tokens, expected)


@pytest.mark.parametrize("name", list(DECODERS))
def test_padded_batch_and_every_present_match(decoders, name: str) -> None:
    """A left-padded row in the attention mask, a 5-token step over a 40-token past: logits and every
    present match, and the presents hold the past unchanged in front of the new rows."""
    session, reference, shape = decoders[name]
    rng = np.random.default_rng(5)
    past = [rng.standard_normal((2, shape.kv_heads, 40, shape.head_dim)).astype(np.float32)
            for _ in range(2 * shape.layers)]
    mask = np.ones((2, 45), np.int64)
    mask[1, :7] = 0
    feeds = step_feeds(shape, rng.integers(0, shape.vocab, (2, 5)), past, mask)
    got, want = session.run(None, feeds), reference.run(None, feeds)
    _close(got[0], want[0])
    for g, w, p in zip(got[1:], want[1:], past):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(g[:, :, :40], p)


def test_presents_feed_back_as_inputs_without_conversion(decoders) -> None:
    """The arrays run() returns are the native layout the next run takes: C-contiguous float32, writable."""
    session, _, shape = decoders["llama_gqa"]
    _, *presents = session.run(None, step_feeds(shape, np.zeros((1, 3), np.int64), [], np.ones((1, 3), np.int64)))
    for p in presents:
        assert p.dtype == np.float32 and p.flags.c_contiguous and p.flags.writeable and p.shape[2] == 3


def test_past_beyond_the_compiled_bound_is_refused(decoders) -> None:
    session, _, shape = decoders["gpt2"]
    past = [np.zeros((1, shape.kv_heads, MAX_PAST + 1, shape.head_dim), np.float32)] * (2 * shape.layers)
    feeds = step_feeds(shape, np.zeros((1, 1), np.int64), past, np.ones((1, MAX_PAST + 2), np.int64))
    with pytest.raises(InvalidInputError, match="past_sequence_length"):
        session.run(None, feeds)


def test_mask_length_must_match_past_plus_new(decoders) -> None:
    session, _, shape = decoders["llama_gqa"]
    past = [np.zeros((1, shape.kv_heads, 4, shape.head_dim), np.float32)] * (2 * shape.layers)
    feeds = step_feeds(shape, np.zeros((1, 1), np.int64), past, np.ones((1, 6), np.int64))
    with pytest.raises(InvalidInputError):
        session.run(None, feeds)
