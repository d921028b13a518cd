"""What the method stands on: the datasets' releases read from disk (sources.py), files written whole (files.py),
checkpoints (checkpoint.py), ranks (distributed.py), grid claims (claims.py) and one-line errors (errors.py)."""
