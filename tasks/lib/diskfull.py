"""A full disk (or quota) during a write, as a DiskFull naming what, where and the config key.

Python raises OSError(ENOSPC | EDQUOT); LanceDB raises its own RuntimeError whose text carries
the Rust message ("No space left on device (os error 28)"): both are recognised, also when
they are the cause or context of another exception.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.lib.errors import DiskFull, TunedexError

ERRNOS = (errno.ENOSPC, errno.EDQUOT)
MESSAGES = re.compile(rf"no space left on device|disk quota exceeded|os error "
                      rf"(?:{errno.ENOSPC}|{errno.EDQUOT})\b", re.IGNORECASE)


def is_disk_full(err: BaseException | None) -> bool:
    """Whether `err`, or an exception it was raised from, reports a full disk or quota."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in ERRNOS or MESSAGES.search(str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


def free_bytes(path: str | Path) -> int | None:
    """Bytes free to this user on the filesystem holding `path` (its nearest existing folder);
    None for an object-store URI."""
    if "://" in str(path):
        return None
    here = Path(path).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        return shutil.disk_usage(here).free
    except OSError:
        return None


@contextmanager
def disk_full_as_error(what: str, path: str | Path, key: str | None = None) -> Iterator[None]:
    """Turn running out of space inside the block into a DiskFull naming `what`, `path` and
    the config `key` that places it; every other error passes unchanged."""
    try:
        yield
    except TunedexError:
        raise
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise DiskFull(what, str(path), free_bytes(path), key) from err
