"""ONNX export of a loaded squeeze artifact: the graph ONNX Runtime serves, built from exactly what was scored.

    model = trainers.artifact.load("model.sqz")          # Pipeline: preprocessing + network, neurons removed
    proto = to_onnx(model, weights="fp32")               # onnx.ModelProto; save() writes it to a file

The graph takes what :mod:`search.predict` takes and returns the scores:

* input ``input``: ``(batch, *input_shape)`` raw rows, float32 for tabular and image models (standardization
  and PCA run inside the graph, as in the artifact's :class:`~trainers.models.Preprocess`), int64 event
  windows ``(batch, C, L)`` for ``seqrec``; the batch axis is dynamic.
* first output ``scores``: ``(batch, n_classes)`` logits (``seqrec``: a score per item id), so
  ``onnxruntime.InferenceSession(path).run(None, {"input": X})[0].argmax(1)`` gives the predicted classes.
* ``metadata_props``: ``squeeze.weights`` (fp32 | int8), and where the artifact's meta has them
  ``squeeze.classes``, ``squeeze.feature_names`` and ``squeeze.runtime`` (JSON).

Two weight forms (:data:`WEIGHT_FORMS`):

``fp32``
    Every weight as the dequantized float32 tensor the artifact decodes to (zeros where pruned). ONNX Runtime
    computes what PyTorch computed on the loaded model: labels identical, scores equal up to float rounding
    (tests: max |diff| <= 1e-4).
``int8``
    Each :class:`~torch.nn.Linear` whose weights were quantized to <= 8 bits runs as
    ``DynamicQuantizeLinear`` (activations to uint8, per call) -> ``MatMulInteger`` (int8 weight initializer,
    transposed) -> ``* (activation scale * per-output-channel weight scale)`` (+ bias): the integer
    arithmetic of ONNX Runtime, the counterpart of torch's ``int8_dynamic`` runtime. The int8 codes are
    the artifact's own wherever they fit ``[-64, 63]`` with one float scale per output channel (fixed_point
    <= 7 bits, binary, ternary: ``q * scale`` is the decoded weight bit for bit); other weights (uniform's
    float offsets, 8-bit fixed point) are requantized symmetrically per output channel to ``[-63, 63]``.
    Weights stay within 7 bits because on x86 CPUs without VNNI ONNX Runtime's u8s8 kernel adds pairs of
    products in int16 (255 * 64 * 2 < 2^15: no saturation). Activations are quantized, so scores move a
    little and a few near-tie labels may change: a model scored on ``onnxruntime_int8`` was scored on this
    graph itself.

A table stored factored (``compress.lowrank.rank``, :class:`~trainers.compress.lowrank.Factored`) stays
factored in both forms: its decoded factors ``A (rows, r)`` and ``B (r, dim)`` are the initializers
``<name>.lowrank_a`` / ``<name>.lowrank_b`` instead of the dense table, a lookup ``Gather(W, ids)`` becomes
``Gather(A, ids) @ B`` and scoring every item ``x @ Wᵀ`` becomes ``(x @ Bᵀ) @ Aᵀ`` (``r·(rows + dim)``
multiply-adds per row instead of ``rows·dim``; the transposes of initializers are folded when the session
loads). Any other use of the table reads ``A @ B`` (also folded at load). The sums run in another order than
the artifact's product of the factors, so scores equal the artifact's up to float rounding, as above.

Why MatMulInteger and not QDQ (measured when this module was written: ORT 1.32, 1 thread, hand-built
graphs of an MLP 64-300-100-10 with per-channel int8 weights, median us/call over 10 alternating blocks on
the 2-core AMD EPYC (AVX2, no VNNI) development machine)::

                         batch 1     batch 256
    fp32 MatMul          26.8        489
    QDQ (int8 weights    206.7       727        DequantizeLinear is not constant-folded: ORT dequantizes
      -> DequantizeLinear                       every weight on every call, and fuses the last layer into
      -> MatMul)                                MatMulNBits (scores moved by 0.015)
    DynamicQuantizeLinear 32.9       381        int8 GEMM; at batch 1 the per-call quantization costs
      + MatMulInteger                           about what the smaller GEMM saves

QLinearMatMul needs a fixed activation scale (calibration), which squeeze does not have. Through
:func:`trainers.measure.measure_latency` on a digits MLP 64-300-100-10 with uniform 8-bit weights (same
machine, under load from other processes, so only the order is meaningful), median us per call at batch 1 /
batch 256: fp32_dense 252 / 905, torchscript 74 / 797, int8_dynamic 475 / 1418, onnxruntime 65 / 641,
onnxruntime_int8 77 / 480.

Exporter (torch 2.13): the TorchScript-based exporter (``dynamo=False``). The dynamo exporter needs the
extra ``onnxscript`` package and took 2.0-6.5 s per model against 0.3-0.7 s (measured on mlp, cnn, seqrec);
the export runs once per fold when ``onnxruntime`` is a runtime candidate. One fix-up: ONNX Runtime has no
``EyeLike`` kernel for bool (seqrec's attention mask), so bool ``EyeLike`` becomes float ``EyeLike`` ->
``Cast``. Torch marks this exporter deprecated; it is pinned with torch, and :func:`to_onnx` is the one
place that calls it.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainers.task import task_of_net

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "OPSET", "WEIGHT_FORMS", "INT8_WEIGHT_MAX", "OnnxRuntimeModel",
           "default_weights", "input_spec", "int8_layers", "int8_weight", "lowrank_tables", "save", "to_onnx"]

INPUT_NAME, OUTPUT_NAME = "input", "scores"
OPSET = 17                          # LayerNormalization (seqrec) needs 17
WEIGHT_FORMS = ("fp32", "int8")
#: int8 weight codes stay in [-64, 63] (7 bits): no int16 saturation in u8s8 kernels without VNNI
INT8_WEIGHT_MAX = 63
#: runtimes whose arithmetic is int8 (search.export's default weight form for artifacts scored on them)
INT8_RUNTIMES = ("int8_dynamic", "onnxruntime_int8")


# --- what the graph takes -------------------------------------------------------------------------------

def input_spec(model: nn.Module) -> tuple[list[int], np.dtype]:
    """``(shape of one input row, numpy dtype)`` the artifact's Pipeline takes: the meta's ``input_shape``
    (as :func:`search.predict.input_shape`) or the preprocessing's; the dtype its network's task reads
    (:attr:`trainers.task.Task.input_dtype`: int64 ids for rankers, float32 features otherwise)."""
    meta = getattr(model, "meta", None) or {}
    shape = [int(d) for d in (meta.get("input_shape") or model.preprocess.input_shape)]
    return shape, np.dtype(task_of_net(model.net.spec()).input_dtype)


def default_weights(model: nn.Module) -> str:
    """The weight form of what was scored: ``int8`` when the artifact's meta records an int8 runtime
    (:data:`INT8_RUNTIMES`) and some Linear weights are <= 8 bits, else ``fp32``."""
    runtime = (getattr(model, "meta", None) or {}).get("runtime")
    return "int8" if runtime in INT8_RUNTIMES and int8_layers(model) else "fp32"


# --- int8 weights ---------------------------------------------------------------------------------------

def int8_layers(model: nn.Module) -> list[str]:
    """State-dict names of the Linear weights the ``int8`` form runs on integer kernels: those the artifact
    stores quantized to <= 8 bits (``model.encodings``); fp32-kept layers stay fp32."""
    encodings = getattr(model, "encodings", {}) or {}
    linear = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    return [name for name, enc in encodings.items()
            if name in linear and enc.scheme != "fp32" and enc.bits <= 8]


def int8_weight(weight: np.ndarray, encoding: Any = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(q int8 (out, in), scale float32 (out,), exact)`` with ``q * scale[:, None]`` ~ ``weight``.

    ``encoding`` (the weight's :class:`~trainers.compress.quantize.Encoded`) proposes a scale per output
    channel: ``2^-frac_bits`` for fixed point, ``alpha`` for binary and ternary. A channel keeps it where
    ``weight / scale`` are integers in ``[-64, 63]`` and ``q * scale`` gives the weight back bit for bit;
    every other channel (uniform's float offsets, 8-bit fixed point, no encoding) is requantized
    symmetrically: ``scale = max|w| / 63``, ``q = round(w / scale)``. ``exact``: no channel was requantized.
    """
    w = np.asarray(weight, dtype=np.float32).reshape(weight.shape[0], -1)
    proposed = np.zeros(w.shape[0], dtype=np.float32)
    if encoding is not None and encoding.scheme == "fixed_point":
        proposed[:] = np.float32(2.0 ** -encoding.frac_bits)
    elif encoding is not None and encoding.scheme in ("binary", "ternary"):
        proposed[:] = encoding.scale.numpy().astype(np.float32)
    q = np.zeros(w.shape, dtype=np.int8)
    scale = np.ones(w.shape[0], dtype=np.float32)
    exact = True
    for c, row in enumerate(w):
        peak = np.float32(np.abs(row).max())
        if peak == 0:
            continue                                   # a fully pruned channel: q = 0
        s = proposed[c]
        if s > 0:
            codes = np.round(row / s)
            if codes.min() >= -(INT8_WEIGHT_MAX + 1) and codes.max() <= INT8_WEIGHT_MAX \
                    and np.array_equal(codes.astype(np.float32) * s, row):
                q[c], scale[c] = codes.astype(np.int8), s
                continue
        exact = False
        s = np.float32(peak / INT8_WEIGHT_MAX)
        q[c], scale[c] = np.clip(np.round(row / s), -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX).astype(np.int8), s
    return q, scale, exact


# --- export ---------------------------------------------------------------------------------------------

def _trace_input(model: nn.Module, example: torch.Tensor | None) -> torch.Tensor:
    """Two rows to trace on (batch 1 lets the exporter fold the batch axis away)."""
    if example is None:
        shape, dtype = input_spec(model)
        return torch.zeros((2, *shape), dtype=torch.int64 if dtype == np.int64 else torch.float32)
    example = example[:2]
    return example.repeat((2,) + (1,) * (example.dim() - 1))[:2] if len(example) < 2 else example


#: the last exported graph of each model still alive, as ``(signature, serialized graph)``: the runtime choice
#: builds both ONNX candidates (fp32 and int8) of one loaded model, and tracing it twice cost ~12 ms a trial
_EXPORTED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, bytes]] = weakref.WeakKeyDictionary()


def _signature(model: nn.Module, example: torch.Tensor) -> tuple:
    """What the traced graph depends on: every tensor of the model as it is now (storage and in-place version:
    a changed weight bumps ``_version``) and the example rows traced on."""
    state = tuple((name, t.data_ptr(), t._version, tuple(t.shape)) for name, t in model.state_dict().items())
    return state, example.dtype, tuple(example.shape), example.detach().cpu().numpy().tobytes()


def _export(model: nn.Module, example: torch.Tensor):
    """The float32 graph of ``model`` (TorchScript exporter, initializers named as the state dict), a fresh
    ``ModelProto`` on every call (callers edit it); a model exported before, unchanged, is not traced again."""
    import onnx

    signature = _signature(model, example)
    cached = _EXPORTED.get(model)
    if cached is not None and cached[0] == signature:
        return onnx.load_from_string(cached[1])
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")              # the TorchScript exporter is deprecated (module docstring)
        torch.onnx.export(model.eval(), (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=False)   # keeps weights under their state-dict names
    _EXPORTED[model] = (signature, buf.getvalue())
    return onnx.load_from_string(buf.getvalue())


def _fix_bool_eyelike(proto) -> None:
    """ONNX Runtime has no EyeLike kernel for bool (seqrec's attention mask): run it on float and cast."""
    import onnx
    from onnx import TensorProto, helper

    if not any(node.op_type == "EyeLike" for node in proto.graph.node):
        return
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.output)}
    nodes = []
    for node in proto.graph.node:
        out = node.output[0] if node.op_type == "EyeLike" else None
        if out is None or TensorProto.BOOL not in (elem.get(node.input[0]), elem.get(out)):
            nodes.append(node)
            continue
        nodes.append(helper.make_node("Cast", [node.input[0]], [f"{out}_in"], to=TensorProto.FLOAT,
                                      name=f"{node.name}_cast_in"))
        nodes.append(helper.make_node("EyeLike", [f"{out}_in"], [f"{out}_float"], name=node.name,
                                      dtype=TensorProto.FLOAT,
                                      **{a.name: helper.get_attribute_value(a) for a in node.attribute
                                         if a.name != "dtype"}))
        nodes.append(helper.make_node("Cast", [f"{out}_float"], [out], to=elem.get(out) or TensorProto.BOOL,
                                      name=f"{node.name}_cast"))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def _to_int8(graph, weights: Mapping[str, tuple[np.ndarray, Any]]) -> None:
    """Rewrite every ``Gemm(x, W, b, transB=1)`` and ``MatMul(x, Transpose(W))`` on a weight of ``weights``
    (state-dict name -> (dense float32 (out, in), its encoding)) to DynamicQuantizeLinear -> MatMulInteger
    -> scale (+ b)."""
    from onnx import TensorProto, helper, numpy_helper

    producer = {out: node for node in graph.node for out in node.output}
    quantized: dict[str, tuple[str, str, str]] = {}       # activation -> (q, scale, zero point) outputs
    added_inits, new_nodes, dead = [], {}, set()

    def weight_of(node) -> str | None:
        if node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            ok = attrs.get("transB") == 1 and attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 \
                and attrs.get("beta", 1.0) == 1.0
            return node.input[1] if ok and node.input[1] in weights else None
        if node.op_type == "MatMul":
            src = producer.get(node.input[1])
            if src is not None and src.op_type == "Transpose" and src.input[0] in weights:
                perm = [a for a in src.attribute if a.name == "perm"]
                if not perm or list(perm[0].ints) == [1, 0]:
                    dead.add(src.name)
                    return src.input[0]
        return None

    for node in graph.node:
        name = weight_of(node)
        if name is None:
            continue
        x, key = node.input[0], name.replace(".", "_")
        q, scale, _ = int8_weight(*weights[name])
        added_inits += [numpy_helper.from_array(np.ascontiguousarray(q.T), f"{key}_int8"),
                        numpy_helper.from_array(scale, f"{key}_scale")]
        chain = []
        if x not in quantized:
            quantized[x] = (f"{key}_xq", f"{key}_xs", f"{key}_xz")
            chain.append(helper.make_node("DynamicQuantizeLinear", [x], list(quantized[x]), name=f"{key}_dql"))
        xq, xs, xz = quantized[x]
        out = node.output[0]
        scaled = f"{key}_scaled" if node.op_type == "Gemm" else out
        chain += [helper.make_node("MatMulInteger", [xq, f"{key}_int8", xz], [f"{key}_acc"], name=f"{key}_mmi"),
                  helper.make_node("Cast", [f"{key}_acc"], [f"{key}_accf"], to=TensorProto.FLOAT, name=f"{key}_cast"),
                  helper.make_node("Mul", [xs, f"{key}_scale"], [f"{key}_s"], name=f"{key}_smul"),
                  helper.make_node("Mul", [f"{key}_accf", f"{key}_s"], [scaled], name=f"{key}_mul")]
        if node.op_type == "Gemm":
            inputs = [scaled, node.input[2]] if len(node.input) > 2 and node.input[2] else None
            chain.append(helper.make_node("Add", inputs, [out], name=f"{key}_bias") if inputs
                         else helper.make_node("Identity", [scaled], [out], name=f"{key}_out"))
        new_nodes[id(node)] = chain

    nodes = []
    for node in graph.node:
        if node.name in dead:
            continue
        nodes.extend(new_nodes.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added_inits)
    used = {i for node in graph.node for i in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _attr(node, name: str, default: Any) -> Any:
    from onnx import helper

    found = [helper.get_attribute_value(a) for a in node.attribute if a.name == name]
    return found[0] if found else default


def _to_lowrank(graph, factors: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Replace each factored table (initializer name -> decoded ``(A (rows, r), B (r, dim))``) by its two
    factors: ``Gather(W, ids)`` -> ``Gather(A, ids) @ B``; ``MatMul(x, Transpose(W))`` -> ``(x @ Bᵀ) @ Aᵀ``;
    any other consumer reads ``W = A @ B``. See the module docstring."""
    from onnx import helper, numpy_helper

    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    first: list[Any] = []                       # nodes on initializers only, placed before every other node
    in_place: dict[int, list[Any]] = {}          # id(node) -> the nodes that replace it
    for name, (a, b) in factors.items():
        A, B, At, Bt = (f"{name}.lowrank_{s}" for s in ("a", "b", "a_t", "b_t"))
        graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(a, dtype=np.float32), A),
                                  numpy_helper.from_array(np.ascontiguousarray(b, dtype=np.float32), B)])
        dense = transposed = False
        for node in consumers.get(name, []):
            out = node.output[0]
            users = consumers.get(out, [])
            if node.op_type == "Gather" and node.input[0] == name and _attr(node, "axis", 0) == 0:
                in_place[id(node)] = [
                    helper.make_node("Gather", [A, node.input[1]], [f"{out}.lowrank"], name=f"{out}.lowrank_gather"),
                    helper.make_node("MatMul", [f"{out}.lowrank", B], [out], name=f"{out}.lowrank_b")]
            elif (node.op_type == "Transpose" and list(_attr(node, "perm", [1, 0])) == [1, 0] and users
                  and out not in outputs and all(u.op_type == "MatMul" and list(u.input).index(out) == 1
                                                 and u.input[0] != out for u in users)):
                transposed, in_place[id(node)] = True, []
                for u in users:
                    y = u.output[0]
                    in_place[id(u)] = [
                        helper.make_node("MatMul", [u.input[0], Bt], [f"{y}.lowrank"], name=f"{y}.lowrank_bt"),
                        helper.make_node("MatMul", [f"{y}.lowrank", At], [y], name=f"{y}.lowrank_at")]
            else:
                dense = True
        if transposed:
            first += [helper.make_node("Transpose", [A], [At], name=f"{A}_t", perm=[1, 0]),
                      helper.make_node("Transpose", [B], [Bt], name=f"{B}_t", perm=[1, 0])]
        if dense:
            first.append(helper.make_node("MatMul", [A, B], [name], name=f"{name}.lowrank_product"))
    nodes = list(first)
    for node in graph.node:
        nodes.extend(in_place.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    keep = [init for init in graph.initializer if init.name not in factors]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def lowrank_tables(model: nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """State-dict name -> decoded ``(A, B)`` of every table the artifact stores factored."""
    from trainers.compress.lowrank import Factored

    encodings = getattr(model, "encodings", {}) or {}
    return {name: (enc.a.decode().numpy(), enc.b.decode().numpy())
            for name, enc in encodings.items() if isinstance(enc, Factored)}


def to_onnx(model: nn.Module, weights: str = "fp32", example: torch.Tensor | None = None):
    """The ONNX graph (``onnx.ModelProto``) of a loaded artifact's Pipeline; see the module docstring.

    Args:
        model: a :class:`~trainers.models.Pipeline` from :func:`trainers.artifact.load` (``encodings`` say
            which weights are quantized; neurons are already removed).
        weights: ``fp32`` or ``int8`` (:data:`WEIGHT_FORMS`).
        example: input rows to trace on (default: zeros of :func:`input_spec`).

    Example:
        >>> model = trainers.artifact.load("model.sqz")                   # doctest: +SKIP
        >>> onnx.save(to_onnx(model), "model.onnx")                       # doctest: +SKIP
    """
    import onnx
    from onnx import helper

    if weights not in WEIGHT_FORMS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_FORMS)}, got {weights!r}")
    proto = _export(model, _trace_input(model, example))
    _fix_bool_eyelike(proto)
    factored = lowrank_tables(model)
    if factored:
        _to_lowrank(proto.graph, factored)
    if weights == "int8":
        state = model.state_dict()
        _to_int8(proto.graph, {name: (state[name].detach().cpu().numpy(), model.encodings[name])
                               for name in int8_layers(model)})
    meta = getattr(model, "meta", None) or {}
    props = {"squeeze.weights": weights}
    props.update({f"squeeze.{k}": json.dumps(meta[k]) for k in ("classes", "feature_names", "runtime")
                  if meta.get(k) is not None})
    helper.set_model_props(proto, props)
    proto.producer_name = "squeeze"
    onnx.checker.check_model(proto)
    return proto


def save(model: nn.Module, path: str | os.PathLike, weights: str | None = None) -> int:
    """Write :func:`to_onnx` of ``model`` to ``path`` atomically; ``weights`` None = :func:`default_weights`.
    Returns the file's size in bytes."""
    import onnx

    path = Path(path)
    proto = to_onnx(model, weights or default_weights(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path.stat().st_size


# --- serving --------------------------------------------------------------------------------------------

class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session behind the ``model(x) -> scores`` call of a torch module (CPU), so
    :func:`trainers.measure.measure_latency`, ``accuracy`` and ``rank_model`` serve it like any runtime.

    Args:
        proto: an ``onnx.ModelProto`` (:func:`to_onnx`) or the bytes / path of a saved one.
        threads: ONNX Runtime intra-op threads (``latency.threads``); one inter-op thread, sequential.
    """

    def __init__(self, proto: Any, threads: int = 1) -> None:
        super().__init__()
        import onnxruntime as ort

        if hasattr(proto, "SerializeToString"):
            proto = proto.SerializeToString()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3                   # errors only
        self.session = ort.InferenceSession(proto if isinstance(proto, bytes) else str(proto), opts,
                                            providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.dtype = np.int64 if first.type == "tensor(int64)" else np.float32
        self._outputs = [OUTPUT_NAME]

    def serve_input(self, x: torch.Tensor) -> np.ndarray:
        """``x`` in the form the session takes (a contiguous numpy array of the input's type)."""
        return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=self.dtype)

    def serve(self, array: np.ndarray) -> np.ndarray:
        """One call of the session on an input already in its form: what a service calling ONNX Runtime runs,
        and what the latency protocol times (:func:`trainers.measure.timed_call`)."""
        return self.session.run(self._outputs, {self.input_name: array})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.serve(self.serve_input(x)))
