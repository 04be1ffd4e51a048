"""One way into every command (search/cli.py): help, one-line bad input, Ctrl-C, the ``squeeze`` script."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from search import cli
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
MODULES = {name: module for name, (module, _) in cli.COMMANDS.items()}


def stores(tmp: Path) -> list[str]:
    return [f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"mlflow.artifact_location={tmp}/artifacts",
            f"study.storage=sqlite:///{tmp}/optuna.db"]


def test_six_commands():
    assert set(cli.COMMANDS) == {"sweep", "pareto", "reproduce", "export", "predict", "doctor"}


@pytest.mark.parametrize("command", sorted(MODULES))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_0(command, flag, capsys):
    main = importlib.import_module(MODULES[command]).main
    assert main([flag]) == 0
    assert capsys.readouterr().out.startswith("usage:")
    assert cli.main([command, "study.name=x", flag]) == 0  # --help anywhere, through the squeeze script
    assert capsys.readouterr().out.startswith("usage:")


@pytest.mark.parametrize("command", sorted(MODULES))
def test_unknown_key_is_one_line_exit_2_nothing_created(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default stores (mlruns/) are relative: nothing may appear here
    main = importlib.import_module(MODULES[command]).main
    for run in (lambda: main(["no_such.key=1"]), lambda: cli.main([command, "no_such.key=1"])):
        assert run() == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, captured.err
        assert lines[0].startswith("squeeze: error: no_such.key: "), lines
        assert "Traceback" not in captured.err and captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_squeeze_lists_commands_and_dispatches(tmp_path, capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert f"  {command}" in out
    assert cli.main([]) == 2
    assert "usage: squeeze" in capsys.readouterr().err
    assert cli.main(["swep", "study.name=x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["squeeze: error: command: unknown command 'swep'; did you mean sweep? commands: "
                   "sweep, pareto, reproduce, export, predict, doctor"]
    # dispatch reaches the command itself: its own one-line error, exit 2
    assert cli.main(["pareto", "study.name=none", f"study.storage=sqlite:///{tmp_path}/none.db"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("squeeze: error: study.storage"), err
    assert not (tmp_path / "none.db").exists()


def test_console_script_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["squeeze"].partition(":")
    assert getattr(importlib.import_module(module), func) is cli.main


def test_python_m_pareto_uses_the_wrapper():
    proc = subprocess.run([sys.executable, "-m", "search.pareto", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m search.pareto"), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "search.cli", "doctor", "fix=maybe"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == "squeeze: error: fix: must be true or false, got 'maybe'"


def test_wrapper_interrupt_and_input_error(capsys):
    from trainers.errors import InputError

    def interrupted(argv):
        raise KeyboardInterrupt

    def bad(argv):
        raise InputError("some.key", "is wrong")

    assert cli.run_command("x", "usage: x", interrupted, [], interrupted="; again") == 130
    assert capsys.readouterr().err.strip() == "squeeze: interrupted; again"
    assert cli.run_command("x", lambda: "usage: x", bad, ["a=1"]) == 2
    assert capsys.readouterr().err.strip() == "squeeze: error: some.key: is wrong"
    assert cli.run_command("x", lambda: "usage: x", bad, ["-h"]) == 0
    assert capsys.readouterr().out.strip() == "usage: x"


def test_deferred_sigint_finishes_the_block_then_raises():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with cli.deferred_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("cleaned up")
    assert done == ["cleaned up"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with cli.deferred_sigint():  # nothing received: nothing raised
        pass


def _parent_runs(tmp: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("squeeze")
    return client.search_runs([exp.experiment_id], "tags.role = 'study'")


@pytest.mark.parametrize("second", [False, True], ids=["one-ctrl-c", "second-ctrl-c-in-plots"])
def test_sweep_interrupt_ends_parent_run_killed(second, tmp_path, monkeypatch, capsys):
    """Ctrl-C during the trials, then (optionally) again while the summary writes its plots: one line per
    interrupt, no traceback, exit 130, and the study's MLflow parent run KILLED (never left RUNNING)."""
    from search import report, sweep, worker

    def first_ctrl_c(ctx, *args, **kwargs):
        raise KeyboardInterrupt

    plots = []

    def second_ctrl_c(*args, **kwargs):
        plots.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(worker, "run_trials", first_ctrl_c)
    if second:
        monkeypatch.setattr(report, "write_plots", second_ctrl_c)
    code = sweep.main([*TINY, *stores(tmp_path), "study.n_trials=1", "study.name=ctrl-c"])
    captured = capsys.readouterr()
    assert code == 130, captured.err
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("squeeze:")]
    assert lines[0] == "squeeze: interrupted; run the same command again to resume the study"
    if second:
        assert plots == [1]
        assert len(lines) == 2 and lines[1].startswith("squeeze: interrupted again: summary skipped"), lines
    else:
        assert len(lines) == 1 and "Pareto-optimal" in captured.out
    parents = _parent_runs(tmp_path)
    assert [r.info.status for r in parents] == ["KILLED"]


def test_sweep_error_after_parent_run_ends_it_failed(tmp_path, monkeypatch):
    """An unexpected error after the parent run exists still ends it (FAILED), instead of leaving it RUNNING."""
    from search import sweep, worker

    def broken(ctx, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(worker, "run_trials", broken)
    with pytest.raises(RuntimeError, match="boom"):
        sweep.main([*TINY, *stores(tmp_path), "study.n_trials=1", "study.name=boom"])
    assert [r.info.status for r in _parent_runs(tmp_path)] == ["FAILED"]
