"""The lock a process holds while it writes an output folder: a second process writing the same
folder is refused at once, naming the holder.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from pipelines.io import StageError


@contextlib.contextmanager
def output_lock(lock: Path, folder: Path, stage: str, what: str, *, remove: bool = False) -> Iterator[None]:
    """Hold ``lock`` (an exclusive flock, never waited for) while this process writes ``folder``: a second
    process is refused with one message naming the folder and the holder's pid, before it touches anything.

    The file holds ``pid N``. ``remove``: it is deleted when released, so nothing is left beside an output
    (a process that opened it just before is not fooled: it checks that the file it locked is still the
    one at ``lock``, else opens it again). A killed holder's lock is released by the system; its file is
    reused by the next run.
    """
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(lock, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise StageError(f"{folder}: another `hrm {stage}` ({holder}) is writing {what}; wait for it to end, "
                             "or choose another --output") from None
        try:
            mine = os.stat(lock)
            if (mine.st_dev, mine.st_ino) == (os.fstat(fh.fileno()).st_dev, os.fstat(fh.fileno()).st_ino):
                break
        except FileNotFoundError:
            pass
        fh.close()  # the holder removed it as this process opened it: lock the file now at that path
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        yield
    finally:
        if remove:
            lock.unlink(missing_ok=True)
        fh.close()  # releases the lock
