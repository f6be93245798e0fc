"""A lock on a work directory, so that two launches never write one run at once.

The lock is a file `<workdir>/.lock` created exclusively (O_CREAT | O_EXCL) holding the owner's
pid, host and start time. A second launch finds it and stops at once, naming the owner. A lock
whose owner is gone (same host, pid no longer alive) is stale: it is taken over with a warning.
A lock from another host cannot be checked, so it is refused with the path to delete if that
host's run is known to be dead. In a multi-process run only process 0 holds it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from typing import Iterator

log = logging.getLogger(__name__)
NAME = ".lock"


class LockError(RuntimeError):
  """The work directory is in use by another launch."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


def _owner(path: str) -> dict | None:
  """The lock's owner; None when the lock is gone; {} when it cannot be read after a short wait
  (an owner still writing it, or a damaged file)."""
  for _ in range(20):
    try:
      with open(path) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      time.sleep(0.05)
  return {}


def _take(path: str) -> bool:
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
  return True


@contextlib.contextmanager
def workdir_lock(root: str, enabled: bool = True) -> Iterator[None]:
  """Holds `<root>/.lock` for the duration of the block (nothing when `enabled` is False)."""
  if not enabled:
    yield
    return
  created = not os.path.exists(root)
  path = os.path.join(root, NAME)

  def take() -> bool:
    try:
      os.makedirs(root, exist_ok=True)
      return _take(path)
    except OSError as e:  # read-only, not a directory, no permission: one line, no traceback
      raise LockError(f"{root}: cannot write the work directory ({e.strerror}); give a writable --workdir") from None

  while not take():
    owner = _owner(path)
    if owner is None:  # released meanwhile
      continue
    here = owner.get("host") == socket.gethostname()
    if here and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
      log.warning("%s: taking over a stale lock of pid %s (no longer running)", path, owner["pid"])
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    raise LockError(
      f"{root} is in use by pid {owner.get('pid')} on host {owner.get('host')} since "
      f"{owner.get('started')} ({path}); wait for that run, use another work directory, or delete "
      f"{path} if that run is known to be dead"
    )
  try:
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
    if created and not os.listdir(root):  # a run refused before writing leaves no directory behind
      os.rmdir(root)
