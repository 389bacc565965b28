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


def test_time_budget_ends_fit_before_the_next_epoch_would_overrun():
    import time

    import keras
    import numpy as np

    from training.history import epoch_timer

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    slow = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(0.3))
    x = np.zeros((8, 2), np.float32)
    # 1 s of budget, epochs of at least 0.3 s: at most 3 run, since a 4th would end past 1.2 s.
    history = model.fit(x, x[:, :1], epochs=50, verbose=0, callbacks=[slow, epoch_timer(1 / 60)])
    assert 1 <= len(history.epoch) <= 3
    unlimited = model.fit(x, x[:, :1], epochs=4, verbose=0, callbacks=[slow, epoch_timer(10)])
    assert len(unlimited.epoch) == 4
