"""The one exception type for bad user input (config values, data files).

Entry points catch :class:`InputError`, print ``str(err)`` as one line and exit with code 2 before any
study, MLflow run or artifact exists. The message always names the config key or the file to fix.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A user-fixable problem with a config key or an input file.

    Args:
        where: the dotted config key (``compress.quant.bits``) or the file path to fix.
        problem: what is wrong, with the offending value, e.g. ``"must be in 1..8, got 0"``.

    Example:
        >>> str(InputError("cv.folds", "must be an integer >= 2, got 1"))
        'cv.folds: must be an integer >= 2, got 1'
    """

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")
