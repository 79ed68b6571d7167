"""Keras 3 in and out: port a Keras 3 model to tf_keras (which TF-MOT and tfedge need) and back.

This is the one tfedge module that imports Keras 3 itself (``import keras``), and only when a port
is asked for. A model is rebuilt layer for layer from the layer configs, translated where the two
Keras differ (dtype policies by name, initializers dropped since the weights are copied anyway,
``relu6`` as a ``ReLU(max_value=6)`` layer), then the weights are copied and the port is checked
against the original on a probe batch. Layers that cannot be ported are listed together in one
:class:`tfedge.errors.ModelError`.

>>> import tfedge
>>> k3 = tfedge.keras3.keras3()  # Keras 3, or a ModelError that says how to install it
>>> model = k3.Sequential([k3.layers.Input((4,)), k3.layers.Dense(3, activation="relu6")])
>>> port = tfedge.from_keras3(model)
>>> [type(layer).__name__ for layer in port.layers]
['Dense', 'ReLU']
>>> type(tfedge.to_keras3(port)).__module__.startswith("keras")
True
"""

from __future__ import annotations

import inspect as _inspect
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tfedge._keras import keras

import numpy as np

from tfedge.errors import InputError, ModelError, first_line
from tfedge.files import PathLike, atomic_path, check_input_file
from tfedge.graph import check_graph_model

#: Layers ported in both directions: the same class name, config and weight order in both Keras.
SUPPORTED_LAYERS = frozenset(
    {
        "InputLayer",
        "Conv1D",
        "Conv2D",
        "DepthwiseConv2D",
        "SeparableConv1D",
        "SeparableConv2D",
        "Dense",
        "BatchNormalization",
        "Activation",
        "ReLU",
        "LeakyReLU",
        "Softmax",
        "MaxPooling1D",
        "MaxPooling2D",
        "AveragePooling1D",
        "AveragePooling2D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "Flatten",
        "Reshape",
        "Permute",
        "Add",
        "Subtract",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
        "Concatenate",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "UpSampling1D",
        "UpSampling2D",
        "Rescaling",
        "Normalization",
    }
)
# Activation names both Keras compute the same way. (hard_sigmoid is not one: Keras 2 uses 0.2x + 0.5,
# Keras 3 x / 6 + 0.5.)
_SAME_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "elu",
        "selu",
        "softmax",
        "softplus",
        "softsign",
        "swish",
        "gelu",
        "tanh",
        "sigmoid",
        "exponential",
        "mish",
    }
)
# Keras 3 activation names that tf_keras lacks: ported as an activation layer after the layer.
_SPLIT_ACTIVATIONS = {"relu6": ("ReLU", {"max_value": 6.0}), "leaky_relu": ("LeakyReLU", {"alpha": 0.2})}
# Keyword arguments every Keras layer takes (beyond its own __init__ parameters).
_BASE_KWARGS = frozenset(
    {"name", "trainable", "dtype", "activity_regularizer", "input_shape", "batch_size", "autocast"}
)
# Options one Keras has and the other lacks, at the value the other always uses (tf_keras' ZeroPadding1D is
# channels_last only).
_IMPLIED_OPTIONS = frozenset({("data_format", "channels_last")})
_PROBE_TOLERANCE = 1e-4  # relative to the output scale; a faithful port differs by float rounding (~1e-7)


def keras3() -> ModuleType:
    """Keras 3 (``import keras``), or a :class:`ModelError` saying how to install it.

    >>> keras3().__version__.split(".")[0]
    '3'
    """
    try:
        import keras as k3
    except ImportError as exc:
        raise ModelError(f"Keras 3 is not installed ({first_line(exc)}): pip install 'tfedge[keras3]'") from None
    version = str(getattr(k3, "__version__", "?"))
    if not version.startswith("3."):
        raise ModelError(
            f"the installed 'keras' package is version {version}, not Keras 3: "
            "pip install 'tfedge[keras3]' (keras>=3.10)"
        )
    return k3


@dataclass
class _Ref:
    """A tensor in the source model's config: output ``index`` of call ``node`` of layer ``layer``."""

    layer: str
    node: int
    index: int


@dataclass
class _Port:
    """One port from ``src`` Keras to ``dst`` Keras, collecting every layer it cannot port."""

    src: ModuleType
    dst: ModuleType
    to_keras3: bool
    problems: list[str] = field(default_factory=list)
    pairs: list[tuple[Any, Any]] = field(default_factory=list)  # (source layer, ported layer) to copy weights

    # ---------------------------------------------------------------- one layer
    def layer(self, layer: Any) -> list[Any]:
        """The ported layer (plus an activation layer when the activation has no twin), or [] on a problem."""
        cls = type(layer).__name__
        what = f"'{layer.name}' ({cls})"
        if isinstance(layer, self.src.Model):
            sub = self.model(layer)
            return [sub] if sub is not None else []
        if cls not in SUPPORTED_LAYERS:
            hint = (
                " (strip pruning with tfedge.strip first; QAT models cannot be ported)"
                if cls.startswith(("Prune", "Quantize"))
                else ""
            )
            self.problems.append(f"{what}: layer type not supported{hint}")
            return []
        config = self.config(_plain(layer.get_config()))
        extra = []
        activation = config.get("activation")
        if activation is not None:
            mapped = self.activation(activation, what)
            if mapped is None:
                return []
            if isinstance(mapped, tuple):  # tf_keras has no such activation name: an activation layer instead
                act_cls, act_config = mapped
                act_layer = getattr(self.dst.layers, act_cls)
                if cls == "Activation":
                    return [act_layer(name=layer.name, **act_config)]
                extra = [act_layer(name=f"{layer.name}_{activation}", **act_config)]
                mapped = "linear"
            config["activation"] = mapped
        if cls == "BatchNormalization" and isinstance(config.get("axis"), list) and len(config["axis"]) == 1:
            config["axis"] = config["axis"][0]  # tf_keras writes [3], Keras 3 takes only an int
        if cls == "LeakyReLU":  # the slope is 'alpha' in Keras 2, 'negative_slope' in Keras 3
            old, new = ("alpha", "negative_slope") if self.to_keras3 else ("negative_slope", "alpha")
            if old in config:
                config[new] = config.pop(old)
        target = getattr(self.dst.layers, cls)
        known = self.known_options(type(layer), target, config, what)
        if known is None:
            return []
        config = known
        try:
            ported = target.from_config(config)
        except Exception as exc:  # a config the other Keras rejects
            self.problems.append(f"{what}: {first_line(exc, 160)}")
            return []
        self.pairs.append((layer, ported))
        return [ported, *extra]

    def config(self, config: dict) -> dict:
        """The layer config in the form both Keras read (before the layer-specific changes)."""
        out = {}
        for key, value in config.items():
            if key.endswith("_initializer"):
                continue  # the weights are copied over, so initial values do not matter
            if key == "dtype":
                value = _dtype_name(value)
            elif key.endswith(("_regularizer", "_constraint")) and isinstance(value, dict):
                # tf_keras does not read Keras 3's module / registered_name keys; both read these two
                value = {"class_name": value.get("class_name"), "config": value.get("config", {})}
            out[key] = value
        return out

    def activation(self, activation: Any, what: str) -> Any:
        name = activation if isinstance(activation, str) else None
        if name == "silu":
            name = "swish"
        if name in _SAME_ACTIVATIONS:
            return name
        if name in _SPLIT_ACTIVATIONS:
            return name if self.to_keras3 else _SPLIT_ACTIVATIONS[name]
        self.problems.append(
            f"{what}: activation {activation!r} has no equivalent in {'Keras 3' if self.to_keras3 else 'tf_keras'}"
        )
        return None

    def known_options(self, source: type, target: type, config: dict, what: str) -> dict | None:
        """Drop options the target layer does not take when they are unset or at the source's default;
        refuse the others (the port would compute something else)."""
        params, defaults = _init_parameters(target), _init_parameters(source)
        out = {}
        for key, value in config.items():
            if key in params or key in _BASE_KWARGS:
                out[key] = value
            elif (
                value not in (None, False)
                and not (key in defaults and defaults[key] == value)
                and (key, value) not in _IMPLIED_OPTIONS
            ):
                self.problems.append(
                    f"{what}: option {key}={value!r} has no equivalent in {'Keras 3' if self.to_keras3 else 'tf_keras'}"
                )
                return None
        return out

    # ---------------------------------------------------------------- one model
    def model(self, model: Any) -> Any:
        if isinstance(model, self.src.Sequential):
            return self.sequential(model)
        functional = getattr(model, "_is_graph_network", False) or any(  # tf_keras / Keras 3
            klass.__name__ == "Functional" for klass in type(model).__mro__
        )
        if not functional:
            raise ModelError(
                f"model '{model.name}' is a subclassed model ({type(model).__name__}), which has no layer graph "
                "to port: build it with keras.Sequential([...]) or keras.Model(inputs, outputs)"
            )
        return self.functional(model)

    def inputs(self, model: Any) -> list[Any]:
        try:
            inputs = list(model.inputs or [])
        except (AttributeError, ValueError):
            inputs = []
        if not inputs:
            raise ModelError(
                f"model '{model.name}' is not built (its input shape is unknown): start it with "
                "keras.layers.Input(shape) or call model.build((None, *shape)) first"
            )
        return inputs

    def sequential(self, model: Any) -> Any:
        source = self.inputs(model)[0]
        layers: list[Any] = [self.input(tuple(source.shape), _dtype_name(source.dtype), None)]
        for layer in model.layers:
            layers += self.layer(layer)
        if self.problems:
            return None
        return self.dst.Sequential(layers, name=model.name)

    def input(self, batch_shape: tuple, dtype: str | None, name: str | None) -> Any:
        shape = tuple(None if d is None else int(d) for d in batch_shape)
        kwargs = {"name": name} if name else {}
        return self.dst.Input(shape=shape[1:], batch_size=shape[0], dtype=dtype or "float32", **kwargs)

    def functional(self, model: Any) -> Any:
        config = _plain(model.get_config())
        tensors: dict[tuple[str, int, int], Any] = {}
        for entry in config["layers"]:
            name = entry.get("name") or entry["config"]["name"]
            if entry["class_name"] == "InputLayer":
                cfg = entry["config"]
                shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
                tensors[(name, 0, 0)] = self.input(tuple(shape), _dtype_name(cfg.get("dtype")), name)
                continue
            ported = self.layer(model.get_layer(name))
            for node, (args, kwargs) in enumerate(_calls(entry.get("inbound_nodes", []))):
                if not ported or any(
                    isinstance(r, _Ref) and (r.layer, r.node, r.index) not in tensors for r in _refs(args)
                ):
                    break  # a problem upstream: keep collecting problems from the other layers
                out = ported[0](*_resolve(args, tensors), **_resolve(kwargs, tensors))
                for extra in ported[1:]:
                    out = extra(out)
                for index, tensor in enumerate(out if isinstance(out, (list, tuple)) else [out]):
                    tensors[(name, node, index)] = tensor
        if self.problems:
            return None
        ends = {}
        for key in ("input_layers", "output_layers"):
            refs = config[key]
            single = bool(refs) and isinstance(refs[0], str)
            found = [tensors[(r[0], r[1], r[2])] for r in ([refs] if single else refs)]
            ends[key] = found[0] if single or len(found) == 1 and key == "input_layers" else found
        return self.dst.Model(ends["input_layers"], ends["output_layers"], name=model.name)

    # ---------------------------------------------------------------- whole port
    def run(self, model: Any) -> Any:
        ported = self.model(model)
        if ported is None or self.problems:
            n = len(self.problems)
            raise ModelError(
                f"{n} layer{'s' if n > 1 else ''} of model '{model.name}' cannot be ported to "
                f"{'Keras 3' if self.to_keras3 else 'tf_keras'}: "
                + "; ".join(self.problems)
                + ": replace them with supported layers (tfedge.keras3.SUPPORTED_LAYERS) and port again"
            )
        for source, target in self.pairs:
            weights = [np.asarray(w) for w in source.get_weights()]
            shapes = [tuple(w.shape) for w in target.get_weights()]
            if [w.shape for w in weights] != shapes:
                raise ModelError(
                    f"layer '{source.name}' ({type(source).__name__}) has weights of shapes "
                    f"{[w.shape for w in weights]} but its port expects {shapes}: it cannot be ported"
                )
            target.set_weights(weights)
        _check_same_predictions(model, ported)
        return ported


def _init_parameters(cls: type) -> dict[str, Any]:
    """The keyword arguments a layer class takes (through its base classes), with their defaults."""
    params: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            for name, param in _inspect.signature(vars(klass)["__init__"]).parameters.items():
                params[name] = param.default
    return params


def _plain(value: Any) -> Any:
    """A config with tf_keras' tracking wrappers (ListWrapper, DictWrapper) as plain lists and dicts."""
    if isinstance(value, dict) or type(value).__name__ == "_DictWrapper":
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListWrapper":
        return [_plain(v) for v in value]
    return value


def _dtype_name(value: Any) -> Any:
    """A dtype or dtype policy (object, or Keras 3 / Keras 2 serialized dict) as its name."""
    if isinstance(value, dict):
        return (value.get("config") or {}).get("name", value.get("class_name"))
    if value is None or isinstance(value, str):
        return value
    return getattr(value, "name", str(value))


def _calls(nodes: list) -> list[tuple[list, dict]]:
    """Each call of a layer in a model config as (args, kwargs) with tensors as :class:`_Ref`.

    Keras 3 writes ``{"args": [...], "kwargs": {...}}`` with ``__keras_tensor__`` entries; Keras 2 writes a
    list of ``[layer, node, index, kwargs]``, one per input tensor.
    """
    calls = []
    for node in nodes:
        if isinstance(node, dict):
            calls.append((_to_refs(node.get("args", [])), _to_refs(node.get("kwargs", {}))))
        else:
            refs = [_Ref(str(t[0]), int(t[1]), int(t[2])) for t in node]
            kwargs = node[0][3] if node and len(node[0]) > 3 else {}
            calls.append(([refs[0] if len(refs) == 1 else refs], dict(kwargs)))
    return calls


def _to_refs(value: Any) -> Any:
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        history = value["config"]["keras_history"]
        return _Ref(str(history[0]), int(history[1]), int(history[2]))
    if isinstance(value, dict):
        return {k: _to_refs(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_refs(v) for v in value]
    return value


def _refs(value: Any) -> list[_Ref]:
    if isinstance(value, _Ref):
        return [value]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _resolve(value: Any, tensors: dict) -> Any:
    if isinstance(value, _Ref):
        return tensors[(value.layer, value.node, value.index)]
    if isinstance(value, dict):
        return {k: _resolve(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, tensors) for v in value]
    return value


def _probe(model: Any) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    probe = []
    for tensor in model.inputs:
        shape = [4] + [8 if d is None else int(d) for d in tuple(tensor.shape)[1:]]
        probe.append(rng.normal(size=shape).astype(_dtype_name(tensor.dtype) or "float32"))
    return probe


def _outputs(model: Any, probe: list[np.ndarray]) -> list[np.ndarray]:
    out = model(probe if len(probe) > 1 else probe[0], training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def _check_same_predictions(source: Any, ported: Any) -> None:
    """Refuse a port that does not predict what the source does on a random batch (a safety net)."""
    if any(not np.issubdtype(np.dtype(_dtype_name(t.dtype) or "float32"), np.floating) for t in source.inputs):
        return
    probe = _probe(source)
    expected, got = _outputs(source, probe), _outputs(ported, probe)
    for a, b in zip(expected, got):
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        if a.shape != b.shape or diff > _PROBE_TOLERANCE * max(1.0, float(np.max(np.abs(a)))):
            raise ModelError(
                f"the port of model '{source.name}' predicts differently from it (max abs diff "
                f"{diff:.3g}, shapes {a.shape} vs {b.shape}): please report it with the model's "
                "config; until then rebuild the model by hand"
            )


def from_keras3(model: Any) -> keras.Model:
    """Rebuild an in-memory Keras 3 Sequential or Functional model in tf_keras, layer for layer, with its weights.

    The result predicts what ``model`` does (float rounding apart) and goes through every tfedge function.

    >>> import numpy as np, tfedge
    >>> k3 = tfedge.keras3.keras3()
    >>> inp = k3.layers.Input((8, 8, 1))
    >>> model = k3.Model(inp, k3.layers.Dense(10)(k3.layers.Flatten()(k3.layers.Conv2D(4, 3)(inp))))
    >>> port = tfedge.from_keras3(model)
    >>> x = tfedge.datasets.digits().x_test[:8]
    >>> bool(np.max(np.abs(port.predict(x, verbose=0) - model.predict(x, verbose=0))) < 1e-5)
    True
    """
    k3 = keras3()
    if isinstance(model, keras.Model):
        raise InputError(
            f"model '{model.name}' is already a tf_keras model: use it as it is (from_keras3 ports "
            "models built with `import keras`)"
        )
    if not isinstance(model, k3.Model):
        raise InputError(f"from_keras3 takes a Keras 3 model (built with `import keras`), got {type(model).__name__}")
    return _Port(k3, keras, to_keras3=False).run(model)


def to_keras3(model: keras.Model, path: PathLike | None = None) -> Any:
    """An equivalent Keras 3 model of a float tf_keras model (e.g. a distilled or channel-pruned student).

    With ``path`` (a ``.keras`` file) it is also saved, atomically.

    >>> import os, tempfile, tfedge
    >>> from tfedge import keras
    >>> student = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    >>> k3_model = tfedge.to_keras3(student, os.path.join(tempfile.mkdtemp(), "student.keras"))
    >>> k3_model.output_shape
    (None, 10)
    """
    k3 = keras3()
    if path is not None and Path(path).suffix.lower() != ".keras":
        raise InputError(f"cannot save a Keras 3 model to '{path}': use a .keras file name")
    if isinstance(model, k3.Model):
        raise InputError(
            f"model '{model.name}' is already a Keras 3 model: use it as it is (to_keras3 ports "
            "tf_keras models, e.g. tfedge's students)"
        )
    check_graph_model(model, f"model '{getattr(model, 'name', '?')}'", needs="to_keras3 ports layer graphs")
    ported = _Port(keras, k3, to_keras3=True).run(model)
    if path is not None:
        with atomic_path(path, suffix=".tmp.keras") as tmp:
            ported.save(tmp)
    return ported


def load_keras3(path: PathLike) -> keras.Model:
    """Load a Keras 3 ``.keras`` file (Keras safe mode on) and port it to tf_keras.

    tfedge's own scan of the file's config (:func:`tfedge.load_model`) must have run first: this is
    what ``tfedge.load_model`` calls for a file saved by Keras 3.
    """
    k3 = keras3()
    p = Path(path)
    check_input_file(p, "model file")
    try:
        model = k3.saving.load_model(p, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file
        raise InputError(f"cannot load Keras 3 model '{p}': {first_line(exc, 300)}") from None
    return from_keras3(model)


__all__ = ["SUPPORTED_LAYERS", "from_keras3", "keras3", "load_keras3", "to_keras3"]
