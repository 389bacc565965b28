"""Reading back a CSVLogger file: one value per epoch, the last logging of an epoch winning."""

from training.history import read_history


def test_read_history_counts_each_epoch_once_with_its_last_values(tmp_path):
    path = tmp_path / "history.csv"
    # Epochs 0-1, then a restart that ran the phase again from epoch 0 to 2.
    path.write_text("epoch,epoch_seconds,loss\n0,2.0,0.9\n1,2.5,0.8\n"
                    "0,3.0,0.7\n1,3.5,0.6\n2,4.0,0.5\n")
    history = read_history(path)
    assert history == {"epoch_seconds": [3.0, 3.5, 4.0], "loss": [0.7, 0.6, 0.5]}


def test_read_history_skips_empty_cells(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,0.9,\n1,0.8,0.7\n")
    assert read_history(path) == {"loss": [0.9, 0.8], "val_loss": [0.7]}


def _fit_with_scripted_epoch_times(monkeypatch, durations, timer):
    """Fits a tiny model for ``len(durations)`` epochs with ``timer`` under a fake clock on which
    epoch ``i`` lasts ``durations[i]`` seconds. Returns the epochs run and their seconds."""
    import types

    import keras
    import numpy as np

    import training.history

    clock = [1000.0]
    monkeypatch.setattr(training.history, "time", types.SimpleNamespace(time=lambda: clock[0]))
    # Listed before the timer: the epoch's time has passed when the timer reads the clock.
    elapse = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: clock.__setitem__(0, clock[0] + durations[epoch]))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.zeros((8, 2), np.float32)
    history = model.fit(x, x[:, :1], epochs=len(durations), verbose=0,
                        callbacks=[elapse, timer])
    return history.epoch, history.history["epoch_seconds"]


def test_time_budget_ends_fit_before_the_next_epoch_would_overrun(monkeypatch, capsys):
    from training.history import epoch_timer

    # A 60 s budget. The first epoch (which also compiles) takes 25 s, the others 5 s: the next
    # epoch is judged by the longest since the first, so the run goes on while elapsed + 5 s fits.
    timer = epoch_timer(1)
    epochs, seconds = _fit_with_scripted_epoch_times(monkeypatch, [25.0] + [5.0] * 19, timer)
    # After 8 epochs 60 s are spent and a 9th would end at 65 s. (Were the first epoch's 25 s
    # taken for the next one's, it would stop after 4.)
    assert epochs == list(range(8)) and seconds == [25.0] + [5.0] * 7
    assert timer.stopped_early
    assert "time limit: stopping after epoch 8, 1.0 of 1 min" in capsys.readouterr().out
    # Alone, the first epoch is the measure: 40 s + 40 s more would overrun the minute.
    epochs, _ = _fit_with_scripted_epoch_times(monkeypatch, [40.0] * 5, epoch_timer(1))
    assert epochs == [0]
    # Without a limit, or when the budget runs out in the last epoch anyway, every epoch runs and
    # the run is not taken for one stopped at its limit (which keeps its backup to go on).
    for timer in (epoch_timer(0), epoch_timer(1)):
        epochs, _ = _fit_with_scripted_epoch_times(monkeypatch, [25.0, 5.0, 40.0], timer)
        assert epochs == [0, 1, 2] and not timer.stopped_early


def _fit_with_scripted_scores(tmp_path, scores, weights_seen, stop_after=None):
    """Fits a tiny model whose monitored ``score`` follows ``scores`` epoch by epoch, with the
    callbacks of a resumable run; ``stop_after`` kills it (an exception) after that epoch."""
    import keras
    import numpy as np

    from training.history import early_stopping

    class Script(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = scores[epoch]

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights_seen[epoch] = self.model.get_weights()
            if epoch == stop_after:
                raise KeyboardInterrupt

    rng = np.random.default_rng(0)
    x, y = rng.random((32, 3)).astype("float32"), rng.random((32, 1)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    stopper = early_stopping(tmp_path / "backup", tmp_path / "history.csv", monitor="score",
                             mode="max", patience=3)
    callbacks = [Script(), keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), stopper,
                 keras.callbacks.CSVLogger(str(tmp_path / "history.csv"), append=True), Record()]
    try:
        model.fit(x, y, epochs=len(scores), batch_size=8, callbacks=callbacks, verbose=0)
    except KeyboardInterrupt:
        return None
    return model


def test_early_stopping_keeps_its_best_epoch_across_a_restart(tmp_path):
    import numpy as np

    from training.history import read_history

    # Best at epoch 1; killed after epoch 3 (two epochs without improvement); then a small rise
    # at epoch 4 that is still below the best. Keras's own callback would forget epoch 1 on the
    # restart, run to epoch 7 and end on epoch 4's weights.
    scores = [0.1, 0.5, 0.3, 0.2, 0.25, 0.2, 0.1, 0.1, 0.1, 0.1]
    weights = {}
    assert _fit_with_scripted_scores(tmp_path, scores, weights, stop_after=3) is None
    assert (tmp_path / "backup" / "best-weights.npz").exists()
    model = _fit_with_scripted_scores(tmp_path, scores, weights)
    # Patience 3 counted across the restart: epochs 2, 3, 4 without improvement, then it stops.
    assert sorted(weights) == [0, 1, 2, 3, 4]
    assert read_history(tmp_path / "history.csv")["score"] == scores[:5]
    for got, best in zip(model.get_weights(), weights[1], strict=True):
        np.testing.assert_array_equal(got, best)
    # Reading the best weights back leaves the optimizer where the backup left it: 5 epochs of
    # 4 steps, not rewound to the best epoch's step count (which would restart the schedule).
    assert int(model.optimizer.iterations) == 5 * 4
    assert not (tmp_path / "backup").exists()  # training ended: the backup and best weights go


def test_early_stopping_without_a_restart_is_keras_own(tmp_path):
    import numpy as np

    scores = [0.1, 0.3, 0.6, 0.2, 0.2, 0.2, 0.2, 0.2]
    weights = {}
    model = _fit_with_scripted_scores(tmp_path, scores, weights)
    assert sorted(weights) == [0, 1, 2, 3, 4, 5]
    for got, best in zip(model.get_weights(), weights[2], strict=True):
        np.testing.assert_array_equal(got, best)


def test_a_backup_whose_latest_weights_were_cut_off_falls_back_to_its_previous_copy(tmp_path):
    import json

    import h5py

    from training.history import recover_backup, resumed_epoch

    backup = tmp_path / "backup"
    backup.mkdir()
    with h5py.File(backup / "latest.weights.h5.bkp", "w") as f:
        f["w"] = [1.0, 2.0]
    (backup / "training_metadata.json.bkp").write_text(json.dumps({"epoch": 2}))
    good = (backup / "latest.weights.h5.bkp").read_bytes()
    (backup / "latest.weights.h5").write_bytes(good)
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 3}))
    recover_backup(backup)  # both readable: nothing to do
    assert resumed_epoch(backup) == 3
    (backup / "latest.weights.h5").write_bytes(good[: len(good) // 2])  # killed while writing
    recover_backup(backup)
    assert resumed_epoch(backup) == 2 and (backup / "latest.weights.h5").read_bytes() == good
    recover_backup(tmp_path / "none")  # no backup: nothing to do


def test_remove_backup_takes_the_backup_and_what_an_earlier_kill_left(tmp_path):
    from training.history import clear_removed_backup, remove_backup

    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"w")
    leftover = tmp_path / ".backup.removed-earlier"  # a kill while an earlier removal ran
    leftover.mkdir()
    (leftover / "training_metadata.json").write_text('{"epoch": 1}')
    (tmp_path / "history.csv").write_text("epoch\n0\n")
    remove_backup(backup)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]
    remove_backup(backup)  # nothing there: nothing to do
    clear_removed_backup(tmp_path / "gone" / "backup")  # nor in a folder that does not exist
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]
