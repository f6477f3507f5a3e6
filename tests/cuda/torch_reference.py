"""An ONNX graph run node by node with PyTorch (eager) on the GPU: the latency baseline of ``make gpu-test``.

Contract: ``TorchGraph(model, device)`` holds the initializers on ``device``;
calling it with numpy feeds copies them there, runs the nodes with
``torch.nn.functional`` and returns the outputs as numpy arrays (the same
host → device → host round trip a tilec session makes). It covers the ops of
the light models, LeNet and the transformer encoder; any other op raises
``NotImplementedError`` naming it, and the caller reports no baseline.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

Attrs = dict[str, Any]


def _pads(x: torch.Tensor, pads: list[int], value: float = 0.0) -> torch.Tensor:
    """ONNX pads [b1, b2, ..., e1, e2, ...] over the trailing spatial dims, as F.pad wants them."""
    rank = len(pads) // 2
    spec: list[int] = []
    for d in reversed(range(rank)):
        spec += [pads[d], pads[d + rank]]
    return F.pad(x, spec, value=value) if any(spec) else x


def _conv(x, w, b=None, *, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET", **_):
    if auto_pad not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"Conv auto_pad={auto_pad}")
    rank = w.dim() - 2
    x = _pads(x, pads or [0] * 2 * rank)
    fn = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    return fn(x, w, b, stride=strides or 1, dilation=dilations or 1, groups=group)


def _pool(kind: str):
    def run(x, *, kernel_shape, strides=None, pads=None, ceil_mode=0, count_include_pad=0, auto_pad="NOTSET",
            dilations=None, **_):
        if auto_pad not in ("NOTSET", "VALID") or any(d != 1 for d in dilations or []):
            raise NotImplementedError(f"pooling with auto_pad={auto_pad}, dilations={dilations}")
        rank = len(kernel_shape)
        pads = pads or [0] * 2 * rank
        strides = strides or [1] * rank
        if kind == "max":
            x = _pads(x, pads, value=float("-inf"))
            return (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1](x, kernel_shape, strides,
                                                                        ceil_mode=bool(ceil_mode))
        symmetric = pads[:rank] == pads[rank:] and all(2 * p <= k for p, k in zip(pads[:rank], kernel_shape))
        if not symmetric:
            raise NotImplementedError("AveragePool with asymmetric pads")
        return (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1](
            x, kernel_shape, strides, pads[:rank], ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))
    return run


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, **_):
    y = alpha * ((a.t() if transA else a) @ (b.t() if transB else b))
    return y if c is None else y + beta * c


def _reshape(x, shape, *, allowzero=0):
    dims = [int(d) for d in shape.tolist()]
    dims = [x.shape[k] if d == 0 and not allowzero else d for k, d in enumerate(dims)]
    return x.reshape(dims)


def _split(x, split=None, *, axis=0, num_outputs=None, **attrs):
    sizes = [int(s) for s in split.tolist()] if split is not None else attrs.get("split")
    if sizes is None:
        parts = num_outputs or attrs["_outputs"]
        sizes = [-(-x.shape[axis] // parts)] * parts
        sizes[-1] = x.shape[axis] - sum(sizes[:-1])
    return tuple(torch.split(x, sizes, dim=axis))


def _unsqueeze(x, axes=None, **attrs):
    axes = [int(a) for a in axes.tolist()] if axes is not None else attrs["axes"]
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def _layer_norm(x, scale, bias=None, *, axis=-1, epsilon=1e-5, **_):
    axis %= x.dim()
    return F.layer_norm(x, x.shape[axis:], scale, bias, epsilon)


def _batch_norm(x, scale, bias, mean, var, *, epsilon=1e-5, **_):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=epsilon)


def _lrn(x, *, size, alpha=1e-4, beta=0.75, bias=1.0):
    return F.local_response_norm(x, size, alpha, beta, bias)


def _softmax(x, *, _opset, axis=None):
    if _opset >= 13:
        return torch.softmax(x, -1 if axis is None else axis)
    axis = 1 if axis is None else axis % x.dim()  # older opsets: softmax of the 2-D flattening at axis
    return torch.softmax(x.reshape(int(np.prod(x.shape[:axis])), -1), -1).reshape(x.shape)


OPS: dict[str, Callable[..., Any]] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "Relu": torch.relu,
    "Erf": torch.erf, "Sqrt": torch.sqrt, "Equal": torch.eq, "Where": torch.where, "Tanh": torch.tanh,
    "Sigmoid": torch.sigmoid, "Conv": _conv, "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "BatchNormalization": _batch_norm, "LRN": _lrn, "Gemm": _gemm, "MatMul": torch.matmul,
    "Concat": lambda *xs, axis: torch.cat(xs, axis), "Dropout": lambda x, *_, **__: x, "Identity": lambda x: x,
    "Reshape": _reshape, "Flatten": lambda x, axis=1: x.reshape(int(np.prod(x.shape[:axis])), -1),
    "Softmax": _softmax, "Split": _split, "Sum": lambda *xs: sum(xs[1:], xs[0]),
    "Transpose": lambda x, perm=None: x.permute(*(perm or reversed(range(x.dim())))),
    "Unsqueeze": _unsqueeze, "LayerNormalization": _layer_norm,
}


class TorchGraph:
    def __init__(self, model: onnx.ModelProto, device: str = "cuda") -> None:
        self.device = device
        self.model = model
        missing = sorted({n.op_type for n in model.graph.node
                          if n.op_type not in OPS or n.domain not in ("", "ai.onnx")})
        if missing:
            raise NotImplementedError(f"no PyTorch baseline for {', '.join(missing)}")
        self.weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).to(device)
                        for t in model.graph.initializer}
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.nodes = []
        for node in model.graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
            if node.op_type == "Split":
                attrs["_outputs"] = len(node.output)
            if node.op_type == "Softmax":
                attrs["_opset"] = opset
            self.nodes.append((node, attrs))

    @torch.no_grad()
    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        env: dict[str, Any] = dict(self.weights)
        env.update({k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in feeds.items()})
        for node, attrs in self.nodes:
            args = [env[name] if name else None for name in node.input]
            while args and args[-1] is None:
                args.pop()
            result = OPS[node.op_type](*args, **attrs)
            results = result if isinstance(result, tuple) else (result,)
            env.update({name: r for name, r in zip(node.output, results) if name})
        return [env[o.name].cpu().numpy() for o in self.model.graph.output]
