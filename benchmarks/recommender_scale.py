"""Recommender at catalogue scale: seqrec on a synthetic shop of 20,000 users and 20,000 items, trained with
the full softmax and with the sampled softmax (``train.loss=full | sampled``), on CPU.

Per loss: seconds per training epoch, the peak resident memory of the process that trains and scores
(``resource.getrusage``), and HR@10 / NDCG@10 over **all** items of the loaded artifact on the test rows
(each user's last event) after the same number of epochs; plus the time and memory to generate the shop,
and the popularity baseline.

Protocol: the data are generated once (the parent's peak RSS after that is ``data.peak_rss_mb``); each loss
then runs in a forked child process (so its peak RSS is its own; a forked child starts from the parent's
memory) through :func:`trainers.pipeline.run_fold` as a search trial does, on all development rows (no
compression, ``compress.finetune_epochs=0``), with ``train.threads=1`` as in a study. ``epoch_seconds`` is
the training time (model build included) divided by the epochs. The model is conf/model/seqrec.yaml's
default (``d_model`` 64, one block); training as conf/sweep.yaml but ``--epochs``.

    PYTHONPATH=. python benchmarks/recommender_scale.py --out benchmarks/results/recommender_scale.json
    PYTHONPATH=. python benchmarks/recommender_scale.py --out /tmp/quick.json --quick   # a tiny smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from _config import base_config, deep_merge  # noqa: E402 - benchmarks/ is on sys.path

from trainers.data import load_dataset, split_dataset
from trainers.pipeline import run_fold
from trainers.ranking import rank_popularity

#: evaluation only: one runtime, few latency repeats (this is not a latency benchmark)
LATENCY = {"runtimes": ["fp32_dense"], "warmup": 2, "repeats": 10, "throughput_batch": 32}
QUICK = {"users": 300, "items": 500, "epochs": 1, "negatives": 32}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _child(queue, cfg, X_dev, y_dev, X_test, y_test, epochs: int, artifact_path: str) -> None:
    """One loss, in its own process: train + score through run_fold; puts a result row (or the error)."""
    try:
        result = run_fold(cfg, X_dev, y_dev, X_test, y_test, seed=0, artifact_path=artifact_path)
        queue.put({"loss": cfg["train"]["loss"], "negatives": cfg["train"]["negatives"], "epochs": epochs,
                   "epoch_seconds": result.train_seconds / epochs, "train_seconds": result.train_seconds,
                   "eval_seconds": result.eval_seconds, "hr": result.accuracy, "ndcg": result.ndcg,
                   "size_bytes": result.size_bytes, "peak_rss_mb": peak_rss_mb()})
    except BaseException:  # noqa: BLE001 - reported by the parent
        queue.put({"loss": cfg["train"]["loss"], "error": traceback.format_exc()})


def run_loss(cfg: dict[str, Any], arrays: tuple, epochs: int, tmp: str) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")  # the child shares the generated data instead of copying it
    queue = ctx.Queue()
    path = str(Path(tmp) / f"{cfg['train']['loss']}.sqz")
    child = ctx.Process(target=_child, args=(queue, cfg, *arrays, epochs, path))
    child.start()
    row = queue.get()
    child.join()
    if "error" in row:
        raise RuntimeError(f"train.loss={row['loss']} failed:\n{row['error']}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--users", type=int, default=20_000, help="data.n_users")
    parser.add_argument("--items", type=int, default=20_000, help="data.n_items")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of both losses")
    parser.add_argument("--negatives", type=int, default=256, help="train.negatives of the sampled softmax")
    parser.add_argument("--losses", nargs="+", choices=["sampled", "full"], default=["sampled", "full"])
    parser.add_argument("--quick", action="store_true", help=f"tiny run (smoke test): {QUICK}")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    torch.set_num_threads(1)

    base = deep_merge(base_config("ecommerce", "seqrec"),
                      {"data": {"n_users": args.users, "n_items": args.items},
                       "train": {"epochs": args.epochs, "negatives": args.negatives, "threads": 1},
                       "compress": {"finetune_epochs": 0}, "latency": LATENCY})
    start = time.perf_counter()
    ds = load_dataset(base["data"])
    data_seconds = time.perf_counter() - start
    dev, test, _ = split_dataset(ds, None, 2, seed=0)
    arrays = (ds.X[dev], ds.y[dev], ds.X[test], ds.y[test])
    data = {"n_users": len(dev), "n_items": ds.n_classes - 1, "events": int((ds.X[dev][:, 0] > 0).sum()) + len(dev),
            "generate_seconds": data_seconds, "X_mb": ds.X.nbytes / 2**20, "peak_rss_mb": peak_rss_mb()}
    print(f"data: {data['n_users']} users, {data['n_items']} items, {data['events']} training events; generated "
          f"in {data_seconds:.1f} s, peak RSS {data['peak_rss_mb']:.0f} MiB", file=sys.stderr, flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="squeeze-rec-scale-") as tmp:
        for loss in args.losses:
            cfg = deep_merge(base, {"train": {"loss": loss}})
            cfg["n_classes"] = ds.n_classes
            rows.append(run_loss(cfg, arrays, args.epochs, tmp))
            r = rows[-1]
            print(f"train.loss={loss:<8} {r['epoch_seconds']:7.1f} s/epoch  peak RSS {r['peak_rss_mb']:6.0f} MiB  "
                  f"HR@10 {r['hr']:.4f}  NDCG@10 {r['ndcg']:.4f}  (eval {r['eval_seconds']:.1f} s)",
                  file=sys.stderr, flush=True)
    k = int(base["data"]["top_k"])
    popularity = rank_popularity(*arrays, ds.n_classes, k)

    train = {key: value for key, value in base["train"].items() if key != "loss"}     # the loss is per run
    out = {"data": data, "model": base["model"], "train": train, "k": k, "popularity": popularity,
           "protocol": "generate once; per loss a forked process trains on all development rows and scores the "
                       "loaded artifact on the test rows (each user's last event), ranking all items minus the "
                       "user's history; epoch_seconds = training seconds / epochs; peak RSS by getrusage",
           "machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "processor": platform.processor() or platform.machine(),
                       "cpus": multiprocessing.cpu_count()},
           "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(table(rows, popularity, k))
    return 0


def table(rows: list[dict[str, Any]], popularity: dict[str, float], k: int) -> str:
    lines = [f"| train.loss | s / epoch | peak RSS (MiB) | HR@{k} | NDCG@{k} |", "|---|---|---|---|---|",
             f"| popularity | | | {popularity['hr']:.4f} | {popularity['ndcg']:.4f} |"]
    for r in rows:
        name = f"sampled ({r['negatives']} negatives)" if r["loss"] == "sampled" else r["loss"]
        lines.append(f"| {name} | {r['epoch_seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['hr']:.4f} | {r['ndcg']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
