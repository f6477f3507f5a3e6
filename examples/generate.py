"""Greedy generation with a KV-cache decoder: one artifact for the prompt and every new token.

    python examples/generate.py [--tokens 64] [--threads 1]

Builds a tiny LLaMA-style decoder (random weights; RMSNorm, rotary embeddings, grouped-query
attention, SiLU MLP) the way exporters write it, compiles it once with its past length symbolic,
and generates with runtime_stub: a prefill over a 16-token prompt (an empty past), then one call
per token, each feeding the previous call's ``present.*`` arrays back as ``past_key_values.*``
(the arrays run() returns go straight back in: no copies or conversions). onnxruntime runs the
same loop on the same model; the script prints both speeds and checks the tokens agree.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import numpy as np

import compiler
import runtime_stub
from compiler.bench import ort_session
from compiler.models.decoder import greedy_generate, llama_decoder_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="threads of both runtimes (default 1)")
    args = parser.parse_args()
    model, shape = llama_decoder_model(layers=4, hidden=256, heads=8, kv_heads=2, intermediate=704, vocab=2048)
    prompt = np.random.default_rng(0).integers(0, shape.vocab, (1, 16))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        artifact = compiler.compile(model, pathlib.Path(tmp) / "decoder.tilec",
                                    dim_bounds={"past_sequence_length": (0, 1024)})
        print(f"compiled the decoder once in {time.perf_counter() - start:.1f} s "
              f"({artifact.stat().st_size / 2**20:.1f} MiB)")
        with runtime_stub.InferenceSession(artifact, threads=args.threads) as session:
            ort = ort_session(model, threads=args.threads)
            results = {}
            for name, sess in (("tilec", session), ("onnxruntime", ort)):
                greedy_generate(lambda feeds: sess.run(None, feeds), shape, prompt, 4)  # warm up
                start = time.perf_counter()
                tokens = greedy_generate(lambda feeds: sess.run(None, feeds), shape, prompt, args.tokens - 1)
                results[name] = (tokens, args.tokens / (time.perf_counter() - start))
    (ours, ours_rate), (theirs, their_rate) = results["tilec"], results["onnxruntime"]
    print(f"prompt: {prompt[0].tolist()}")
    print(f"generated: {ours[0].tolist()}")
    print(f"tokens/s ({args.threads} thread(s), prefill included): tilec {ours_rate:.0f}, "
          f"onnxruntime {their_rate:.0f} ({ours_rate / their_rate:.2f}x)")
    same = bool((ours == theirs).all())
    print(f"tokens agree with onnxruntime: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
