"""Optuna storage from ``study.storage``: SQLite file (default), journal file, or an RDB URL.

* ``null`` -> ``sqlite:///mlruns/optuna.db``: one process at a time (many writers get "database is locked").
  Heartbeats are on, so the trial of a killed sweep is failed and retried when the study is resumed.
* ``journal:<file>`` -> Optuna's append-only journal file: safe for several worker processes on one machine.
* ``postgresql://user@host/db`` (or ``mysql://``) -> an RDB with heartbeats: many machines; a worker killed
  mid-trial leaves a trial that is failed after the grace period and retried with the same parameters.
"""

from __future__ import annotations

import time
from pathlib import Path

from trainers.errors import InputError

__all__ = ["DEFAULT_STORAGE", "open_storage", "require_existing", "storage_url", "is_rdb"]

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
MAX_RETRY = 2


def storage_url(storage: str | None) -> str:
    return DEFAULT_STORAGE if not storage else str(storage)


def is_rdb(url: str) -> bool:
    return url.startswith(("postgresql", "mysql"))


def require_existing(url: str) -> None:
    """A SQLite or journal storage file must already exist (commands that read a study, never create one).

    Raises:
        InputError: on ``study.storage``, naming the file looked for.
    """
    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix):
            path = Path(url[len(prefix):].split("?", 1)[0] if prefix == "sqlite:///" else url[len(prefix):])
            if not path.is_file():
                raise InputError("study.storage", f"no storage file {str(path)!r} (looked for {path.absolute()}): "
                                                  "give the study.storage its sweep used (and run from the same folder)")


def open_storage(storage: str | None, heartbeat_seconds: int = HEARTBEAT_SECONDS,
                 grace_seconds: int = GRACE_SECONDS, must_exist: bool = False):
    """The Optuna storage object for ``study.storage`` (creating the local folder a file storage needs).

    With ``must_exist`` (commands that only read a study) a missing SQLite or journal file is an error
    instead of a new, empty storage.

    Raises:
        InputError: on ``study.storage`` when the storage cannot be opened (e.g. PostgreSQL unreachable).
    """
    import warnings

    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    url = storage_url(storage)
    if must_exist:
        require_existing(url)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if url.startswith("journal:"):
            path = Path(url[len("journal:"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        if url.startswith("sqlite:///") or is_rdb(url):
            for attempt in range(5):
                try:
                    return RDBStorage(
                        url,
                        heartbeat_interval=int(heartbeat_seconds),
                        grace_period=int(grace_seconds),
                        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                        engine_kwargs={} if url.startswith("sqlite") else {"pool_pre_ping": True},
                    )
                except Exception as err:
                    # workers started together on a fresh database race to create Optuna's tables; the
                    # loser sees "duplicate key"/"already exists" and finds the tables on a second look
                    text = str(err)
                    if attempt == 4 or not ("duplicate key" in text or "already exists" in text):
                        raise
                    time.sleep(0.5 * (attempt + 1))
    except (optuna.exceptions.StorageInternalError, Exception) as err:  # noqa: B014 - one message for all
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError("study.storage", f"cannot open {url!r}: {first}") from err
    raise InputError("study.storage", f"must be null, sqlite:///<file>, journal:<file> or postgresql://..., got {url!r}")
