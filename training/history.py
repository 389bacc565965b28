"""Training history that survives a restart: each epoch's time in the logs, read back from the
``CSVLogger`` file, which holds every epoch of a run however often it was resumed."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np


def epoch_timer(time_limit: float = 0.0):
    """A Keras callback adding ``epoch_seconds`` to each epoch's logs; list it before the
    ``CSVLogger`` so that the CSV file records it.

    With ``time_limit`` (minutes, 0 for none) it also ends ``fit`` after the epoch that the next
    would run past that much training, so that a run on a lent or paid-by-the-minute machine
    ends with its model saved rather than killed mid-epoch. The next epoch is taken to last as
    long as the longest so far, not counting the first (which also compiles) once there are
    others. List it after the callbacks that may end the run themselves: their stop is not
    one of the time limit's, which the same command with more time would go on from."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.train_started, self.seconds, self.stopped_early = time.time(), [], False

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            now = time.time()
            logs["epoch_seconds"] = now - self.started
            self.seconds.append(logs["epoch_seconds"])
            elapsed, longest = now - self.train_started, max(self.seconds[1:] or self.seconds)
            # Not where a callback before it (early stopping, a NaN) has ended the run already.
            if (time_limit and not self.model.stop_training and epoch + 1 < self.params["epochs"]
                    and elapsed + longest > time_limit * 60):
                self.model.stop_training = self.stopped_early = True
                print(f"time limit: stopping after epoch {epoch + 1}, {elapsed / 60:.1f} of "
                      f"{time_limit:g} min; the same command with a larger --time-limit goes on "
                      "from there", flush=True)

    return EpochTimer()


def resumed_epoch(backup_dir: Path) -> int:
    """The epoch ``keras.callbacks.BackupAndRestore`` resumes a run at (the epochs it finished),
    read from its backup; 0 for a fresh run. Input pipelines take it so that a resumed run
    draws the order and noise of the epochs still to come (``data.pipeline.epoch_seed``)."""
    try:
        return int(json.loads((Path(backup_dir) / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def recover_backup(backup_dir: Path) -> None:
    """Falls back to the previous copy of a ``BackupAndRestore(double_checkpoint=True)`` backup
    whose latest weights cannot be read (a kill while they were written), as Keras would when
    it restores them; done first, so that :func:`resumed_epoch` and the resumable early
    stopping read the epoch that is restored, not the one whose weights were lost. Also where
    the latest weights are missing altogether.

    Raises:
        ValueError: the backup names finished epochs but holds no weights to resume them from.
    """
    import h5py

    weights = Path(backup_dir) / "latest.weights.h5"
    previous = weights.with_name(weights.name + ".bkp")
    metadata = Path(backup_dir) / "training_metadata.json"
    if not weights.is_file():
        # Keras would restore no weights yet resume at the epoch its metadata names: the run
        # would go on from (or, at its last epoch, be saved and scored with) freshly drawn ones.
        if previous.is_file():
            _restore_previous(previous, weights, metadata)
        elif metadata.is_file():
            raise ValueError(f"cannot resume from {backup_dir}: it records finished epochs but holds "
                             "no weights; delete that folder to start the run again")
        return
    if not previous.is_file():
        return
    try:
        h5py.File(weights, "r").close()
    except OSError:
        _restore_previous(previous, weights, metadata)


def _restore_previous(previous: Path, weights: Path, metadata: Path) -> None:
    """The backup's previous copy made its latest: the weights and the epoch they were saved at."""
    import shutil

    shutil.copyfile(previous, weights)
    if (kept := metadata.with_name(metadata.name + ".bkp")).is_file():
        shutil.copyfile(kept, metadata)
    else:
        metadata.unlink(missing_ok=True)


FIT_ENDED = "fit-ended.json"
"""In a ``BackupAndRestore`` folder: its ``fit`` has ended (early stopping, a NaN, its last
epoch; not a ``--time-limit`` stop), and what is left is to save and score the model."""


def mark_fit_ended(backup_dir: Path) -> None:
    """Records in the backup that its ``fit`` has ended, at the epochs it holds."""
    backup_dir = Path(backup_dir)
    if backup_dir.is_dir():
        (backup_dir / FIT_ENDED).write_text(json.dumps({"epochs": resumed_epoch(backup_dir)}))


def epochs_to_run(backup_dir: Path, epochs: int) -> int:
    """The ``epochs`` to pass to ``fit``: those asked for, or, where the backup records that its
    ``fit`` had ended (:func:`mark_fit_ended`) before the run was killed, the epochs done, so
    that the restart trains none again (early stopping, which checks its count only at an
    epoch's end, would otherwise run one more, and go on if that one were better) and only
    restores the backup and the best weights."""
    return resumed_epoch(backup_dir) if (Path(backup_dir) / FIT_ENDED).is_file() else epochs


def remove_backup(backup_dir: Path) -> None:
    """Deletes a backup without ever leaving part of it: renamed first (one step, to a name of
    its own), then removed, so that a kill while the files go leaves no backup that a restart
    would take for one with its weights missing. :func:`clear_removed_backup` removes what such
    a kill leaves."""
    import shutil
    import uuid

    backup_dir = Path(backup_dir)
    clear_removed_backup(backup_dir)
    doomed = backup_dir.with_name(f"{_removed_prefix(backup_dir)}{uuid.uuid4().hex}")
    try:
        backup_dir.rename(doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def clear_removed_backup(backup_dir: Path) -> None:
    """Removes what a kill during :func:`remove_backup` left behind."""
    import shutil

    backup_dir = Path(backup_dir)
    if backup_dir.parent.is_dir():
        for leftover in backup_dir.parent.glob(f"{_removed_prefix(backup_dir)}*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _removed_prefix(backup_dir: Path) -> str:
    return f".{backup_dir.name}.removed-"


def early_stopping(backup_dir: Path, history_csv: Path, **kwargs):
    """``keras.callbacks.EarlyStopping(restore_best_weights=True, **kwargs)`` that a restart does
    not reset.

    Keras's callback starts afresh in every ``fit``: a run resumed by ``BackupAndRestore`` would
    forget its best epoch so far, wait ``patience`` epochs anew and, at its end, restore the best
    weights *since the restart*, which may be worse than those before it. This one keeps the best
    weights in ``backup_dir`` (which goes when the backup does) and, on a resumed run, takes its
    best value and its epochs without improvement from the ``CSVLogger`` file of the epochs
    before the restart (as many as the backup's metadata says were done: call
    :func:`recover_backup` first).
    """
    import keras

    # The model's weights alone, as arrays: a Keras weights file would also carry the optimizer's
    # variables, and loading it would rewind the step count (and the learning-rate schedule).
    best_file = Path(backup_dir) / "best-weights.npz"

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            done = resumed_epoch(backup_dir)
            if not done or not best_file.exists() or not Path(history_csv).exists():
                return
            values = read_history(history_csv).get(self.monitor, [])[:done]
            if not values:
                return
            if self.monitor_op is None:
                self._set_monitor_op()
            for epoch, value in enumerate(values):
                self.wait += 1
                if self._is_improvement(value, self.best):
                    self.best, self.best_epoch, self.wait = value, epoch, 0
            with np.load(best_file) as saved:
                self.best_weights = [saved[f"w{i}"] for i in range(len(saved.files))]

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if self.best_epoch == epoch and self.best_weights is not None:
                best_file.parent.mkdir(parents=True, exist_ok=True)
                partial = best_file.with_name(f".{best_file.name}.partial")
                with partial.open("wb") as f:
                    np.savez(f, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
                partial.replace(best_file)

    return ResumableEarlyStopping(restore_best_weights=True, **kwargs)


def read_history(path: Path) -> dict[str, list[float]]:
    """A ``CSVLogger`` file as ``{column: values}``, one value per epoch.

    An epoch logged twice (a phase that was run again after a restart) counts once, with its
    last values. Empty cells and Keras's ``NA`` (a ``val_`` column of a fit without validation
    data) are skipped.
    """
    with Path(path).open(newline="") as f:
        rows = list({row["epoch"]: row for row in csv.DictReader(f)}.values())
    return {key: [float(row[key]) for row in rows if row.get(key) not in (None, "", "NA")]
            for key in (rows[0] if rows else {}) if key != "epoch"}
