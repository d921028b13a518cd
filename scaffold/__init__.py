"""What runs the method where no real weights or data are: synthetic datasets (synthetic.py), tiny random models
(tiny.py), benchmarks and the prepared GPU check (bench.py), wheels for a GPU box without network (wheels.py). Run as
python -m scaffold.NAME from the repository's root."""
