"""Model loading, in one place: bundled names, run folders and ``.keras`` files.

``BUNDLED`` is the one list of shipped models; it feeds the CLI ``choices`` and the UI
dropdown alike. Each bundled model is ``models/bundled/NAME.keras`` beside ``NAME.json``, its
card (how it was trained, what it scores, and its input convention).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def bundled_models() -> dict[str, Path]:
    """Names of the shipped models mapped to their ``.keras`` files."""
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.keras")) if p.with_suffix(".json").exists()}


class ModelNotFoundError(FileNotFoundError):
    """The name or path given for a model leads to no model file."""


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A bundled name, a run folder (its ``model.keras``) or a ``.keras`` file -> the file."""
    text = str(name_or_path)
    bundled = bundled_models()
    if text in bundled:
        return bundled[text]
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "model.keras"
    if path.is_file() and path.suffix == ".keras":
        return path
    raise ModelNotFoundError(
        f"no model {text!r}: expected a bundled name ({', '.join(bundled) or 'none shipped'}), "
        "a run folder holding model.keras, or a .keras file")


def model_card(name_or_path: str | Path) -> dict:
    """The card of a bundled model, or for a run folder its config and metrics."""
    path = resolve_model_path(name_or_path)
    card_path = path.with_suffix(".json")
    if card_path.is_file():
        return json.loads(card_path.read_text())
    card = {"name": path.parent.name, "input": {"range": [0.0, 1.0]}}
    for extra in ("config.json", "metrics.json"):
        if (path.parent / extra).is_file():
            card[extra.removesuffix(".json")] = json.loads((path.parent / extra).read_text())
    return card


def load_model(name_or_path: str | Path):
    """Loads a DAE (or any model we ship) with ``safe_mode=True``, cached per file."""
    path = resolve_model_path(name_or_path)
    return _load(str(path.resolve()), path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load(path: str, _mtime: int):
    import keras

    import models.conv_dae  # noqa: F401 - registers the custom classes
    import models.encoder_classifier  # noqa: F401 - fine-tuned classifiers load by name too

    return keras.saving.load_model(path, safe_mode=True, compile=False)
