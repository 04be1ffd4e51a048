"""Where a seqrec request's time goes at batch 1, and what serving only the last position buys (issue 11).

    PYTHONPATH=. python benchmarks/seqrec_latency.py breakdown [--items 5000]   # -> benchmarks/results/seqrec_breakdown_5000.json
    PYTHONPATH=. python benchmarks/seqrec_latency.py pareto [--items 5000]      # -> benchmarks/results/seqrec_pareto_5000.json

``breakdown`` (no training: latency does not depend on the weights' values): a
:class:`~trainers.models.seqrec.SeqRec` of conf/model/seqrec.yaml's default shape (``d_model`` 64, one block,
``max_len`` 20) with the ecommerce shop's channels (two side features, four user features) over ``--items`` items,
random weights. The forward pass is cut after each stage (:class:`_Upto`: the per-call overhead of a forward that
computes nothing, the embedding lookups incl. side and user features, the attention, the FFN, the final LayerNorm,
the scoring product) and each cut is timed in torchscript and onnxruntime (one thread, batch 1, median of
alternating rounds); the difference between consecutive cuts is that stage's cost. Every cut is timed with the
last block computing every position (``full``, the forward before ``SeqRec.encode(last_only=True)``) and the last
position only (``last``, the forward now), for the fp32 item table and for the table factored at ranks 4 and 8
(scored as ``(q @ Bᵀ) @ Aᵀ``, as the artifact serves it).

``pareto``: the done-means of issue 11 through the real pipeline. On the ecommerce shop with ``--items`` items
(``--users`` users; leave-last-out, the development rows split 80/20 into training and validation rows),
:func:`trainers.pipeline.run_fold` trains the fp32 reference (its artifact is the study's reference) and builds a
few compressed models from the same cached fp32 base (low-rank item tables at ranks 4 and 8, with fp32 or 4-bit
factors, FFN neurons removed), each written as an artifact, loaded back, served on its fastest runtime and timed
against the reference in alternating blocks (``measure_paired``: the paired speedup with its 95% interval). HR@10
is on the validation rows. The result rows say which are within 1 point of the reference's HR@10 and the fastest
of those.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

SIDE_VOCAB, USER_VOCAB = [10, 20], [5, 10, 10, 10]   # ecommerce: category, brand; age band, interests 1..3
MAX_LEN, D_MODEL = 20, 64
STAGES = ("call", "lookups", "attention", "ffn", "layernorm", "scores")
RANKS = (4, 8)


# --------------------------------------------------------------------------------------------- breakdown

class _Upto(nn.Module):
    """``net``'s forward (one block) cut after ``stop`` (one of :data:`STAGES`); returns a ``(B, D)`` state
    (``scores``: the scores) so each cut computes what the full forward computes up to there.

    ``new=True`` is ``SeqRec.forward`` as it is now: the block's queries, FFN and LayerNorms for the last position
    only, the side (user) features in one lookup each; ``new=False`` the forward before: the block computing every
    position (the ``(T, T)`` causal mask), one lookup and one ``where`` per feature, the positions by
    ``pos_emb(arange)``. Both give the same scores up to float rounding (checked in :func:`breakdown`)."""

    def __init__(self, net: nn.Module, stop: str, new: bool) -> None:
        super().__init__()
        assert stop in STAGES and len(net.blocks) == 1, f"{stop=} blocks={len(net.blocks)}"
        self.net, self.stop, self.new = net, stop, new

    def _features(self, ids: torch.Tensor, tables: nn.ModuleList, vocab: list[int], limit, offset) -> torch.Tensor:
        from trainers.models.seqrec import _summed_lookup

        if self.new:
            return _summed_lookup(ids, tables, limit, offset)
        out = None
        for c, (emb, v) in enumerate(zip(tables, vocab)):
            e = emb(torch.where(ids[:, c] <= v, ids[:, c], torch.zeros_like(ids[:, c])))
            out = e if out is None else out + e
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net, stop, new = self.net, self.stop, self.new
        if stop == "call":
            return x[:, 0, -1:].float()
        x = x[:, :, -net.max_len:]
        items, T = x[:, 0], x.shape[-1]
        real = items > 0
        h = F.embedding(items, net.item_emb.weight) * math.sqrt(net.item_emb.embedding_dim)
        h = h + self._features(x[:, 1:1 + len(net.side_vocab)], net.side_emb, net.side_vocab, net.side_limit,
                               net.side_offset)
        h = h + (net.pos_emb.weight[net.max_len - T:] if new
                 else net.pos_emb(torch.arange(net.max_len - T, net.max_len, device=x.device)))
        keep = real.unsqueeze(-1).to(h.dtype)
        h = h * keep
        users = x[:, -len(net.user_vocab):, -1] if new else x[:, x.shape[1] - len(net.user_vocab):, -1]
        u = self._features(users, net.user_emb, net.user_vocab, net.user_limit, net.user_offset)
        if stop == "lookups":
            return h.sum(1) + u
        block = net.blocks[0]
        if new:
            allowed = torch.cat([real[:, :-1], torch.ones_like(real[:, -1:])], dim=1)[:, None]
            y = h[:, -1] + block.attn(block.ln1(h), allowed, True)                  # (B, D)
            if stop == "attention":
                return y + u
            y = (y + block.ffn(block.ln2(y))) * keep[:, -1]
            if stop == "ffn":
                return y + u
            q = net.ln(y) + u
        else:                    # the attention as it was: (B, H, T, Dh) views, every query, SDPA's own scale
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            allowed = (causal & real[:, None, :]) | torch.eye(T, dtype=torch.bool, device=x.device)
            a, B, D = block.attn, h.shape[0], h.shape[2]
            split = lambda t: t.view(B, T, a.heads, D // a.heads).transpose(1, 2)    # noqa: E731
            z = block.ln1(h)
            att = F.scaled_dot_product_attention(split(a.q(z)), split(a.k(z)), split(a.v(z)), attn_mask=allowed[:, None])
            y = h + a.out(att.transpose(1, 2).reshape(B, T, D))
            if stop == "attention":
                return y.sum(1) + u
            y = (y + block.ffn(block.ln2(y))) * keep
            if stop == "ffn":
                return y.sum(1) + u
            q = net.ln(y)[:, -1] + u
        if stop == "layernorm":
            return q
        if net.item_at is None:
            return q @ net.item_emb.weight.T
        return (q @ net.item_bt) @ net.item_at


def _net(n_items: int, seed: int, rank: int | None):
    from trainers.compress.lowrank import factorize
    from trainers.models.seqrec import SeqRec

    torch.manual_seed(seed)
    net = SeqRec(n_items, D_MODEL, 1, [D_MODEL], MAX_LEN, 0.2, SIDE_VOCAB, USER_VOCAB)
    for emb in net.user_emb:                       # zero at start; random here so the user term is computed
        nn.init.normal_(emb.weight, std=0.1)
    if rank:
        net.use_item_factors(*factorize(net.item_emb.weight.detach(), rank))
    return net.eval()


def _requests(n_items: int, rows: int, seed: int) -> torch.Tensor:
    """``(rows, 7, 20)`` int64 left-padded event windows with side and user features."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (rows, 1, MAX_LEN), generator=g)
    sides = [torch.randint(1, v + 1, (rows, 1, MAX_LEN), generator=g) for v in SIDE_VOCAB]
    users = [torch.randint(1, v + 1, (rows, 1, 1), generator=g).expand(rows, 1, MAX_LEN) for v in USER_VOCAB]
    x = torch.cat([items, *sides, *users], dim=1)
    lengths = torch.randint(3, MAX_LEN + 1, (rows,), generator=g)
    pad = torch.arange(MAX_LEN)[None, :] < (MAX_LEN - lengths)[:, None]
    return x.masked_fill(pad[:, None, :], 0).contiguous()


def _serve(module: nn.Module, runtime: str, example: torch.Tensor) -> nn.Module:
    from trainers.measure import torchscript
    from trainers.onnx_export import OnnxRuntimeModel, _export, _fix_bool_eyelike

    if runtime == "torchscript":
        return torchscript(module, example)
    proto = _export(module, example.repeat(2, 1, 1))
    _fix_bool_eyelike(proto)
    return OnnxRuntimeModel(proto, 1)


def _time_rounds(fns: dict[str, nn.Module], X: torch.Tensor, calls: int, rounds: int) -> dict[str, float]:
    """Microseconds per call of each served module: ``rounds`` rounds, each ``calls`` calls of every module in
    turn (order reversed every other round; round ``r`` sends request rows ``r * calls ..``, the same rows to
    every module), so machine load shared by all; the median over all calls of a module."""
    times: dict[str, list[int]] = {k: [] for k in fns}
    with torch.inference_mode():
        for f in fns.values():
            for i in range(20):
                f(X[i:i + 1])
        for r in range(rounds):
            rows = [X[(r * calls + i) % len(X)][None] for i in range(calls)]
            order = list(fns.items()) if r % 2 == 0 else list(reversed(fns.items()))
            for k, f in order:
                for xb in rows:
                    start = time.perf_counter_ns()
                    f(xb)
                    times[k].append(time.perf_counter_ns() - start)
    return {k: float(np.median(v)) / 1e3 for k, v in times.items()}


def breakdown(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    X = _requests(args.items, 200, args.seed)
    example = X[:1]
    out: dict[str, Any] = {"items": args.items, "d_model": D_MODEL, "max_len": MAX_LEN, "blocks": 1,
                           "side_vocab": SIDE_VOCAB, "user_vocab": USER_VOCAB,
                           "protocol": f"one thread, batch 1, {args.rounds} rounds of {args.calls} calls of every cut "
                                       "in turn; us = median over all calls of a cut",
                           "tables": {}}
    for table in ("fp32", *(f"rank{r}" for r in RANKS)):
        net = _net(args.items, args.seed, int(table[4:]) if table != "fp32" else None)
        with torch.inference_mode():          # the cut at "scores" is the model's own forward, both paths
            full, last = _Upto(net, "scores", False)(X), _Upto(net, "scores", True)(X)
            top_same = bool((full.topk(10).indices == last.topk(10).indices).all())
            assert torch.allclose(last, net(X), atol=1e-5) and torch.allclose(full, last, atol=1e-4)
        for runtime in ("torchscript", "onnxruntime"):
            served = {f"{path}/{stop}": _serve(_Upto(net, stop, path == "now"), runtime, example)
                      for path in ("before", "now") for stop in STAGES}
            print(f"{table} {runtime} ...", file=sys.stderr, flush=True)
            us = _time_rounds(served, X, args.calls, args.rounds)
            entry: dict[str, Any] = {}
            for path in ("before", "now"):
                cum = [us[f"{path}/{s}"] for s in STAGES]
                entry[path] = {"total_us": round(cum[-1], 2),
                               "stage_us": {s: round(c - p, 2) for s, c, p in zip(STAGES, cum, [0.0, *cum[:-1]])}}
            entry["now_vs_before_speedup"] = round(entry["before"]["total_us"] / entry["now"]["total_us"], 3)
            entry["same_top10"] = top_same
            out["tables"].setdefault(table, {})[runtime] = entry
    for table, by_rt in out["tables"].items():
        for runtime, e in by_rt.items():
            for path in ("before", "now"):
                stages = "  ".join(f"{s} {v:6.1f}" for s, v in e[path]["stage_us"].items())
                print(f"{table:6s} {runtime:12s} {path:4s} total {e[path]['total_us']:6.1f} us | {stages}",
                      file=sys.stderr)
    return out


# --------------------------------------------------------------------------------------------- pareto

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["breakdown", "pareto"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calls", type=int, default=10, help="breakdown: calls per round and cut")
    parser.add_argument("--rounds", type=int, default=150, help="breakdown: alternating rounds")
    parser.add_argument("--epochs", type=int, default=20, help="pareto: training epochs of the fp32 base")
    parser.add_argument("--repeats", type=int, default=1000, help="pareto: timed calls per paired measurement")
    parser.add_argument("--blocks", type=int, default=20, help="pareto: alternating blocks per paired measurement")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = breakdown(args) if args.what == "breakdown" else pareto(args)
    result["machine"] = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                         "python": platform.python_version(), "torch": torch.__version__}
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out or REPO / "benchmarks" / "results" / f"seqrec_{args.what}_{args.items}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} in {result['wall_seconds']} s", file=sys.stderr)
    return 0


#: (name, overrides of the compress block); the fp32 reference first. FT fine-tune epochs as conf/sweep.yaml
FT = 5
FP32_RUNTIMES = ("torchscript", "onnxruntime")     # the fp32 runtimes that compete at batch 1 (eager is ~2x slower)
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("fp32", {"finetune_epochs": 0}),
    ("rank 4", {"lowrank": {"rank": 4}}),
    ("rank 8", {"lowrank": {"rank": 8}}),
    ("rank 4, uniform 4b", {"lowrank": {"rank": 4}, "quant": {"scheme": "uniform", "bits": 4}}),
    ("rank 8, uniform 4b", {"lowrank": {"rank": 8}, "quant": {"scheme": "uniform", "bits": 4}}),
    ("rank 4, uniform 4b, neurons 0.5", {"lowrank": {"rank": 4}, "quant": {"scheme": "uniform", "bits": 4},
                                         "neurons": {"ratio": 0.5}}),
]


def pareto(args: argparse.Namespace) -> dict[str, Any]:
    from _config import base_config, deep_merge

    from trainers import artifact
    from trainers.base_cache import BaseCache
    from trainers.data import load_dataset, split_dataset
    from trainers.measure import LatencyProtocol, build_runtime, measure_paired
    from trainers.pipeline import ReferenceArtifact, evaluate_artifact, run_fold
    from trainers.task import task_of

    torch.set_num_threads(1)
    latency = {"threads": 1, "batch_size": 1, "warmup": 50, "repeats": args.repeats, "blocks": args.blocks,
               "throughput_batch": 256, "runtimes": None}
    base = deep_merge(base_config("ecommerce", "seqrec"),
                      {"data": {"n_users": args.users, "n_items": args.items},
                       "train": {"epochs": args.epochs, "threads": 1}, "latency": latency,
                       "compress": {"finetune_epochs": FT}})
    ds = load_dataset(base["data"])
    base["n_classes"] = ds.n_classes
    dev, _, folds = split_dataset(ds, None, 2, seed=args.seed)
    tr, va = dev[folds[0][0]], dev[folds[0][1]]        # cv.folds=2, fold 0: what a study trial trains and scores
    arrays = (ds.X[tr], ds.y[tr], ds.X[va], ds.y[va])
    Xv = task_of(net_type="seqrec").as_input(arrays[2])
    protocol = LatencyProtocol.from_config(latency)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="squeeze-seqrec-pareto-") as tmp:
        cache = BaseCache(Path(tmp) / "cache", 2**30)
        reference = None
        for name, comp in SETTINGS:
            cfg = deep_merge(base, {"compress": comp})
            path = Path(tmp) / f"{len(rows)}.sqz"
            print(f"{name} ...", file=sys.stderr, flush=True)
            r = run_fold(cfg, *arrays, seed=args.seed, artifact_path=path, cache=cache, reference=reference)
            row = {"setting": name, "compress": comp, "hr": r.accuracy, "ndcg": r.ndcg, "size_bytes": r.size_bytes,
                   "runtime": r.runtime, "latency_ms": r.latency_ms, "fit_seconds": r.fit_seconds,
                   "eval_seconds": r.eval_seconds, "avg_bits": r.avg_bits, "units_kept": r.units_kept}
            if reference is None:      # the study's reference: fp32, on its own best runtime; A/A noise floor
                reference = ReferenceArtifact(str(path), r.runtime, r.latency_ms)
                aa = evaluate_artifact(path, arrays[2], arrays[3], latency, runtime=r.runtime, reference=reference)
                row["a_a"] = {k: aa[k] for k in ("speedup", "speedup_ci_low", "speedup_ci_high")}
                # the reference's runtime is chosen from one unpaired measurement per runtime: time fp32 on every
                # fp32 runtime, so a speedup is also stated against fp32 at its fastest (not only the chosen one)
                fp32_served = {rt: build_runtime(artifact.load(path), rt, Xv[:1]) for rt in FP32_RUNTIMES}
            else:
                row.update(speedup=r.speedup, speedup_ci=[r.speedup_ci_low, r.speedup_ci_high],
                           latency_paired_ms=r.latency_measured_ms, hr_vs_fp32_pt=100 * (r.accuracy - rows[0]["hr"]))
            served = build_runtime(artifact.load(path), r.runtime, Xv[:1])
            row["speedup_vs_fp32_on"] = {}
            for rt, ref in fp32_served.items():
                s = measure_paired(served, ref, Xv, protocol, r.runtime).paired
                row["speedup_vs_fp32_on"][rt] = {"speedup": s.speedup, "ci": [s.speedup_ci_low, s.speedup_ci_high],
                                                 "fp32_ms": s.reference_ms}
            row["speedup_vs_fastest_fp32"] = min(v["speedup"] for v in row["speedup_vs_fp32_on"].values())
            rows.append(row)
            print(f"  HR@10 {row['hr']:.4f}  {row['runtime']}  {row['latency_ms'] * 1e3:.1f} us  "
                  f"x{row.get('speedup') or 1:.2f} {row.get('speedup_ci', '')}  vs fastest fp32 "
                  f"x{row['speedup_vs_fastest_fp32']:.2f}  {row['size_bytes']} B",
                  file=sys.stderr, flush=True)
    within = [r for r in rows[1:] if r["hr_vs_fp32_pt"] >= -1.0]
    best = max(within, key=lambda r: r["speedup_vs_fastest_fp32"], default=None)
    return {"data": base["data"], "model": base["model"], "train": base["train"], "latency": latency,
            "finetune_epochs": FT, "fold": "cv.folds=2, fold 0 of the development rows (leave-last-out)",
            "protocol": "run_fold per setting from one cached fp32 base; HR@10 on the fold's validation rows; "
                        "each compressed artifact on its fastest runtime timed against the fp32 reference artifact "
                        "on the reference's runtime (measure_paired, alternating blocks, 95% bootstrap CI)",
            "rows": rows, "best_within_1pt": best and {k: best[k] for k in (
                "setting", "speedup", "speedup_ci", "speedup_vs_fastest_fp32", "speedup_vs_fp32_on", "hr_vs_fp32_pt",
                "runtime")}}


if __name__ == "__main__":
    sys.exit(main())
