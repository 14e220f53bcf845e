"""Whole-file operations on the SQLite database: online backup, WAL checkpoint, adopting the old daemon's file.

Blocking (they open their own connections): callers run them in a worker thread
(``Database.backup`` and ``Database.checkpoint`` do). A backend that is not a file
(PostgreSQL) would have none of these: its backups and WAL are the server's.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("lobwife.storage")

#: What a database failure raises, whatever the backend; start-up reports it as one line.
DatabaseError = sqlite3.Error


def _copy(src_uri: str, dest: Path) -> None:
    """A consistent copy through SQLite's online backup API (a WAL not yet checkpointed is carried over too)."""
    src = sqlite3.connect(src_uri, uri=True)
    out = sqlite3.connect(dest)
    try:
        src.backup(out)
    finally:
        src.close()
        out.close()


def backup_once(db_path: Path, dest_dir: Path, keep: int) -> str:
    """Copy the database into ``dest_dir`` as ``lobwife-<UTC stamp>.db`` while writes go on; keep the newest
    ``keep`` copies. Returns what it did, for the run's output."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = dest_dir / f"lobwife-{stamp}.db"
    tmp = dest.with_suffix(".db.partial")
    _copy(f"file:{db_path}?mode=ro", tmp)
    tmp.rename(dest)
    copies = sorted(dest_dir.glob("lobwife-*.db"))
    removed = copies[:-keep] if keep > 0 else []
    for old in removed:
        old.unlink(missing_ok=True)
    return f"backed up to {dest} ({dest.stat().st_size} bytes); removed {len(removed)} old backup(s)"


def checkpoint_once(db_path: Path) -> str:
    """A passive WAL checkpoint (never blocks writers); returns what it did."""
    conn = sqlite3.connect(db_path, timeout=5)
    try:
        busy, log_pages, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return f"checkpointed {done} of {log_pages} WAL pages" + (" (readers kept some)" if busy else "")


def adopt_legacy_database(state_dir: Path, db_path: Path) -> bool:
    """Copy the old daemon's lobmob.db to lobwife.db (once), leaving the original untouched.

    The copy goes through SQLite's online backup API, so a WAL that was not
    checkpointed is carried over too. The upgrade then runs on the copy.
    """
    legacy = state_dir / "lobmob.db"
    if db_path.exists() or not legacy.exists():
        return False
    tmp = db_path.with_suffix(".db.importing")
    tmp.unlink(missing_ok=True)
    _copy(f"file:{legacy}?mode=ro", tmp)
    tmp.rename(db_path)
    log.info("copied legacy database %s to %s; the original is left as it was", legacy, db_path)
    return True
