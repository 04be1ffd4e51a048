"""What the test files share.

``TINY`` is the one definition of the shrunk real sweep that the end-to-end tests run (in-process or as a
subprocess); a file that needs something else says so beside its import (test_sweep.py and
test_workers.py turn early stopping off, test_reproduce.py runs three trials without it).
"""

from __future__ import annotations

#: a study small enough for CI, in seconds: 2 folds, 2 epochs, 1 fine-tune epoch, a short latency protocol,
#: the compress_only space, no seed recipes; early stopping stays at the config's default (on)
TINY = ["study.seed_recipes=[]", "cv.folds=2", "train.epochs=2", "compress.finetune_epochs=1", "latency.repeats=5",
        "latency.warmup=2", "latency.throughput_batch=32", "space=compress_only"]
