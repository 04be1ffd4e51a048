"""Trials per minute of this build against an older commit, side by side (issue 9's throughput line).

    PYTHONPATH=. python benchmarks/trials_per_minute.py --old fba977a --data digits --seconds 300 \
        [--fixed-finetune] [--out benchmarks/results/trials_per_minute_<data>.json]

Both builds run ``python -m search.sweep space=compress_only model.hidden=[300,100] cv.folds=3
study.timeout=<seconds>`` at the same time (two processes, one per core), each from its own git worktree
(the old one made with ``git worktree add --detach``, removed afterwards) and its own stores. Trials per
minute = finished trials (COMPLETE + PRUNED) over the span from the first trial's start to the last one's end,
read from Optuna's timestamps. ``--fixed-finetune`` takes ``compress.finetune_epochs`` and
``compress.finetune_lr`` out of this build's space (the config's 5 epochs at ``train.lr``, as the old space had
them), so both do the same fine-tune work per trial and the comparison is of the machinery alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # the package `search`, not benchmarks/search.py beside this file
#: what --fixed-finetune takes out of the space: the keys the old space did not search
FINETUNE_KEYS = ("compress.finetune_epochs", "compress.finetune_lr")


def _sweep_args(data: str, seconds: float, folder: Path) -> list[str]:
    return [f"data={data}", "space=compress_only", "model.hidden=[300,100]", "model.width=1.0", "cv.folds=3",
            "study.n_trials=100000", f"study.timeout={seconds}", f"study.storage=sqlite:///{folder}/optuna.db",
            f"mlflow.tracking_uri=sqlite:///{folder}/mlflow.db", f"mlflow.artifact_location={folder}/artifacts"]


def _fixed_finetune_main(argv: list[str]) -> int:
    """Child: ``search.sweep`` with the fine-tune keys taken out of the space."""
    import search.sweep
    from benchmarks._config import space_without

    with space_without(FINETUNE_KEYS):
        return search.sweep.main(argv)


def throughput(folder: Path) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{folder}/optuna.db"
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    done = [t for t in study.trials if t.datetime_complete is not None]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"finished": len(done), "pruned": sum(t.state.name == "PRUNED" for t in done),
            "span_seconds": round(span, 1), "trials_per_minute": round(60 * len(done) / span, 2)}


def main() -> None:
    if sys.argv[1:2] == ["--child-fixed"]:
        sys.exit(_fixed_finetune_main(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the older commit (e.g. fba977a, the build issue 9 was filed on)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--fixed-finetune", action="store_true", help="same fine-tune work per trial as the old space")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="squeeze-tpm-") as tmp:
        tmp = Path(tmp)
        old_tree = tmp / "old-tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.old], cwd=REPO, check=True,
                       capture_output=True)
        try:
            (old_tree / ".venv").symlink_to(REPO / ".venv")
            env = {**os.environ, "PYTHONPATH": "."}
            arms = {}
            for name, cwd, cmd in [
                ("old", old_tree, [sys.executable, "-m", "search.sweep"]),
                ("new", REPO, [sys.executable, __file__, "--child-fixed"] if args.fixed_finetune
                 else [sys.executable, "-m", "search.sweep"]),
            ]:
                folder = tmp / name
                folder.mkdir()
                log = open(folder / "out.txt", "w")
                arms[name] = (folder, subprocess.Popen([*cmd, *_sweep_args(args.data, args.seconds, folder)],
                                                       cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
            for name, (folder, proc) in arms.items():
                if proc.wait() != 0:
                    raise SystemExit(f"{name} sweep failed: {(folder / 'out.txt').read_text()[-2000:]}")
            head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                  text=True).stdout.strip()
            rows = {name: {"commit": args.old if name == "old" else head, **throughput(folder)}
                    for name, (folder, _) in arms.items()}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=REPO, capture_output=True)
    out = {"data": args.data, "seconds": args.seconds, "fixed_finetune": args.fixed_finetune, "arms": rows,
           "new_over_old": rows["new"]["trials_per_minute"] / rows["old"]["trials_per_minute"]}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
