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


def read_history(path: Path) -> dict[str, list[float]]:
    """A ``CSVLogger`` file as ``{column: values}``, one value per epoch.

    An epoch logged twice (a phase that was run again after a restart) counts once, with its
    last values.
    """
    with Path(path).open(newline="") as f:
        rows = list({row["epoch"]: row for row in csv.DictReader(f)}.values())
    return {key: [float(row[key]) for row in rows if row.get(key) not in (None, "")]
            for key in (rows[0] if rows else {}) if key != "epoch"}
