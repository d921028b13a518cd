"""
The search engine under cv.py: an Optuna study whose trials any number of workers share through its storage.

    python cv.py ... --r 8 16 32 --alpha 16 64 256                       # the grid: a study in OUT/study.log
    python cv.py ... --search tpe --trials 8                              # TPE over the same choices, with pruning
    python cv.py ... --storage /shared/cv/study.log                       # a journal file on a shared folder
    python cv.py ... --storage postgresql://user:password@host/db         # or any database Optuna takes
    optuna-dashboard OUT/study.log                                        # the study, live, in a browser

Storage. A study lives by default in a journal file in OUT (Optuna's JournalStorage, OUT/study.log), which needs no
server and is safe for processes on one machine and on a shared folder alike: its lock is a file made atomically,
which NFS allows, where SQLite relies on fcntl() locks, which many NFS mounts break. --storage takes any journal file
path or a URL (sqlite:///FILE, postgresql://..., mysql://...).

Workers. Every cv.py process on one study is a worker: it asks the study for a trial while there are jobs not yet
started, and a trial runs its job only if no trial with a lower number holds the same job (running or queued to
run), so that a job is trained once however many workers asked at the same moment. A worker with nothing left to
start waits while other trials run, and leaves when none does.

A dead worker's trial. Each running trial records a heartbeat every HEARTBEAT seconds; a trial silent for 10
heartbeats is a dead worker's (killed, its machine lost): Optuna's fail_stale_trials fails it and its
RetryHeartbeatStaleTrialCallback queues a copy of it, which the next worker to look takes over. A trial that stops
on an error or Ctrl-C queues its copy itself before it fails, so that the same command resumes it at once. Optuna
5.1 records heartbeats for its database storages only (RDBStorage is a BaseHeartbeat, JournalStorage is not;
optuna#6615): Journal below adds them through the same interface, so that Optuna's own machinery runs on a journal
file as on a database.
"""

import logging
import math
import os
import time
import warnings

import matplotlib

matplotlib.use("agg")  # Optuna draws the search's history through pyplot: no window, a PNG
import matplotlib.pyplot as plt
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages._heartbeat import BaseHeartbeat  # the interface Optuna's storages implement
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from plumbing.errors import InputError
from plumbing.files import atomic

HEARTBEAT = 30  # seconds between a running trial's heartbeats
SILENT = 10  # heartbeats a trial misses before its worker counts as dead
# Trials TPE samples at random before it models the results, and that finish every fold before the pruner compares:
# both need a few configurations' results before either can tell a good one from a poor one.
STARTUP = 3
IMPORTANCE = 5  # complete configurations before the parameters' importances say more than their noise
LIVE = (TrialState.RUNNING, TrialState.WAITING)
CREATE_TRIES = 5  # tries at opening a database, whose tables another worker may be making at the same moment


class Journal(JournalStorage, BaseHeartbeat):
    """A journal file with heartbeats: each is a system attribute of the trial (its time), and a running trial
    whose latest heartbeat, or its start where it has none yet, is older than the grace period is stale. Times are
    each host's clock: hosts that share a file keep their clocks within a few seconds (NTP), against minutes of
    grace."""

    def __init__(self, path, heartbeat, callback):
        super().__init__(JournalFileBackend(path))
        self.heartbeat, self.callback = heartbeat, callback

    def record_heartbeat(self, trial_id):
        # keyed by the trial: a retry copies its original's attributes and must not inherit its last heartbeat
        self.set_trial_system_attr(trial_id, f"heartbeat:{trial_id}", time.time())

    def _get_stale_trial_ids(self, study_id):
        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - t.system_attrs.get(f"heartbeat:{t._trial_id}", t.datetime_start.timestamp())
                > SILENT * self.heartbeat]

    def get_heartbeat_interval(self):
        return self.heartbeat

    def get_heartbeat_stale_trial_callback(self):
        return self.callback


def storage(where, heartbeat=HEARTBEAT):
    """A journal file (a path) or a database (a URL), each with heartbeats and the retry of a dead worker's trial."""
    # heartbeats: experimental in Optuna since 2.x
    with warnings.catch_warnings(action="ignore", category=ExperimentalWarning):
        retry = RetryHeartbeatStaleTrialCallback()
        if "://" not in where:
            os.makedirs(os.path.dirname(os.path.abspath(where)), exist_ok=True)
            return Journal(where, heartbeat, retry)
        for attempt in range(CREATE_TRIES):
            try:
                return RDBStorage(where, heartbeat_interval=heartbeat, grace_period=SILENT * heartbeat,
                                  heartbeat_stale_trial_callback=retry)
            except SQLAlchemyError as e:
                # Workers that start together on a new database each make its tables, and all but the first fail
                # (a table or a version row that exists already): the next try finds them made. No server, no such
                # file, a wrong password fail every try.
                if attempt == CREATE_TRIES - 1:
                    raise InputError(f"--storage {where}: {str(e).splitlines()[0]}")
                time.sleep(1)
            except ImportError as e:  # no driver for that database
                raise InputError(f"--storage {where}: {e}")


def open_study(where, kind, space, seed):
    """The study of this search in the storage `where`: made by the first worker, loaded by the others. Its name
    says the search and its space, so that a grid that grows between runs is another study (the folds that landed
    before cost it nothing). The grid's sampler hands out its points in a shuffled order, each once; TPE proposes
    configurations, other workers' running ones counted as poor (constant liar) so that it does not propose them
    again, and the median pruner stops a configuration after a fold where its running mean is below the median of
    the trials before it at that fold."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # cv.py prints a line a fold; Optuna's a trial repeats it
    logger = logging.getLogger("optuna")
    if not any(isinstance(f, GaveWay) for f in logger.filters):
        logger.addFilter(GaveWay())
    name = kind + " " + " ".join(f"{k}={','.join(v if isinstance(v, str) else f'{v:g}' for v in values)}"
                                 for k, values in space.items())
    if kind == "grid":
        sampler, pruner = optuna.samplers.GridSampler(space, seed=seed), optuna.pruners.NopPruner()
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP, constant_liar=True)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=STARTUP, n_warmup_steps=0)
    return optuna.create_study(storage=where, study_name=name, sampler=sampler, pruner=pruner, direction="maximize",
                               load_if_exists=True)


class Taken(Exception):
    """A trial's job is a lower-numbered trial's: this one trains nothing and ends as failed, not retried."""


class GaveWay(logging.Filter):
    """Optuna logs a failed trial with its traceback; a trial that gave way (Taken) is no failure: hold prints it."""

    def filter(self, record):
        return "Taken(" not in record.getMessage()


def hold(trial, params, job, patience):
    """Stop the trial (Taken) if a lower-numbered live trial holds the same job. Of two workers that asked at the
    same moment, each reads the other's trial and only the higher number gives way; a trial made an instant ago has
    no parameters yet, so it is waited for (a moment, or `patience` seconds where its worker died right there)."""
    deadline = time.time() + patience
    while True:
        earlier = [t for t in trial.study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number]
        if all(t.params.keys() == params.keys() for t in earlier) or time.time() > deadline:
            break
        time.sleep(0.05)
    owner = next((t for t in earlier if t.params.keys() == params.keys() and job(t.params) == job(params)), None)
    if owner is not None:
        trial.set_user_attr("taken", owner.number)
        print(f"search | trial {trial.number} gives way: {job(params)} is trial {owner.number}'s")
        raise Taken(f"{job(params)} is trial {owner.number}'s")


def to_start(trials, space, job, budget):
    """Whether a worker starts another trial. The grid (budget None): while some job of the space has no trial; a
    trial made an instant ago counts as one job more. Else while fewer than `budget` trials have started, a retry's
    copy and a trial that gave way not counting."""
    if budget is None:
        started = {job(t.params) for t in trials if t.params.keys() == space.keys()}
        unnamed = sum(t.params.keys() != space.keys() for t in trials if t.state in LIVE)
        return len(started) + unnamed < math.prod(len(values) for values in space.values())
    own = [t for t in trials if "failed_trial" not in t.system_attrs and "taken" not in t.user_attrs]
    return len(own) < budget


def work(study, space, objective, job, budget=None, heartbeat=HEARTBEAT):
    """Run the study's trials in this worker until none is left to start and none runs. Each trial suggests a value
    of each of `space`'s lists, {name: values}, and `objective(trial, params)` trains what `job(params)` names; the
    grid (budget None) runs every job of the space once, a sampler's search `budget` trials, where a repeat of a
    finished job costs nothing."""

    def run(trial):
        params = {name: trial.suggest_categorical(name, values) for name, values in space.items()}
        try:
            hold(trial, params, job, SILENT * heartbeat)
            return objective(trial, params)
        except (Taken, optuna.TrialPruned):
            raise
        except BaseException:  # an error or Ctrl-C: the same command runs the trial's copy at once
            with warnings.catch_warnings(action="ignore", category=ExperimentalWarning):
                RetryHeartbeatStaleTrialCallback()(study, study.trials[trial.number])
            raise

    while True:
        with warnings.catch_warnings(action="ignore", category=ExperimentalWarning):
            fail_stale_trials(study)  # a dead worker's trial: failed, and its copy queued, by one worker
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials) or to_start(trials, space, job, budget):
            study.optimize(run, n_trials=1, catch=(Taken,))
        elif any(t.state == TrialState.RUNNING for t in trials):
            time.sleep(heartbeat)  # another worker's trial: wait for it to end, or to go silent and be retried
        else:
            return


def importances(study):
    """Optuna's parameter importances over the complete trials, {name: share}; {} with fewer than two parameters
    that vary, or fewer than IMPORTANCE configurations complete to compare (a repeat of one counts once)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = [k for k in (complete[0].params if complete else {}) if len({t.params[k] for t in complete}) > 1]
    if len(varied) < 2 or len({tuple(t.params.items()) for t in complete}) < IMPORTANCE:
        return {}
    return optuna.importance.get_param_importances(study, params=varied)


def history(study, path, size, dpi):
    """The search's history as a PNG of `size` pixels: each trial's mean SRCC and the best so far (Optuna's plot)."""
    with matplotlib.rc_context():  # the plot sets its own style; the paper's figures keep theirs
        with warnings.catch_warnings(action="ignore", category=ExperimentalWarning):
            ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name="mean SRCC")
        ax.set_title("the search: each trial's mean SRCC over its folds")
        ax.legend(loc="lower right")  # Optuna's sits outside the axes, which a fixed size would cut
        fig = ax.figure
        fig.set_size_inches(size[0] / dpi, size[1] / dpi)
        fig.tight_layout()
        with atomic(path, "wb") as f:  # workers finishing together each write a whole file
            fig.savefig(f, dpi=dpi, format="png")
        plt.close(fig)
    print(f"wrote {path}")
