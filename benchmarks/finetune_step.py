"""What one fine-tune step costs per compression setting, against a plain training step (issue 9's trials per minute).

    PYTHONPATH=. python benchmarks/finetune_step.py [--out benchmarks/results/finetune_step.json] [--repeats 3]

LeNet-300-100 on digits (1,198 training rows, batch 64, 5 epochs = 95 steps, one thread): trained once, then for
each setting (conf/'s compress block plus the setting's keys) :func:`trainers.compress.compress` runs its fine-tune (fake quantization and masks in the loop) on a
copy of that model. ``ms_per_step`` is the best of ``--repeats`` runs over the step count; ``vs_training`` divides it
by a plain training step of the same net (``train`` on the uncompressed copy, same epochs).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._config import base_config, deep_merge  # noqa: E402

#: the settings timed: name -> compress-config overrides (prune / neurons / quant blocks)
SETTINGS: dict[str, dict] = {
    "no quantization": {},
    "uniform 4 bit": {"quant": {"scheme": "uniform", "bits": 4}},
    "uniform 4 bit, clip 0.99": {"quant": {"scheme": "uniform", "bits": 4, "clip": 0.99}},
    "uniform 4 bit, learned step": {"quant": {"scheme": "uniform", "bits": 4, "learn_step": True}},
    "uniform 4 bit + 80% gradual pruning": {"quant": {"scheme": "uniform", "bits": 4},
                                            "prune": {"ratio": 0.8, "schedule": "gradual"}},
    "uniform 4 bit, clip 0.99 + 80% gradual pruning": {"quant": {"scheme": "uniform", "bits": 4, "clip": 0.99},
                                                       "prune": {"ratio": 0.8, "schedule": "gradual"}},
    "fixed point 6 bit": {"quant": {"scheme": "fixed_point", "bits": 6}},
    "binary": {"quant": {"scheme": "binary", "bits": 1}},
    "ternary": {"quant": {"scheme": "ternary"}},
}
EPOCHS, BATCH, ROWS = 5, 64, 1198


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "finetune_step.json"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from sklearn.datasets import load_digits

    from trainers.compress import compress
    from trainers.fit import train
    from trainers.models import MLP

    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor((X - X.mean(0)) / (X.std(0) + 1e-6), dtype=torch.float32)[:ROWS]
    y = torch.tensor(y)[:ROWS]
    cfg = base_config("digits", "mlp")                    # conf/: the fine-tune and training a study starts from
    train_cfg = {**cfg["train"], "epochs": EPOCHS, "batch_size": BATCH, "threads": 1}
    compress_cfg = {**cfg["compress"], "finetune_epochs": EPOCHS}
    torch.manual_seed(0)
    base = MLP(X.shape[1], [300, 100], 10)
    train(base, X, y, train_cfg, 0, device="cpu")
    steps = EPOCHS * -(-ROWS // BATCH)

    def best_ms(run) -> float:
        times = []
        for _ in range(args.repeats):
            net = copy.deepcopy(base)
            start = time.perf_counter()
            run(net)
            times.append(time.perf_counter() - start)
        return 1000 * min(times) / steps

    training = best_ms(lambda net: train(net, X, y, train_cfg, 1, device="cpu"))
    rows = [{"setting": "plain training", "ms_per_step": training, "vs_training": 1.0}]
    for name, overrides in SETTINGS.items():
        setting = deep_merge(compress_cfg, overrides)
        ms = best_ms(lambda net, setting=setting: compress(net, X, y, setting, train_cfg, 0, device="cpu"))
        rows.append({"setting": name, "ms_per_step": ms, "vs_training": ms / training})
        print(f"{name:50s} {ms:.2f} ms/step ({ms / training:.2f}x training)", flush=True)
    out = {"model": "MLP 64-300-100-10", "rows_trained": ROWS, "batch_size": BATCH, "epochs": EPOCHS, "steps": steps,
           "threads": 1, "repeats": args.repeats, "torch": torch.__version__, "machine": platform.machine(),
           "rows": rows, "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                                  capture_output=True, text=True).stdout.strip()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
