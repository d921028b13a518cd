"""
Claims: any number of processes, on one host or on several sharing a folder, split a list of jobs with no coordinator.
A job is claimed by creating its folder (atomic on local and network filesystems alike), which holds the worker's host
and pid and is touched every HEARTBEAT seconds; a claim whose worker has died is taken over by the next to look. cv.py
runs its (config, fold) jobs under claims, and appends its results under a lock made of one.
"""

import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from plumbing.files import write_text

HEARTBEAT, STALE = 30, 600  # seconds between touches of a live claim; a claim untouched this long is a dead worker's


def stale(path):
    """A claim whose worker is gone: on this host, its process has exited; on any, its heartbeat stopped."""
    try:
        with open(os.path.join(path, "owner")) as f:
            host, pid = f.read().split()
        age = time.time() - os.path.getmtime(os.path.join(path, "owner"))
    except (OSError, ValueError):  # a claim being made or removed right now: live unless long abandoned
        try:
            return time.time() - os.path.getmtime(path) > STALE
        except OSError:
            return False
    if host == socket.gethostname() and not alive(int(pid)):
        return True
    return age > STALE


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    try:  # a zombie has exited: it only waits for its parent to collect its status
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def acquire(path):
    """Make `path` this process's claim; False while a live worker holds it. A dead worker's is taken over: of two
    workers that find it dead, one renames it away first and the other's rename fails."""
    for _ in range(2):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not stale(path):
                return False
            dead = f"{path}.dead-{uuid.uuid4().hex}"
            try:
                os.rename(path, dead)
            except OSError:
                return False
            shutil.rmtree(dead, ignore_errors=True)
            continue
        write_text(os.path.join(path, "owner"), f"{socket.gethostname()} {os.getpid()}\n")
        return True
    return False


@contextmanager
def claimed(path):
    """Hold the claim `path` while the block runs (yields True), touching it every HEARTBEAT seconds; yields False
    when another live worker holds it."""
    if not acquire(path):
        yield False
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT):
            try:
                os.utime(os.path.join(path, "owner"))
            except OSError:
                pass
    threading.Thread(target=beat, daemon=True).start()
    try:
        yield True
    finally:
        stop.set()
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def locked(path):
    """A claim held for the milliseconds of a read-modify-write of results.csv."""
    while True:
        with claimed(path) as mine:
            if mine:
                yield
                return
        time.sleep(0.05)
