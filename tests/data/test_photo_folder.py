import shutil
from pathlib import Path

import numpy as np
import pytest

from data.images import read_image
from data.photo_folder import DEFAULT_SOURCES, main

NATURE = Path(DEFAULT_SOURCES[0])


@pytest.mark.skipif(not NATURE.is_dir(), reason="mate-backgrounds missing (make setup)")
def test_builds_shrunk_copies_skips_bad_files_and_duplicates(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    photo = sorted(NATURE.glob("*.jpg"))[0]
    shutil.copy(photo, src / "nested")
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    # The same folder twice, once through its subfolder: each photo is written once.
    assert main([str(src), str(src / "nested"), "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().err
    original = read_image(photo, mode="RGB")
    written = sorted(out.iterdir())
    assert [p.name for p in written] == [f"{photo.stem}_1024.png", f"{photo.stem}_512.png"]
    for path, side in zip(written, (1024, 512), strict=True):
        image = read_image(path, mode="RGB")
        assert max(image.shape[:2]) == side
        ratio = image.shape[1] / image.shape[0]
        assert ratio == pytest.approx(original.shape[1] / original.shape[0], rel=0.01)
        # A shrunk copy of the same photo: its mean colour barely moves.
        assert np.abs(image.mean((0, 1)) - original.mean((0, 1))).max() < 2.0


def test_no_folder_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_two_photos_of_one_name_are_refused_before_anything_is_written(tmp_path, capsys):
    from PIL import Image

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (40, 30), folder == "a" and "red" or "blue").save(tmp_path / folder / "sea.png")
    out = tmp_path / "out"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "would both be written as sea_SIZE.png" in err and "rename one of them" in err
    assert not any(out.iterdir())
