"""Kill the batch script with SIGKILL mid-run, rerun the same command: the output folder ends
complete, no file is ever partial, and nothing is processed twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.batch import SETTINGS_FILE, remove_partials
from data.images import PARTIAL_SUFFIX, from_model, load_image, to_model
from tests.corpus import add_noise

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PHOTO = Path("/usr/share/backgrounds/mate/nature/Garden.jpg")
FILES, SIDE = 24, 128
SLICE_S = 0.02  # how long the first run goes on between two looks at its outputs


def make_photos(folder: Path) -> list[str]:
    """``FILES`` noisy ``SIDE`` x ``SIDE`` colour crops of a real photo, as PNG in two subfolders."""
    if PHOTO.is_file():
        with Image.open(PHOTO) as im:
            photo = np.asarray(im.convert("RGB").reduce(4))
    else:  # the mate-backgrounds package is missing: a smooth synthetic picture instead
        yy, xx = np.mgrid[:600, :800] / 100.0
        photo = from_model(np.stack([np.sin(xx), np.cos(yy), np.sin(xx + yy)], -1) * 0.5 + 0.5)
    rng = np.random.default_rng(0)
    names = []
    for i in range(FILES):
        top, left = rng.integers(0, photo.shape[0] - SIDE), rng.integers(0, photo.shape[1] - SIDE)
        crop = photo[top:top + SIDE, left:left + SIDE]
        rel = f"part{i % 2}/photo {i:02d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(add_noise(crop, 0.1, seed=i)).save(folder / rel)
        names.append(rel)
    return names


def command(in_dir: Path, out_dir: Path, manifest: Path) -> list[str]:
    return [sys.executable, "-m", "app.batch", str(in_dir), str(out_dir), "--model", "fashion-mnist",
            "--manifest", str(manifest), "--batch-size", "2", "--no-progress"]


def outputs(out_dir: Path) -> dict[str, tuple[int, int]]:
    """Final-named outputs -> (inode, mtime_ns)."""
    return {p.relative_to(out_dir).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in out_dir.rglob("*.png") if not p.name.startswith(".")}


def test_sigkill_mid_run_then_rerun_completes_without_redoing(tmp_path):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    names = make_photos(in_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(command(in_dir, out_dir, tmp_path / "first.json"), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # The run goes on only in short slices (SIGCONT, then SIGSTOP) and is looked at while
        # stopped: it is known to be alive and midway when killed, however fast the machine.
        deadline = time.monotonic() + 240
        while len(outputs(out_dir) if out_dir.exists() else {}) < 3:
            assert time.monotonic() < deadline, "the batch run wrote no output in time"
            first.send_signal(signal.SIGCONT)
            time.sleep(SLICE_S)
            first.send_signal(signal.SIGSTOP)
            _, status = os.waitpid(first.pid, os.WUNTRACED)  # returns once it is stopped (or gone)
            if not os.WIFSTOPPED(status):
                tail = first.stderr.read().decode()[-2000:]
                pytest.fail(f"the batch run ended before it was killed (wait status {status}):\n{tail}")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.returncode is None:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL

    survived = outputs(out_dir)
    assert 3 <= len(survived) < FILES, f"kill came too late to test anything: {len(survived)} done"
    for rel in survived:  # every final-named file is a complete image
        image = load_image(out_dir / rel)
        assert image.pixels.shape == (SIDE, SIDE, 3)

    second = subprocess.run(command(in_dir, out_dir, tmp_path / "second.json"), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    rows = {r["input"]: r for r in json.loads((tmp_path / "second.json").read_text())}
    final = outputs(out_dir)
    assert sorted(final) == sorted(names)  # complete
    # Hidden files: the settings record, and at most the temporary of the write the kill cut
    # short, which the rerun leaves (younger than an hour, it may be a concurrent run's) and a
    # later run removes once it is an hour old.
    partials = [p for p in out_dir.rglob(".*") if p.is_file() and p.name != SETTINGS_FILE]
    assert (out_dir / SETTINGS_FILE).is_file()
    assert all(p.name.endswith(PARTIAL_SUFFIX) for p in partials), partials
    assert len(partials) <= FILES - len(survived)  # only of files the kill cut short
    hour_ago = time.time() - 3700
    for p in partials:
        os.utime(p, (hour_ago, hour_ago))
    assert remove_partials(out_dir) == len(partials)
    assert not [p for p in out_dir.rglob(".*") if p.is_file() and p.name != SETTINGS_FILE]
    for rel in names:
        if rel in survived:  # nothing processed twice: same file, untouched, reported skipped
            assert final[rel] == survived[rel]
            assert rows[rel]["status"] == "skipped" and rows[rel]["reason"] == "output_exists"
        else:
            assert rows[rel]["status"] == "done"
        noisy, out = load_image(in_dir / rel).pixels, load_image(out_dir / rel).pixels
        assert out.shape == noisy.shape and not np.array_equal(to_model(out), to_model(noisy))
    assert sum(r["status"] == "done" for r in rows.values()) == FILES - len(survived)
