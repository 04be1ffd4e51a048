"""One way into every command: ``squeeze <command> [key=value ...]`` and the wrapper each ``main`` runs in.

:func:`run_command` gives every command (sweep, pareto, reproduce, export, predict, doctor) the same
entry behaviour:

- ``-h``/``--help`` anywhere prints the command's usage, exit 0;
- an :class:`~trainers.errors.InputError` raised anywhere in the command is one line on stderr,
  ``squeeze: error: <key>: <problem>``, exit 2;
- Ctrl-C (``KeyboardInterrupt``) is one line, ``squeeze: interrupted ...``, exit 130, never a traceback.

A command whose clean-up must finish even when Ctrl-C is pressed again (the sweep ends its MLflow parent
run) runs that clean-up inside :func:`deferred_sigint`: a SIGINT arriving there is held until the block
has finished, then raised as ``KeyboardInterrupt`` as usual.

:func:`main` is the ``squeeze`` console script (``pyproject.toml`` ``[project.scripts]``): it dispatches
``squeeze sweep ...`` to the same ``main`` as ``python -m search.sweep ...``.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from trainers.errors import InputError

__all__ = ["COMMANDS", "deferred_sigint", "main", "run_command"]

#: ``squeeze <command>`` -> (module whose ``main(argv)`` runs it, one-line summary for ``squeeze --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "sweep": ("search.sweep", "run (or resume) a multi-objective compression study"),
    "pareto": ("search.report", "print the Pareto-optimal trials of a stored study"),
    "reproduce": ("search.reproduce", "re-run a trial's CV from its logged record, or its final fit"),
    "export": ("search.export", "write a trial's final model as .sqz, ONNX or an MLflow pyfunc"),
    "predict": ("search.predict", "predict with a compressed model file"),
    "doctor": ("search.doctor", "check (and repair) a study's Optuna trials against its MLflow runs"),
}

INTERRUPTED = "squeeze: interrupted"


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) while the block runs; raise ``KeyboardInterrupt`` once it has finished if one
    arrived. Outside the main thread (where signal handlers cannot be set) the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _say(line: str) -> None:
    with contextlib.suppress(KeyboardInterrupt), deferred_sigint():
        print(line, file=sys.stderr)
        sys.stderr.flush()


def run_command(name: str, usage: str | Callable[[], str], body: Callable[[list[str]], int],
                argv: Sequence[str] | None = None, interrupted: str = "") -> int:
    """Run ``body(argv)`` as the command ``name`` and return its exit code.

    Args:
        name: the command (``sweep``, ``pareto``, ...), for messages.
        usage: its ``--help`` text, or a function returning it (built only when asked for).
        body: the command itself: takes the ``key=value`` arguments, returns the exit code; raises
            InputError for bad input and may let KeyboardInterrupt through.
        argv: the arguments (default ``sys.argv[1:]``).
        interrupted: what to add to the interrupt line (``"; run the same command again to resume"``).

    Returns:
        ``body``'s code; 0 after ``--help``; 2 after an InputError; 130 after Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if any(a in ("-h", "--help") for a in argv):
            print(usage() if callable(usage) else usage)
            return 0
        return int(body(argv))
    except InputError as err:
        _say(f"squeeze: error: {err}")
        return 2
    except KeyboardInterrupt:
        _say(f"\n{INTERRUPTED}{interrupted}")
        return 130


def help_text() -> str:
    width = max(map(len, COMMANDS))
    lines = "\n".join(f"  {cmd:<{width}}  {summary}" for cmd, (_, summary) in COMMANDS.items())
    return ("usage: squeeze <command> [key=value ...]\n"
            "       squeeze <command> --help\n\n"
            f"commands:\n{lines}\n\n"
            "squeeze <command> ... is the same as python -m search.<command> ... "
            "(pareto: python -m search.pareto).\n"
            "exit codes: 0 done, 1 command-specific failure, 2 bad input, 130 interrupted")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``squeeze`` console script: ``squeeze <command> [key=value ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(help_text(), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command in ("-h", "--help", "help"):
        print(help_text())
        return 0
    if command not in COMMANDS:
        import difflib

        near = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        print(f"squeeze: error: command: unknown command {command!r}; {hint}commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command][0])
    except KeyboardInterrupt:
        _say(f"\n{INTERRUPTED}")
        return 130
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
