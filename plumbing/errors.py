"""
How every script here reports bad input: InputError, one line that names the file or record; `problem`, which raises
it or, under --skip-bad, records it in a list instead (data.report_skipped writes the list); and `cli`, the wrapper
that turns it into that line on stderr and exit code 2 instead of a traceback. Imported by every script; imports none.
"""

import argparse
import sys


class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every script's --help: its docstring as written, and each flag's default after its text, where the text does
    not say it already (a default of None or False says nothing)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class InputError(Exception):
    """Bad user input. The message is one line that names the file or record and what is wrong with it."""


def problem(bad, where, message, video_id=""):
    """What is wrong at `where`: an InputError, or with a list as `bad` (--skip-bad) a row of it."""
    if bad is None:
        raise InputError(f"{where}: {message}")
    bad.append(dict(video_id=video_id, where=where, problem=message))


def cli(main):
    """How every script here ends: bad input is one line on stderr and exit code 2, never a traceback;
    Ctrl-C and running out of GPU memory say what to do next."""
    try:
        main()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue (train.py: with --resume)", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if type(e).__name__ != "OutOfMemoryError":  # torch.OutOfMemoryError, matched by its name
            raise
        print("error: out of GPU memory: lower --batch-size (raise --grad-accum to keep the effective batch), "
              "--max-pixels, --frames or --r, keep gradient checkpointing on, and start again (train.py: --overwrite); "
              "if it ran out while predicting, lower --eval-batch-size and rerun (train.py: with --resume)",
              file=sys.stderr)
        sys.exit(3)
