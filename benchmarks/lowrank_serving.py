"""Serving a low-rank item table (issues 11, 13): request latency of factored scoring against fp32, per runtime.

    python benchmarks/lowrank_serving.py [--out benchmarks/results/lowrank_serving.json] [--items 20000]

No training: latency does not depend on the weights' values. A :class:`~trainers.models.seqrec.SeqRec` of the
default shape (``d_model`` 64, one block, ``max_len`` 20, two side features, one user feature) over
``--items`` items with random weights; its item table factored by
:func:`trainers.compress.lowrank.factorize` at ranks 4, 8 and 16, the factors kept fp32 or quantized to 4 bits
(uniform, per row); every model packed and loaded back by :mod:`trainers.artifact`. For each artifact and
runtime: the paired latency against the fp32 artifact in the same runtime at batch 1, one thread
(:func:`trainers.measure.measure_paired`, alternating blocks, 95% intervals), and, for the torch runtimes, the
same artifact served as before factored scoring (the dense table the loader decodes), so the gain of the two
products is measured on its own. Top-k agreement: the served scores of every runtime against the scores of the
dense decoded table on ``--rows`` requests (the same top-10 list, the same top-10 set, the largest score
difference). A micro-benchmark of the scoring product alone and of the input lookup (dense rows vs
``A[items] @ B``) says which form each side takes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RANKS = (4, 8, 16)
K = 10
SIDE_VOCAB, USER_VOCAB = [20, 60], [5]     # category, brand; age band (ecommerce's shape, small vocabularies)
TORCH_RUNTIMES = ("fp32_dense", "torchscript", "int8_dynamic")


def _model(n_items: int, seed: int):
    import torch

    from trainers.models import Pipeline, Preprocess, build_net

    torch.manual_seed(seed)
    net = build_net({"type": "seqrec", "n_items": n_items, "d_model": 64, "heads": 1, "ffn_hidden": [64],
                     "max_len": 20, "dropout": 0.2, "side_vocab": SIDE_VOCAB, "user_vocab": USER_VOCAB})
    for emb in net.user_emb:                       # zero at start; random here so the user term is computed
        torch.nn.init.normal_(emb.weight, std=0.1)
    return Pipeline(Preprocess([1 + len(SIDE_VOCAB) + len(USER_VOCAB), 20], standardize=False), net).eval()


def _requests(n_items: int, rows: int, seed: int):
    """``(rows, C, 20)`` int64 event windows: item ids, side features, the user feature at every event."""
    import torch

    g = torch.Generator().manual_seed(seed)
    L = 20
    items = torch.randint(1, n_items + 1, (rows, 1, L), generator=g)
    sides = [torch.randint(1, v + 1, (rows, 1, L), generator=g) for v in SIDE_VOCAB]
    users = [torch.randint(1, v + 1, (rows, 1, 1), generator=g).expand(rows, 1, L) for v in USER_VOCAB]
    x = torch.cat([items, *sides, *users], dim=1)
    lengths = torch.randint(3, L + 1, (rows,), generator=g)               # left-padded histories
    pad = torch.arange(L)[None, :] < (L - lengths)[:, None]
    return x.masked_fill(pad[:, None, :], 0).contiguous()


def _artifacts(n_items: int, folder: Path, seed: int) -> dict[str, str]:
    """fp32, and rank r with fp32 or 4-bit factors, written as .sqz files."""
    from trainers import artifact
    from trainers.compress.lowrank import Factored, factorize
    from trainers.compress.quantize import Float32, Uniform

    model = _model(n_items, seed)
    paths = {"fp32": str(folder / "fp32.sqz")}
    artifact.save(model, paths["fp32"])
    for rank in RANKS:
        a, b = factorize(model.net.item_emb.weight, rank)
        for tag, quantizer in (("fp32", Float32()), ("uniform4", Uniform(4))):
            model.encodings = {"net.item_emb.weight": Factored(quantizer.encode(a), quantizer.encode(b))}
            name = f"rank{rank}_{tag}"
            paths[name] = str(folder / f"{name}.sqz")
            artifact.save(model, paths[name])
    return paths


def _served(path: str, runtime: str, example, factored: bool = True):
    from trainers import artifact
    from trainers.measure import RUNTIMES, int8_dynamic, torchscript

    loaded = artifact.load(path)
    if factored:
        return RUNTIMES[runtime].build(loaded, example, 1).eval()
    # as served before factored scoring: the dense table the loader decodes
    return {"fp32_dense": lambda: loaded, "torchscript": lambda: torchscript(loaded, example),
            "int8_dynamic": lambda: int8_dynamic(loaded)}[runtime]().eval()


def _agreement(served, dense, X) -> dict[str, Any]:
    """Top-k of ``served`` against ``dense`` (the dense decoded table's scores) on the rows of ``X``."""
    import torch

    with torch.inference_mode():
        got, ref = served(X), dense(X)
    top_got, top_ref = got.topk(K, dim=1).indices, ref.topk(K, dim=1).indices
    same_list = (top_got == top_ref).all(1)
    same_set = torch.tensor([set(a.tolist()) == set(b.tolist()) for a, b in zip(top_got, top_ref)])
    return {"rows": len(X), "same_top10_list": float(same_list.float().mean()),
            "same_top10_set": float(same_set.float().mean()),
            "max_abs_diff": float((got - ref).abs().max()), "score_scale": float(ref.abs().max())}


def _micro(n_items: int, seed: int, calls: int = 200, rounds: int = 15) -> dict[str, Any]:
    """Microseconds per call (median over alternating rounds) of the scoring product and the input lookup."""
    import numpy as np
    import torch
    from torch.nn import functional as F

    from trainers.compress.lowrank import factorize

    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n_items + 1, 64, generator=g) * 64 ** -0.5
    q = torch.randn(1, 64, generator=g)
    items = torch.randint(1, n_items + 1, (1, 20), generator=g)
    Wt = W.T.contiguous()
    fns: dict[str, Any] = {"scores_dense": lambda: q @ W.T, "scores_dense_table_transposed": lambda: q @ Wt,
                           "lookup_dense": lambda: F.embedding(items, W)}
    for rank in RANKS:
        a, b = factorize(W, rank)
        at, bt = a.T.contiguous(), b.T.contiguous()
        fns[f"scores_rank{rank}_served"] = lambda at=at, bt=bt: (q @ bt) @ at
        fns[f"scores_rank{rank}_transposed_views"] = lambda a=a, b=b: (q @ b.T) @ a.T
        fns[f"lookup_rank{rank}_factors"] = lambda a=a, b=b: F.embedding(items, a) @ b
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for f in fns.values():
            for _ in range(20):
                f()
        for _ in range(rounds):
            for k, f in fns.items():
                t = []
                for _ in range(calls):
                    start = time.perf_counter_ns()
                    f()
                    t.append(time.perf_counter_ns() - start)
                times[k].append(float(np.median(t)) / 1e3)
    return {k: round(float(np.median(v)), 2) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "lowrank_serving.json"))
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=500, help="requests for the top-k agreement")
    parser.add_argument("--repeats", type=int, default=1000, help="timed calls per paired measurement (both sides)")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import tempfile

    import torch

    from trainers import artifact
    from trainers.measure import LatencyProtocol, candidate_runtimes, measure_paired

    torch.set_num_threads(1)
    protocol = LatencyProtocol(threads=1, batch_size=1, warmup=50, repeats=args.repeats, blocks=args.blocks)
    X = _requests(args.items, args.rows, args.seed)
    example = X[:1]
    start = time.perf_counter()
    result: dict[str, Any] = {
        "items": args.items, "protocol": {**protocol.as_dict(), "blocks": protocol.blocks}, "k": K,
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "micro_us": _micro(args.items, args.seed), "artifacts": []}
    with tempfile.TemporaryDirectory(prefix="squeeze-bench-lowrank-") as tmp:
        paths = _artifacts(args.items, Path(tmp), args.seed)
        runtimes = ["fp32_dense", "torchscript", "int8_dynamic", "onnxruntime"]
        refs = {rt: _served(paths["fp32"], "fp32_dense" if rt == "int8_dynamic" else rt, example) for rt in runtimes}
        for name, path in paths.items():
            loaded = artifact.load(path)
            dense = _served(path, "fp32_dense", example, factored=False)        # the dense decoded table's scores
            quantized = [e.bits for e in loaded.encodings.values() if e.scheme != "fp32"]
            allowed = candidate_runtimes(loaded, max(quantized) if quantized else None)
            row: dict[str, Any] = {"name": name, "size_bytes": Path(path).stat().st_size, "runtimes": {}}
            for runtime in (r for r in runtimes if r in allowed):
                print(f"{name} on {runtime} ...", file=sys.stderr, flush=True)
                served = _served(path, runtime, example)
                s = measure_paired(served, refs[runtime], X, protocol, runtime).paired
                entry = {"latency_ms": s.latency_ms, "latency_ci": [s.latency_ci_low, s.latency_ci_high],
                         "fp32_ms": s.reference_ms, "speedup_vs_fp32": s.speedup,
                         "speedup_ci": [s.speedup_ci_low, s.speedup_ci_high],
                         "top_k_vs_dense_table": _agreement(served, dense, X)}
                if name != "fp32" and runtime in TORCH_RUNTIMES:     # the same file, scored from the dense table
                    before = measure_paired(_served(path, runtime, example, factored=False), refs[runtime], X,
                                            protocol, runtime).paired
                    entry.update(dense_scoring_ms=before.latency_ms, dense_scoring_speedup_vs_fp32=before.speedup,
                                 dense_scoring_speedup_ci=[before.speedup_ci_low, before.speedup_ci_high])
                row["runtimes"][runtime] = entry
            result["artifacts"].append(row)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} in {result['wall_seconds']} s", file=sys.stderr)
    for row in result["artifacts"]:
        cells = "  ".join(f"{rt} {e['latency_ms'] * 1e3:.0f}us x{e['speedup_vs_fp32']:.2f}"
                          + (f" (dense x{e['dense_scoring_speedup_vs_fp32']:.2f})" if "dense_scoring_ms" in e else "")
                          for rt, e in row["runtimes"].items())
        print(f"{row['name']:16s} {cells}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
