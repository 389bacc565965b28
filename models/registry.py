"""Model loading, in one place: bundled names, run folders and ``.keras`` files.

``BUNDLED`` is the one list of shipped models; it feeds the CLI ``choices`` and the UI
dropdown alike. Each bundled model is ``models/bundled/NAME.keras`` beside ``NAME.json``, its
card (how it was trained, what it scores, and its input convention).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def bundled_models(folder: Path = BUNDLED_DIR) -> dict[str, Path]:
    """Names of the shipped models (a ``.keras`` file beside its ``.json`` card in ``folder``)
    mapped to their ``.keras`` files, in name order: ``fashion-mnist`` before ``-wide``."""
    files = sorted(folder.glob("*.keras"), key=lambda p: p.stem)
    return {p.stem: p for p in files if p.with_suffix(".json").exists()}


class ModelNotFoundError(FileNotFoundError):
    """The name or path given for a model leads to no model file, or to a file that is not a
    model this app can use (the message names the file and says why)."""


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


def model_sha256(name_or_path: str | Path) -> str:
    """The sha256 of a model's ``.keras`` file: what tells two versions of a model at one path
    (or under one name) apart, and the same model at two paths alike. Read once per version of
    the file (cached by path and :func:`file_version`, as :func:`load_model` caches)."""
    path = resolve_model_path(name_or_path).resolve()
    return _sha256(str(path), file_version(path))


def file_version(path: Path) -> tuple[int, ...]:
    """What tells two versions of a file at one path apart, for the caches: its inode, size,
    modification time and change time (a copy kept at its old modification time, ``cp -p`` or
    ``rsync -a``, still gets a new change time, which cannot be set back); ``()`` where there
    is no file."""
    try:
        st = Path(path).stat()
    except OSError:
        return ()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def model_version(path: Path) -> tuple:
    """:func:`file_version` of a model's ``.keras`` file (:func:`resolve_model_path`'s answer)
    and of the files its card comes from (a bundled model's ``.json``; a run folder's
    ``config.json`` and ``metrics.json``)."""
    path = Path(path).resolve()
    cards = [path.with_suffix(".json"), path.parent / "config.json", path.parent / "metrics.json"]
    return file_version(path), *map(file_version, cards)


@lru_cache(maxsize=32)
def _sha256(path: str, _version: tuple) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_card(name_or_path: str | Path) -> dict:
    """The card of a bundled model, or for a run folder its config and metrics, and the
    channels its archive's config gives.

    Raises:
        ModelNotFoundError: a card or ``config.json`` that cannot be read or is no JSON object
            (the message names the file); a damaged ``metrics.json``, which holds only scores,
            is left out instead.
    """
    path = resolve_model_path(name_or_path)
    card_path = path.with_suffix(".json")
    if card_path.is_file():
        return _check_card(_read_json(card_path), card_path)
    card = {"name": path.parent.name, "input": {"range": [0.0, 1.0]}}
    if isinstance(channels := _archive_config(path).get("channels"), int):
        card["channels"] = channels
    if (path.parent / "config.json").is_file():
        card["config"] = _read_json(path.parent / "config.json")
    try:
        card["metrics"] = _read_json(path.parent / "metrics.json")
    except ModelNotFoundError:
        pass
    return card


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelNotFoundError(f"{path}: cannot be read as a model card ({err})") from err
    if not isinstance(data, dict):
        raise ModelNotFoundError(f"{path}: not a model card (a JSON {type(data).__name__}, not an object)")
    return data


def _check_card(card: dict, path: Path) -> dict:
    """``card`` where the fields the engine reads have usable values, else a one-line error."""
    def bad(field: str, value) -> ModelNotFoundError:
        return ModelNotFoundError(f"{path}: not a usable model card ({field} is {value!r})")

    if "channels" in card and card["channels"] not in (1, 3):
        raise bad("channels", card["channels"])
    if "stride" in card and (isinstance(card["stride"], bool) or not isinstance(card["stride"], int)
                             or card["stride"] < 1):
        raise bad("stride", card["stride"])
    convention = card.get("input", {})
    value_range = convention.get("range", [0.0, 1.0]) if isinstance(convention, dict) else convention
    if not (isinstance(value_range, list) and len(value_range) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value_range)
            and value_range[0] < value_range[1]):
        raise bad("input.range", value_range)
    if not isinstance(card.get("config", {}), dict):
        raise bad("config", card["config"])
    return card


ARCHIVE_LIMITS = {"config.json": 16 << 20, "total": 4 << 30, "ratio": 200}
"""What a ``.keras`` archive may unpack to before Keras is let open it: its ``config.json`` at
most 16 MB, all its members 4 GB, and none but the weights over 1 MB compressed more than 200
times (a "zip bomb": a few kB that would fill memory; weights of zeros, untrained or pruned,
rightly pack 700 times, and the 4 GB bound them). The bundled models' ``config.json`` is under
1 kB and their weights are stored uncompressed."""


def _archive_config(path: Path) -> dict:
    """The model's own config in a ``.keras`` archive (``channels``, ``widths``, ...), checked
    against :data:`ARCHIVE_LIMITS` first; ``{}`` where there is none to read (the loader then
    says what is wrong)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _check_archive(path, members)
            names = {m.filename for m in members}
            config = json.loads(archive.read("config.json")) if "config.json" in names else {}
    except ModelNotFoundError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError):  # not a zip, damaged, encrypted
        return {}
    inner = config.get("config") if isinstance(config, dict) else None
    return inner if isinstance(inner, dict) else {}


def _check_archive(path, members) -> None:
    for m in members:
        if m.filename == "config.json" and m.file_size > ARCHIVE_LIMITS["config.json"]:
            raise ModelNotFoundError(f"{path} is not a model this app can use: its config.json "
                                     f"unpacks to {m.file_size / 1e6:.0f} MB")
        if m.filename != "model.weights.h5" and m.file_size > 1 << 20 and (
                m.file_size > ARCHIVE_LIMITS["ratio"] * max(m.compress_size, 1)):
            raise ModelNotFoundError(f"{path} is not a model this app can use: {m.filename} unpacks "
                                     f"{m.file_size // max(m.compress_size, 1)} times its packed size")
    if (total := sum(m.file_size for m in members)) > ARCHIVE_LIMITS["total"]:
        raise ModelNotFoundError(f"{path} is not a model this app can use: it unpacks to "
                                 f"{total / 1e9:.1f} GB")


PRECISIONS = ("float32", "bfloat16")
"""How a loaded model computes: ``float32`` as trained and scored, or ``bfloat16`` (weights stay
float32, layers compute in bfloat16, the output layer stays float32). bfloat16 ran 1.4-2.0x
as fast here, on a CPU with AVX512-BF16 (AMX CPUs and GPUs with bfloat16 units should gain too;
not measured), for PSNRs 0.01 dB lower or less on Fashion-MNIST and 0.02 dB lower on the
test photos (README, "Faster on bfloat16 hardware"). A processor without bfloat16 units
emulates it, which can be slower than float32: measure with
``training.bench_engine --precision``. Benchmarks take one of these."""

PRECISION_CHOICES = ("auto", *PRECISIONS)
"""What the web UI and the batch script accept: ``auto`` (their default) is bfloat16 where this
machine computes it natively (:func:`native_bfloat16`) and the model can, float32 elsewhere."""

PRECISION_HELP = ("how the model computes: bfloat16 ran 1.4-2.0x as fast as float32 on a CPU with "
                  "AVX512-BF16, for PSNRs at most 0.02 dB lower (README)")
"""The command-line help of every ``--precision`` flag."""

AUTO_PRECISION_HELP = ("auto (the default): bfloat16 where the machine has bfloat16 units (GPUs all of "
                       "compute capability 8.0 on; with no GPU, AVX512-BF16 or AMX CPUs on the "
                       "TensorFlow backend), else float32; " + PRECISION_HELP)
"""The help of a ``--precision`` flag that takes :data:`PRECISION_CHOICES`."""


def save_model(model, path: str | Path) -> Path:
    """``model.save(path)``, whole or not at all: saved into a scratch folder beside ``path``
    and renamed over it, so that a run stopped while saving never leaves half a model under the
    real name (nor loses the one that was there). Returns ``path``."""
    import os
    import tempfile

    from data.images import PARTIAL_SUFFIX

    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.",
                                     suffix=PARTIAL_SUFFIX) as scratch:
        model.save(Path(scratch) / path.name)
        os.replace(Path(scratch) / path.name, path)
    return path


def load_model(name_or_path: str | Path, precision: str = "float32"):
    """Loads a DAE (or any model we ship) with ``safe_mode=True``, cached per file and precision.

    Args:
        name_or_path: a bundled name, a run folder or a ``.keras`` file.
        precision: one of :data:`PRECISION_CHOICES` (see :func:`with_precision`).
    """
    check_precision(precision)
    path = resolve_model_path(name_or_path)
    return _load(str(path.resolve()), file_version(path.resolve()), precision)


@lru_cache(maxsize=8)
def _load(path: str, _version: tuple, precision: str):
    if precision != "float32":
        return with_precision(_load(path, _version, "float32"), precision)
    import zipfile

    import keras

    import models.conv_dae  # noqa: F401 - registers the custom classes
    import models.encoder_classifier  # noqa: F401 - fine-tuned classifiers load by name too

    def unusable(why: str) -> ModelNotFoundError:
        return ModelNotFoundError(f"{path} is not a model this app can use: {why}")

    try:
        with zipfile.ZipFile(path) as archive:
            _check_archive(path, archive.infolist())
    except ModelNotFoundError:
        raise
    except zipfile.BadZipFile as err:
        raise unusable("it is not a .keras archive (a zip file)") from err
    except (OSError, RuntimeError) as err:
        raise unusable(f"its zip archive is damaged ({err})") from err
    # Rebuilt under the float32 policy, whatever the global one: layers take the policy in force
    # when built, and a model loaded during a mixed-precision run (pretraining scores its own
    # model) would otherwise compute in float16 or bfloat16 while cached as float32.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as err:  # noqa: BLE001 - any archive Keras cannot rebuild is the same answer
        reason = str(err).split(". ")[0].strip().rstrip(".") or type(err).__name__
        raise unusable(f"Keras cannot load it ({reason})") from err
    finally:
        keras.config.set_dtype_policy(previous)
    if not _takes_images(model):
        raise unusable(f"it is a {type(model).__name__}, not an image model "
                       "(a DAE or classifier that takes (batch, height, width, channels) images)")
    return _serving(model)


def _serving(model):
    """``model`` set to predict without XLA on TensorFlow. Keras's ``jit_compile="auto"`` means
    XLA wherever there is a GPU, and XLA compiles ``predict`` again for every new input shape
    (seconds each), where the engine feeds one shape per image size and tile; a TensorFlow graph
    serves any shape. The JAX backend always compiles."""
    import keras

    if keras.backend.backend() == "tensorflow":
        model.jit_compile = False
    return model


def _takes_images(model) -> bool:
    """True for our DAEs (``channels``) and functional models with one 4-D image input."""
    import keras

    if not isinstance(model, keras.Model):
        return False
    if getattr(model, "channels", None) in (1, 3):
        return True
    try:
        inputs = model.inputs
    except AttributeError:
        return False
    return bool(inputs) and len(inputs[0].shape) == 4


def check_precision(precision: str) -> None:
    """Raises ValueError naming :data:`PRECISION_CHOICES` unless ``precision`` is one of them."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")


@lru_cache(maxsize=1)
def native_bfloat16() -> bool:
    """Whether the device Keras computes on has bfloat16 units: every GPU of compute capability
    8.0 or newer (Ampere on; older GPUs emulate it; ROCm GPUs, which report none, count as
    without); with no GPU and the TensorFlow backend (oneDNN, where the speed-up was measured;
    JAX's CPU backend stays float32), a CPU whose ``/proc/cpuinfo`` flags name AVX512-BF16 or
    AMX-BF16 (False where there is no such file)."""
    import keras

    gpus = gpu_devices()
    if gpus:
        return all(capability >= (8, 0) for _, capability in gpus)
    return keras.backend.backend() == "tensorflow" and bool(cpu_flags() & BFLOAT16_FLAGS)


BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""The ``cpuinfo`` flags of a CPU with bfloat16 units."""


def _cpuinfo(cpuinfo: str | Path) -> dict[str, str]:
    """The first processor's fields in a Linux ``cpuinfo`` file (none where it cannot be read)."""
    fields = {}
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags from a Linux ``cpuinfo`` file (empty where it cannot be read)."""
    return set(_cpuinfo(cpuinfo).get("flags", "").split())


def cpu_description(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The processor, as a speed figure needs it named: ``"AMD EPYC, 2 cores, no bfloat16
    units"`` (its model name from a Linux ``cpuinfo`` file, else ``platform.processor()`` or
    the architecture). Timings of one command differ by 2-3 times between such processors."""
    import os
    import platform

    fields = _cpuinfo(cpuinfo)
    name = (" ".join(fields.get("model name", "").split()) or platform.processor() or platform.machine()
            or "unknown CPU")
    units = "bfloat16 units" if set(fields.get("flags", "").split()) & BFLOAT16_FLAGS else "no bfloat16 units"
    return f"{name}, {os.cpu_count()} cores, {units}"


def gpu_devices() -> list[tuple[str, tuple[int, int]]]:
    """``(name, (major, minor) compute capability)`` of each GPU Keras's backend sees; the
    capability is ``(0, 0)`` where none is reported in that form (ROCm GPUs: a gfx name)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        found = []
        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            found.append((details.get("device_name", gpu.name),
                          _capability(".".join(map(str, details.get("compute_capability") or ())))))
        return found
    if keras.backend.backend() == "jax":
        import jax

        return [(d.device_kind, _capability(getattr(d, "compute_capability", "")))
                for d in jax.devices() if d.platform == "gpu"]
    return []


def _capability(text) -> tuple[int, int]:
    """``"8.0"`` -> ``(8, 0)``; anything else (``"gfx90a"``, nothing) -> ``(0, 0)``."""
    match = re.fullmatch(r"(\d+)\.(\d+)", str(text))
    return (int(match[1]), int(match[2])) if match else (0, 0)


def computes_in(model) -> str:
    """``"bfloat16"`` if any of the model's layers computes in bfloat16, else ``"float32"`` (also for
    a callable that is not a Keras model)."""
    bfloat16 = any(getattr(layer, "compute_dtype", None) == "bfloat16" for layer in _leaf_layers(model))
    return "bfloat16" if bfloat16 else "float32"


def with_precision(model, precision: str):
    """The same model computing in ``precision``: rebuilt from its config under Keras's
    ``mixed_bfloat16`` policy (Keras's global policy, set for the rebuild and restored), with the
    same float32 weights. Layers that fix their own dtype (our output layers are float32) keep it.
    ``auto``: bfloat16 if :func:`native_bfloat16` and the model can compute in it, else the model
    as it is (see :func:`computes_in`).

    Raises:
        ValueError: an unknown precision, or a model whose layers all fix their own dtype (a
            functional model keeps its saved per-layer policies), so nothing would change.
    """
    check_precision(precision)
    if precision == "auto":
        if not native_bfloat16():
            return model
        try:
            return with_precision(model, "bfloat16")
        except ValueError:
            return model
    if precision == "float32":
        return model
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        clone = model.__class__.from_config(model.get_config())
    finally:
        keras.config.set_dtype_policy(previous)
    if computes_in(clone) != "bfloat16":
        raise ValueError(f"model {model.name} cannot compute in {precision}: its layers keep their "
                         "saved float32 policies")
    clone.set_weights(model.get_weights())
    return _serving(clone)


def _leaf_layers(layer):
    """The layers that compute: nested models are opened, not counted themselves."""
    subs = getattr(layer, "layers", ())
    if not subs:
        yield layer
    for sub in subs:
        yield from _leaf_layers(sub)
