"""
The demo: the whole method on synthetic data and a tiny random model, in minutes on a CPU.

    python demo.py   # synthetic Memento10k + a tiny Qwen2.5-VL in ./demo, then train.py's run with the tiny recipe

It writes demo/data (300 synthetic videos: synthetic.py) and demo/tiny-qwen2_5_vl (tiny.py) once, then trains
(train.main, with tiny.TINY_RECIPE) into demo/run, printing the held-out SRCC after every epoch.
"""

import argparse
import os

from scaffold import synthetic
import train
from plumbing.errors import cli
from scaffold.tiny import TINY_RECIPE, make_tiny


def config(root="demo"):
    """The demo's run: train.py on the synthetic data and the tiny model under `root`, with the tiny recipe. The paths
    are absolute, so that predict.py finds the run's model from any folder."""
    root = os.path.abspath(root)
    return train.Config(data=os.path.join(root, "data"), model=os.path.join(root, "tiny-qwen2_5_vl"),
                        out=os.path.join(root, "run"), cache=os.path.join(root, "cache"), log_every=50, **TINY_RECIPE)


def demo(root="demo"):
    cfg = config(root)
    if not os.path.exists(os.path.join(cfg.data, "test_labels.csv")):
        synthetic.make_synthetic(cfg.data, n=300)
    if not os.path.exists(os.path.join(cfg.model, "config.json")):
        make_tiny(cfg.model)
    return train.main(cfg, overwrite=True)


def main(argv=None):
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    demo()


if __name__ == "__main__":
    cli(main)
