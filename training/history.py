"""Training history that survives a restart: each epoch's time in the logs, read back from the
``CSVLogger`` file, which holds every epoch of a run however often it was resumed."""

from __future__ import annotations

import csv
import time
from pathlib import Path


def epoch_timer():
    """A Keras callback adding ``epoch_seconds`` to each epoch's logs; list it before the
    ``CSVLogger`` so that the CSV file records it."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs["epoch_seconds"] = time.time() - self.started

    return EpochTimer()


def time_budget(minutes: float):
    """A Keras callback that ends ``fit`` after the epoch that the next would run past
    ``minutes`` of training, so that a run on a lent or paid-by-the-minute machine ends with
    its model saved rather than killed mid-epoch. The next epoch is taken to last as long as
    the longest so far, not counting the first (which also compiles) once there are others."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.started, self.seconds = time.time(), []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            now = time.time()
            self.seconds.append(now - self.epoch_started)
            last = epoch + 1 >= self.params.get("epochs", epoch + 1)
            if not last and now - self.started + max(self.seconds[1:] or self.seconds) > minutes * 60:
                self.model.stop_training = True
                print(f"time limit: stopping after epoch {epoch + 1}, "
                      f"{(now - self.started) / 60:.1f} of {minutes:g} min", flush=True)

    return TimeBudget()


def read_history(path: Path) -> dict[str, list[float]]:
    """A ``CSVLogger`` file as ``{column: values}``, one value per epoch.

    An epoch logged twice (a phase that was run again after a restart) counts once, with its
    last values.
    """
    with Path(path).open(newline="") as f:
        rows = list({row["epoch"]: row for row in csv.DictReader(f)}.values())
    return {key: [float(row[key]) for row in rows if row.get(key) not in (None, "")]
            for key in (rows[0] if rows else {}) if key != "epoch"}
