"""Reading a score from the model and what goes with it: decoding and post-processing (decode.py), the metrics and the
paired comparison (metrics.py), the paper's figures (figures.py), why this score (explain.py), the page of scored videos
(report.py), your own videos (videos.py)."""
