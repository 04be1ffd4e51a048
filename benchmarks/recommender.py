"""Recommender benchmark: seqrec on the default synthetic shop (data=ecommerce), HR@10 / NDCG@10 vs size and
latency, against the popularity baseline.

Protocol (leave-last-out, :mod:`trainers.data._sequence`): every model trains on all development rows
(each user's events up to and including the validation event) and is scored on the test rows (each
user's last event, never seen in training), ranking all items minus the user's history. Every setting goes
through :func:`trainers.pipeline.run_fold` as a search trial does: fit, compress, fine-tune, write the
artifact, load it back, score and time the *loaded* model (latency = scoring every item for one request,
batch 1, 1 thread). Each setting runs with several training seeds (``--seeds``); the JSON keeps every run
and the table shows mean and standard deviation.

    PYTHONPATH=. python benchmarks/recommender.py --out benchmarks/results/recommender.json
    PYTHONPATH=. python benchmarks/recommender.py --out /tmp/quick.json --quick    # a tiny smoke run
    PYTHONPATH=. python benchmarks/recommender.py --methods fp32 fp32-no-user-features \
        --out benchmarks/results/recommender_user_features.json      # user profiles: with / without
    PYTHONPATH=. python benchmarks/recommender.py --methods fp32 uniform lowrank lowrank+uniform \
        --out benchmarks/results/recommender_lowrank.json            # low-rank embedding tables
    PYTHONPATH=. python benchmarks/recommender.py --methods fp32 fp32+finetune uniform lowrank lowrank+uniform \
        --data n_users=3000 n_items=5000 --out benchmarks/results/recommender_lowrank_5000.json   # larger catalogue
    # 20,000 users x 20,000 items, sampled softmax, 8 epochs (fp32's best on a 5,000-user test subset), one seed
    # (benchmarks/results/recommender_20000.json merges the runs of these two commands, split over parallel
    # processes for time; every setting is seeded on its own, so a single process gives the same models)
    PYTHONPATH=. python benchmarks/recommender.py --seeds 0 --data n_users=20000 n_items=20000 \
        --train loss=sampled epochs=8 --settings fp32 fp32+finetune "uniform 4b" "rank 16, uniform 4b" \
        "rank 8, uniform 4b" "rank 4, uniform 4b" "rank 8" --out /tmp/rec20k.json
    PYTHONPATH=. python benchmarks/recommender.py --seeds 0 --data n_users=20000 n_items=20000 \
        --train loss=sampled epochs=8 --settings "rank 8, uniform 4b" --compress quant.granularity=tensor \
        --out /tmp/rec20k_tensor.json           # one grid per factor instead of one per item row

The model reads the users' profiles (age band, interests: ``model.user_features=true``, the default);
``fp32-no-user-features`` is the same fp32 model without them.

Base config: conf/sweep.yaml with conf/data/ecommerce.yaml and conf/model/seqrec.yaml (what
``python -m search.sweep data=ecommerce model=seqrec`` composes); each setting deep-merges its overrides.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _config import base_config, deep_merge  # noqa: E402 - benchmarks/ is on sys.path

from trainers import artifact
from trainers.data import load_dataset, split_dataset
from trainers.pipeline import run_fold
from trainers.ranking import rank_popularity

REPO = Path(__file__).resolve().parents[1]
FT = 5  # fine-tune epochs of every compressed setting (conf/sweep.yaml's default)

# (method, overrides deep-merged into the base config). The fp32 reference comes first.
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("fp32", {"compress": {"finetune_epochs": 0}}),
    ("fp32-no-user-features", {"model": {"user_features": False}, "compress": {"finetune_epochs": 0}}),
    ("fp32+finetune", {"compress": {"finetune_epochs": FT}}),     # trained as long as the compressed models
    *[("uniform", {"compress": {"quant": {"scheme": "uniform", "bits": b}}}) for b in (8, 4, 3, 2)],
    *[("fixed_point", {"compress": {"quant": {"scheme": "fixed_point", "bits": b}}}) for b in (8, 4)],
    ("ternary", {"compress": {"quant": {"scheme": "ternary", "threshold": 0.7}}}),
    ("binary", {"compress": {"quant": {"scheme": "binary"}}}),
    ("prune", {"compress": {"prune": {"ratio": 0.7, "schedule": "gradual"}}}),
    ("prune+uniform", {"compress": {"prune": {"ratio": 0.5, "schedule": "gradual"},
                                    "quant": {"scheme": "uniform", "bits": 4}}}),
    ("neurons+prune+uniform", {"compress": {"neurons": {"ratio": 0.5}, "prune": {"ratio": 0.5, "schedule": "gradual"},
                                            "quant": {"scheme": "uniform", "bits": 4}}}),
    ("lowrank", {"compress": {"lowrank": {"rank": 8}}}),         # embedding tables A @ B, fp32 factors
    *[("lowrank+uniform", {"compress": {"lowrank": {"rank": r}, "quant": {"scheme": "uniform", "bits": 4}}})
      for r in (16, 8, 4)],
]

QUICK = {"data": {"n_users": 120, "n_items": 60}, "train": {"epochs": 2},
         "latency": {"warmup": 2, "repeats": 10, "throughput_batch": 32}}


def setting_label(method: str, overrides: Mapping[str, Any]) -> str:
    comp = overrides.get("compress", {})
    parts = []
    if comp.get("lowrank"):
        parts.append(f"rank {comp['lowrank']['rank']}")
    if comp.get("neurons"):
        parts.append(f"neurons {comp['neurons']['ratio']}")
    if comp.get("prune"):
        parts.append(f"prune {comp['prune']['ratio']}")
    quant = comp.get("quant", {})
    if quant.get("scheme") in ("uniform", "fixed_point"):
        parts.append(f"{quant['scheme']} {quant['bits']}b")
    elif quant.get("scheme"):
        parts.append(quant["scheme"])
    return ", ".join(parts) or method


def parse_value(text: str) -> Any:
    """A ``KEY=VALUE`` value: JSON (numbers, true, null, lists), else the plain string (``loss=sampled``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def size_breakdown(path: Path) -> dict[str, float]:
    """Share of the model's parameters in the item table, the other embeddings and the transformer."""
    net = artifact.load(path).net
    counts = {"item_table": net.item_emb.weight.numel(),
              "other_embeddings": sum(m.weight.numel() for m in [*net.side_emb, *net.user_emb, net.pos_emb]),
              "transformer": sum(p.numel() for p in net.blocks.parameters()) + sum(p.numel() for p in net.ln.parameters())}
    total = sum(counts.values())
    return {"parameters": total, **{f"{k}_share": v / total for k, v in counts.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds per setting")
    parser.add_argument("--quick", action="store_true", help="tiny data and 2 epochs (smoke test)")
    parser.add_argument("--methods", nargs="+", choices=[m for m, _ in SETTINGS], default=None,
                        help="run only these settings (the first is the reference of the ratios)")
    parser.add_argument("--settings", nargs="+", choices=[setting_label(m, o) for m, o in SETTINGS], default=None,
                        help="run only these settings by label, e.g. fp32 'uniform 4b' 'rank 8, uniform 4b' "
                             "(with --methods: both must match)")
    parser.add_argument("--data", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override data.* keys of the shop, e.g. interest_mix=0.5 max_events=8")
    parser.add_argument("--train", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override train.* keys of every setting, e.g. loss=sampled negatives=256 epochs=10")
    parser.add_argument("--compress", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override compress.* keys of every setting (dotted, e.g. quant.granularity=tensor); "
                             "the settings' labels then end with them")
    args = parser.parse_args(argv)
    settings = [s for s in SETTINGS if (args.methods is None or s[0] in args.methods)
                and (args.settings is None or setting_label(*s) in args.settings)]
    torch.set_num_threads(1)

    base = base_config("ecommerce", "seqrec")
    if args.quick:
        base = deep_merge(base, QUICK)
    for group, items in (("data", args.data), ("train", args.train)):
        for item in items:
            key, _, value = item.partition("=")
            base[group][key] = parse_value(value)
    for item in args.compress:
        key, _, value = item.partition("=")
        *path, leaf = key.split(".")
        node = base["compress"]
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(value)
    suffix = f" ({' '.join(args.compress)})" if args.compress else ""
    ds = load_dataset(base["data"])
    dev, test, _ = split_dataset(ds, None, 2, seed=0)
    X_dev, y_dev, X_test, y_test = ds.X[dev], ds.y[dev], ds.X[test], ds.y[test]
    k = int(base["data"]["top_k"])
    popularity = rank_popularity(X_dev, y_dev, X_test, y_test, ds.n_classes, k)
    print(f"data: {len(dev)} users, {ds.n_classes - 1} items, {int((X_dev[:, 0] > 0).sum()) + len(dev)} training "
          f"events; popularity HR@{k} {popularity['hr']:.4f} NDCG@{k} {popularity['ndcg']:.4f}", file=sys.stderr)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="squeeze-rec-bench-") as tmp:
        for method, overrides in settings:
            cfg = deep_merge(base, overrides)
            cfg["n_classes"] = ds.n_classes
            for seed in args.seeds:
                start = time.perf_counter()
                path = Path(tmp) / f"{method}-{seed}.sqz"
                result = run_fold(cfg, X_dev, y_dev, X_test, y_test, seed=seed, artifact_path=path,
                                  meta={"classes": ds.classes})
                row = {"method": method, "setting": setting_label(method, overrides) + suffix, "seed": seed,
                       "settings": overrides, "hr": result.accuracy, "ndcg": result.ndcg,
                       "size_bytes": result.size_bytes, "latency_ms": result.latency_ms,
                       "latency_p90_ms": result.latency_p90_ms, "throughput_per_s": result.throughput_per_s,
                       "runtime": result.runtime, "sparsity": result.sparsity, "avg_bits": result.avg_bits,
                       "fit_seconds": result.fit_seconds, "seconds": time.perf_counter() - start}
                if method == "fp32" and seed == args.seeds[0]:
                    row["breakdown"] = size_breakdown(path)
                rows.append(row)
                print(f"{row['setting']:<32} seed {seed}: HR@{k} {row['hr']:.4f} NDCG@{k} {row['ndcg']:.4f} "
                      f"{row['size_bytes']:>7} B {row['latency_ms']:.3f} ms ({row['seconds']:.0f} s)",
                      file=sys.stderr, flush=True)

    summary = summarize(rows, popularity, k)
    out = {"data": base["data"], "model": base["model"], "train": base["train"], "latency": base["latency"],
           "k": k, "n_users": int(len(dev)), "n_items": int(ds.n_classes - 1), "seeds": args.seeds,
           "protocol": "train on all development rows (leave-last-out), score the loaded artifact on the test "
                       "rows (each user's last event), ranking all items minus the user's history",
           "machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "processor": platform.processor() or platform.machine()},
           "popularity": popularity, "summary": summary, "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(table(summary, popularity, k))
    return 0


def summarize(rows: list[dict[str, Any]], popularity: Mapping[str, float], k: int) -> list[dict[str, Any]]:
    """Mean and std over seeds per setting, with size and latency relative to the fp32 reference."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    out = []
    for name in settings:
        runs = [r for r in rows if r["setting"] == name]
        mean = {key: float(np.mean([r[key] for r in runs])) for key in
                ("hr", "ndcg", "size_bytes", "latency_ms", "sparsity", "avg_bits", "fit_seconds")}
        mean.update({"hr_std": float(np.std([r["hr"] for r in runs])),
                     "ndcg_std": float(np.std([r["ndcg"] for r in runs]))})
        out.append({"setting": name, "method": runs[0]["method"], "runtime": runs[0]["runtime"], **mean})
    ref = out[0]
    for row in out:
        row["compression_ratio"] = ref["size_bytes"] / row["size_bytes"]
        row["hr_vs_reference_pt"] = 100 * (row["hr"] - ref["hr"])
        row["hr_vs_popularity"] = row["hr"] / max(popularity["hr"], 1e-12)
    return out


def table(summary: list[dict[str, Any]], popularity: Mapping[str, float], k: int) -> str:
    lines = [f"| setting | HR@{k} | NDCG@{k} | Δ HR vs fp32 (pt) | size (B) | × smaller | latency (ms) | avg bits |",
             "|---|---|---|---|---|---|---|---|",
             f"| popularity | {popularity['hr']:.4f} | {popularity['ndcg']:.4f} | | | | | |"]
    for r in summary:
        lines.append(f"| {r['setting']} | {r['hr']:.4f} ± {r['hr_std']:.4f} | {r['ndcg']:.4f} ± {r['ndcg_std']:.4f} | "
                     f"{r['hr_vs_reference_pt']:+.1f} | {r['size_bytes']:.0f} | {r['compression_ratio']:.1f} | "
                     f"{r['latency_ms']:.3f} | {r['avg_bits']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
