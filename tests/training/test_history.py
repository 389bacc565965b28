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
