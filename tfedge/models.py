"""Loading and saving Keras models safely, pruned, quantization-aware and distillation models included.

``.keras`` files load with Keras safe mode on, after tfedge has read their ``config.json`` and
refused layers that would run code or read files (``Lambda``, ``TFSMLayer``, lookup layers with a
file vocabulary). ``.h5`` files and SavedModel folders can run arbitrary code when loaded, so they
load only with ``trust=True`` (``--trust-model`` in the CLI).

>>> import os, tempfile
>>> import tfedge
>>> from tfedge import keras
>>> model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2)])
>>> path = os.path.join(tempfile.mkdtemp(), "m.keras")
>>> tfedge.save_model(model, path)
>>> tfedge.load_model(path).output_shape
(None, 2)
"""

from __future__ import annotations

import builtins
import contextlib
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfedge._keras import ensure_keras2_model, keras

from tfedge import distillation, files, keras3, pruning, quantization
from tfedge.errors import InputError, ModelError, first_line
from tfedge.files import PathLike, atomic_path, check_input_file

# Re-exported for callers that still import it from here; it lives in tfedge.graph, below the feature modules.
from tfedge.graph import check_graph_model

#: The feature modules whose classes a saved model may name: importing them registers tfedge's classes
#: (``tfedge>AdaptiveSchedule``, ``tfedge>Distiller``, ...) with Keras, and each gives the scope its
#: TF-MOT classes need (:func:`custom_objects`).
FEATURES = (pruning, quantization, distillation)

_UNSAFE_LAYERS = {
    "Lambda": "it runs arbitrary Python code when loaded",
    "TFSMLayer": "it loads and runs a SavedModel from another path",
}
_LOOKUP_LAYERS = {"StringLookup", "IntegerLookup", "TextVectorization", "Hashing"}
# Packages whose classes a .keras config may name. Keras (safe mode too) imports whatever module a
# config names and calls the class it finds there, so any other module is refused before loading.
_KERAS_PACKAGES = ("keras", "tf_keras", "tensorflow_model_optimization", "tfedge")


def _foreign_module(entry: dict) -> str | None:
    """The module an object in a config names, when it is outside Keras, TF-MOT and tfedge."""
    module = entry.get("module")
    if module is None:
        return None
    if module == "builtins" and entry.get("class_name") == "function":  # Keras' functions saved by name
        name = entry.get("config")
        return None if isinstance(name, str) and not hasattr(builtins, name) else f"builtins.{name}"
    if isinstance(module, str) and any(module == pkg or module.startswith(pkg + ".") for pkg in _KERAS_PACKAGES):
        return None
    return str(module)


@contextlib.contextmanager
def custom_objects() -> Iterator[None]:
    """Scope in which TF-MOT's and tfedge's custom layers, wrappers and quantizers deserialize: the
    feature modules' scopes (:func:`tfedge.pruning.prune_scope`, :func:`tfedge.quantization.quantize_scope`)
    together. :func:`load_model` enters it; enter it yourself around ``keras.models.load_model`` or
    ``Distiller.from_config`` of a pruned or quantization-aware model."""
    with pruning.prune_scope(), quantization.quantize_scope():
        yield


def _config_objects(config: Any) -> Iterator[dict]:
    """Every serialized object (a dict with a ``class_name``) in a model's ``config.json``, at any depth.

    This walks the saved configuration, not a live model (for that, see :func:`tfedge.graph.walk_layers`).
    """
    if isinstance(config, dict):
        if "class_name" in config:
            yield config
        for value in config.values():
            yield from _config_objects(value)
    elif isinstance(config, list):
        for value in config:
            yield from _config_objects(value)


def _check_keras_archive(p: Path) -> str:
    """Refuse unsafe content before Keras reads the file; return the Keras version that saved it."""
    where = f"model file '{p}'"
    if not zipfile.is_zipfile(p):
        raise InputError(f"{where} is not a .keras archive (not a zip): save it with model.save('model.keras')")
    try:
        with zipfile.ZipFile(p) as zf:
            if "config.json" not in zf.namelist():
                raise InputError(f"{where} has no config.json: not a Keras model archive")
            unpacked = sum(member.file_size for member in zf.infolist())
            if unpacked > files.MAX_FILE_BYTES:  # a small compressed file can unpack to gigabytes
                raise InputError(
                    f"{where} unpacks to {unpacked:,} bytes, over the {files.MAX_FILE_BYTES:,}-byte cap: "
                    "pass a smaller model (or raise tfedge.files.MAX_FILE_BYTES if you trust it)"
                )
            info = zf.getinfo("config.json")
            if info.file_size > 64 * 1024 * 1024:
                raise InputError(f"{where}: config.json is {info.file_size:,} bytes, refused as implausible")
            config = json.loads(zf.read("config.json"))
            saved_by = ""
            if "metadata.json" in zf.namelist() and zf.getinfo("metadata.json").file_size < 65536:
                metadata = json.loads(zf.read("metadata.json"))
                saved_by = str(metadata.get("keras_version", "")) if isinstance(metadata, dict) else ""
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError, RecursionError) as exc:
        raise InputError(f"{where} is corrupted: {first_line(exc, 200)}") from None
    try:
        entries = list(_config_objects(config))
    except RecursionError:
        raise InputError(f"{where}: config.json is nested too deeply, refused as implausible") from None
    for layer in entries:
        cls = layer.get("class_name")
        name = (layer.get("config") or {}).get("name", "?") if isinstance(layer.get("config"), dict) else "?"
        module = _foreign_module(layer)
        if module is not None:
            raise InputError(
                f"{where} names the class '{cls}' from the Python module '{module}', refused: loading it would "
                "import and run code from outside Keras (a subclassed model, a custom layer or a crafted file); "
                "rebuild it from built-in layers with keras.Sequential or keras.Model(inputs, outputs)"
            )
        if cls in _UNSAFE_LAYERS:
            raise InputError(
                f"{where} contains a {cls} layer '{name}', refused because {_UNSAFE_LAYERS[cls]}: "
                "replace it with built-in layers and save again"
            )
        if cls in _LOOKUP_LAYERS:
            vocab = (layer.get("config") or {}).get("vocabulary")
            if isinstance(vocab, str):
                raise InputError(
                    f"{where} contains a {cls} layer '{name}' that reads its vocabulary from the file "
                    f"'{vocab}', refused: pass the vocabulary as a list instead of a path"
                )
    return saved_by


def load_model(path: PathLike, *, trust: bool = False, compile: bool = False) -> keras.Model:
    """Load a Keras 2 model from ``.keras`` (safe mode), or ``.h5`` / SavedModel with ``trust=True``.

    Pruned (TF-MOT wrapped) and quantization-aware models load without a custom-object scope. A ``.keras``
    file saved by Keras 3 passes the same scan, then is ported to tf_keras (:func:`tfedge.from_keras3`).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"model '{p}' does not exist: check the path")
    is_savedmodel = p.is_dir() and (p / "saved_model.pb").exists()
    if p.is_dir() and not is_savedmodel:
        raise InputError(f"model '{p}' is a directory but not a SavedModel: pass a .keras file")
    suffix = p.suffix.lower()
    if not is_savedmodel and suffix not in (".keras", ".h5", ".hdf5"):
        raise InputError(f"model '{p}' has an unknown extension '{suffix}': tfedge loads .keras (or .h5 with trust)")
    if is_savedmodel or suffix in (".h5", ".hdf5"):
        kind = "a SavedModel" if is_savedmodel else "an .h5 file"
        if not trust:
            raise InputError(
                f"model '{p}' is {kind}, which Keras cannot load safely (it can run code hidden in the file): "
                "re-save it as .keras, or pass --trust-model (trust=True) if you made it yourself"
            )
    else:
        check_input_file(p, "model file")
        if _check_keras_archive(p).startswith("3."):  # scanned like any file, then ported layer for layer
            return keras3.load_keras3(p)
    if not is_savedmodel:
        check_input_file(p, "model file")
    try:
        with custom_objects():
            if suffix == ".keras":
                model = keras.models.load_model(p, compile=compile, safe_mode=True)
            else:
                model = keras.models.load_model(p, compile=compile)
    except InputError:
        raise
    except Exception as exc:  # Keras raises many types for a bad file
        msg = first_line(exc)
        unknown = re.search(r"Could not locate class '([^']+)'", msg)
        if unknown and not (hasattr(keras.layers, unknown.group(1)) or hasattr(keras.models, unknown.group(1))):
            raise ModelError(
                f"model '{p}' uses the class '{unknown.group(1)}', which is not a built-in Keras layer or model "
                "(a subclassed model or an unregistered custom layer): rebuild it from built-in layers with "
                "keras.Sequential or keras.Model(inputs, outputs) and save it again"
            ) from None
        raise InputError(f"cannot load model '{p}': {msg[:300]}") from None
    ensure_keras2_model(model, f"model '{p}'")
    return model


def save_model(model: keras.Model, path: PathLike) -> None:
    """Save ``model`` to ``path`` (``.keras`` or ``.h5``) atomically: an existing file stays intact on failure."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".keras", ".h5"):
        raise InputError(f"cannot save to '{p}': use a .keras (recommended) or .h5 file name")
    with atomic_path(p, suffix=f".tmp{suffix}") as tmp:
        model.save(tmp)


__all__ = ["load_model", "save_model", "custom_objects", "check_graph_model"]
