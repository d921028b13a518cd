"""
Files written whole: a run can be killed at any moment and leaves, under each name, the old file or the new one, never
half of one. Every file the project writes goes through `atomic` (text, CSV, JSON, PNG, JPEG, HTML alike).
"""

import csv
import io
import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic(path, mode="w", **kwargs):
    """Open a temporary file beside `path` (its folder made if need be); when the block ends, rename it into place.
    A block that raises leaves `path` as it was and no temporary file behind. Readable by all, as open() makes a file
    (mkstemp makes it the owner's only)."""
    where = os.path.dirname(os.path.abspath(path))
    os.makedirs(where, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path, text):
    with atomic(path) as f:
        f.write(text)


def csv_lines(header, rows):
    """CSV text: quoted where a cell holds a comma, a quote or a line break, so a CSV reader gives each cell back."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows] if header is not None else rows)
    return buffer.getvalue()


def write_csv(path, header, rows):
    """The one CSV writer: predictions, answers, results, shares, skipped videos, losses."""
    write_text(path, csv_lines(header, rows))
