"""What the method stands on: the datasets' releases read from disk (sources.py), files written whole (files.py),
checkpoints (checkpoint.py), ranks (distributed.py), the search shared by workers (search.py, an Optuna study) and
one-line errors (errors.py)."""
