"""Knowledge distillation: a small student learns from a trained teacher's softened predictions.

:class:`Distiller` is a ``keras.Model`` (Keras 2, ``tf_keras``) that trains only the student on::

    loss = alpha * CE(y, student_logits)
         + (1 - alpha) * T**2 * KL(softmax(teacher_logits / T) || softmax(student_logits / T))

Both terms are reduced against the *global* batch size, so the same code trains on one device or
under ``tf.distribute.MirroredStrategy``.

>>> import numpy as np
>>> import tfedge
>>> from tfedge import keras
>>> teacher = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
>>> student = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3), keras.layers.Softmax()])
>>> distiller = tfedge.Distiller(student, teacher, temperature=2.0, alpha=0.5)
>>> distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
>>> x, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % 3
>>> sorted(distiller.fit(x, y, epochs=1, batch_size=64, verbose=0).history)
['accuracy', 'distillation_loss', 'loss', 'student_loss']
>>> distiller.student is student
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tfedge._keras import keras, tf

from tfedge.checks import check_fraction, check_range
from tfedge.errors import InputError, ModelError
from tfedge.graph import check_graph_model, unwrap

#: Output activations whose values can be used as logits as they are (softmax is shift-invariant).
_LOGIT_ACTIVATIONS = {None, "linear", "log_softmax"}

_EXPOSE_LOGITS = (
    "build the model with a logits layer (e.g. Dense(num_classes) with no activation) followed by "
    "keras.layers.Softmax(), or pass keras.Model(model.input, <the pre-softmax tensor>)"
)


# --------------------------------------------------------------------------------------------
# argument checks


def _check_temperature(value: Any) -> float:
    return check_range(value, "temperature", 0.0, low_open=True, hint="use e.g. 4.0 (1.0 means no softening)")


def _check_alpha(value: Any) -> float:
    return check_fraction(
        value, "alpha", hint="it weights the hard-label loss (1 - alpha weights the teacher's soft labels), e.g. 0.1"
    )


def _shape_str(shape: Any) -> str:
    return str(tuple(shape)) if not isinstance(shape, list) else str([tuple(s) for s in shape])


def _shapes_match(a: Any, b: Any) -> bool:
    """True when two Keras shapes (tuples, or lists of tuples) agree, ``None`` matching anything."""
    if isinstance(a, list) or isinstance(b, list):
        if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
            return False
        return all(_shapes_match(x, y) for x, y in zip(a, b))
    a, b = tuple(a)[1:], tuple(b)[1:]
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _check_model(model: Any, role: str) -> None:
    check_graph_model(model, role, needs="the Distiller needs a Sequential or Functional model to find its logits")
    if len(model.outputs) != 1:
        raise ModelError(
            f"{role} '{model.name}' has {len(model.outputs)} outputs; the Distiller needs one class-score output: "
            "pass keras.Model(model.input, model.outputs[i]) for the classification head"
        )


# --------------------------------------------------------------------------------------------
# finding the logits of a model that may end in a softmax


def _output_node(model: keras.Model) -> tuple[keras.layers.Layer, Any]:
    """The layer producing the model's output, and the node (call) that produced it."""
    layer, node_index, _ = model.outputs[0]._keras_history
    return layer, layer._inbound_nodes[node_index]


def _output_activation(layer: keras.layers.Layer) -> str | None:
    """The lower-case name of the activation ``layer`` applies last, or None when it has none."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    # TF-MOT's QuantizeAwareActivation keeps the layer's own activation in `.activation`.
    activation = getattr(activation, "activation", activation)
    name = getattr(activation, "__name__", None) or type(activation).__name__
    return name.lower()


def _head_kind(model: keras.Model, role: str) -> str:
    """``"logits"``, ``"softmax_layer"`` (a separate Softmax / Activation layer) or ``"dense_softmax"``."""
    layer, _ = _output_node(model)
    inner = unwrap(layer)
    where = f"{role} '{model.name}' ends in {type(layer).__name__} '{layer.name}'"
    if isinstance(inner, keras.Model):
        if _head_kind(inner, f"nested model '{inner.name}'") != "logits":
            raise ModelError(
                f"{where}, a nested model that ends in a softmax, so the Distiller cannot reach the logits: "
                f"{_EXPOSE_LOGITS}"
            )
        return "logits"
    if isinstance(inner, keras.layers.Softmax):
        return "softmax_layer"
    name = _output_activation(inner)
    if name in _LOGIT_ACTIVATIONS:
        return "logits"
    if name == "softmax":
        if isinstance(inner, keras.layers.Activation):
            return "softmax_layer"
        if isinstance(inner, keras.layers.Dense) and inner is layer:
            return "dense_softmax"
        raise ModelError(
            f"{where} with activation='softmax' fused inside a wrapper or a non-Dense layer, so the Distiller "
            f"cannot reach the pre-softmax logits: {_EXPOSE_LOGITS}, then prune / quantize it"
        )
    raise ModelError(
        f"{where} with activation '{name}'; the Distiller needs class logits (no activation) or a softmax "
        "output: make the last layer Dense(num_classes) with no activation (add keras.layers.Softmax() "
        "after it if you need probabilities)"
    )


def _dense_logits(dense: keras.layers.Dense, inputs: tf.Tensor) -> tf.Tensor:
    """What ``dense`` computes before its activation, with its own (shared) kernel and bias."""
    kernel = tf.convert_to_tensor(dense.kernel)
    inputs = tf.cast(inputs, kernel.dtype)
    if inputs.shape.rank == 2:
        logits = tf.matmul(inputs, kernel)
    else:
        logits = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])
    if dense.use_bias:
        logits = tf.nn.bias_add(logits, tf.convert_to_tensor(dense.bias))
    return logits


class _Head:
    """Calls a model and returns ``(logits, output)``, reading the pre-softmax logits when the model
    ends in a softmax. Views share the model's layers and weights; they are built once, here."""

    def __init__(self, model: keras.Model, role: str):
        self.kind = _head_kind(model, role)
        self._model = model
        self._view = None
        self._dense = None
        if self.kind == "logits":
            return
        layer, node = _output_node(model)
        pre = node.input_tensors
        pre = pre[0] if isinstance(pre, (list, tuple)) else pre
        self._view = keras.Model(model.inputs, [pre, model.outputs[0]], name=f"{model.name}_logits_view")
        if self.kind == "dense_softmax":
            self._dense = layer

    def __call__(self, x: Any, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        if self._view is None:
            output = self._model(x, training=training)
            return output, output
        pre, output = self._view(x, training=training)
        logits = _dense_logits(self._dense, pre) if self._dense is not None else pre
        return logits, output


# --------------------------------------------------------------------------------------------
# losses


def _check_student_loss_fn(fn: Any) -> Callable:
    if fn is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(fn, str) or not callable(fn):
        raise InputError(
            f"student_loss_fn must be a loss object or function taking (y_true, logits), got {fn!r}: "
            "e.g. keras.losses.SparseCategoricalCrossentropy(from_logits=True)"
        )
    config = fn.get_config() if isinstance(fn, keras.losses.Loss) else {}
    if config.get("from_logits") is False:
        raise InputError(
            f"student_loss_fn {type(fn).__name__} has from_logits=False, but the Distiller passes it the "
            f"student's logits: create it with from_logits=True"
        )
    return fn


def _check_distillation_loss_fn(fn: Any) -> Callable | None:
    if fn is None:
        return None
    if isinstance(fn, str) or not callable(fn):
        raise InputError(
            f"distillation_loss_fn must be a loss object or function taking (teacher_probs, student_probs), "
            f"got {fn!r}: e.g. keras.losses.KLDivergence()"
        )
    return fn


def _per_example(fn: Callable, y_true: Any, y_pred: tf.Tensor, name: str) -> tf.Tensor:
    """One float32 loss value per example (extra axes averaged, as Keras' reduction does)."""
    # A Keras Loss object's `call` is its unreduced form: the reduction is ours to do globally.
    values = fn.call(y_true, y_pred) if isinstance(fn, keras.losses.Loss) else fn(y_true, y_pred)
    values = tf.cast(values, tf.float32)
    if values.shape.rank == 0:
        raise InputError(
            f"{name} returned a single value for the batch; it must return one loss per example "
            "(a keras.losses.Loss object, or a function without reduction)"
        )
    if values.shape.rank is not None and values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


def _kl_divergence(teacher_logits: tf.Tensor, student_logits: tf.Tensor) -> tf.Tensor:
    """KL(softmax(teacher) || softmax(student)) per example, from logits (exact, no clipping)."""
    t_log = tf.nn.log_softmax(teacher_logits, axis=-1)
    s_log = tf.nn.log_softmax(student_logits, axis=-1)
    return tf.reduce_sum(tf.exp(t_log) * (t_log - s_log), axis=-1)


def _global_batch_size(per_example: tf.Tensor) -> tf.Tensor:
    """Examples in the global batch: this replica's count summed over all replicas (exact when the
    last batch splits unevenly)."""
    count = tf.cast(tf.shape(per_example)[0], tf.float32)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return count


# --------------------------------------------------------------------------------------------
# the model


@keras.utils.register_keras_serializable(package="tfedge")
class Distiller(keras.Model):
    """Train ``student`` on hard labels and on ``teacher``'s temperature-softened predictions.

    ``alpha`` weights the hard-label loss (``student_loss``), ``1 - alpha`` the distillation loss
    (``distillation_loss`` = T² · KL(teacher ‖ student) at temperature ``temperature``). The teacher
    runs with ``training=False`` and is never updated: the trainable weights are the student's.
    Models ending in a softmax (a ``Softmax`` / ``Activation`` layer, or a plain ``Dense`` with
    ``activation="softmax"``) are distilled on their pre-softmax logits; a softmax fused inside a
    pruning / QAT wrapper is refused with a :class:`~tfedge.errors.ModelError` saying how to expose
    logits. ``predict`` and ``call`` return the student's own output; ``evaluate`` and the metrics
    report the student.

    >>> from tfedge import keras
    >>> teacher = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
    >>> d = Distiller(student, teacher)
    >>> d.temperature, d.alpha, [w.name for w in d.trainable_weights] == [w.name for w in student.trainable_weights]
    (4.0, 0.1, True)
    >>> Distiller(student, teacher, alpha=1.5)
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: alpha must be in [0, 1], got 1.5: it weights the hard-label loss ...
    """

    def __init__(
        self,
        student: keras.Model,
        teacher: keras.Model,
        *,
        temperature: float = 4.0,
        alpha: float = 0.1,
        **kwargs: Any,
    ):
        temperature = _check_temperature(temperature)
        alpha = _check_alpha(alpha)
        _check_model(student, "student")
        _check_model(teacher, "teacher")
        if student is teacher:
            raise InputError("student and teacher are the same model object: pass a separate (smaller) student")
        if not _shapes_match(student.input_shape, teacher.input_shape):
            raise InputError(
                f"student input shape {_shape_str(student.input_shape)} differs from the teacher's "
                f"{_shape_str(teacher.input_shape)}: both must take the same samples"
            )
        if not _shapes_match(student.output_shape, teacher.output_shape):
            raise InputError(
                f"student output shape {_shape_str(student.output_shape)} differs from the teacher's "
                f"{_shape_str(teacher.output_shape)}: both must score the same classes"
            )
        student_head, teacher_head = _Head(student, "student"), _Head(teacher, "teacher")
        super().__init__(**kwargs)
        self._student = student
        self._teacher = teacher
        self._student_head = student_head
        self._teacher_head = teacher_head
        self._temperature = temperature
        self._alpha = alpha
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self._distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.student_loss_fn: Callable = _check_student_loss_fn(None)
        self.distillation_loss_fn: Callable | None = None
        self.built = True  # student and teacher are built; the Distiller has no weights of its own

    # -- public attributes -------------------------------------------------------------------

    @property
    def student(self) -> keras.Model:
        """The student, a plain Keras model (pruning / QAT wrappers included) to save or convert."""
        return self._student

    @property
    def teacher(self) -> keras.Model:
        return self._teacher

    @property
    def temperature(self) -> float:
        return self._temperature

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def trainable_weights(self) -> list:
        return list(self._student.trainable_weights) if self.trainable else []

    @property
    def non_trainable_weights(self) -> list:
        trainable = {id(w) for w in self.trainable_weights}
        seen: set[int] = set()
        weights = []
        for w in [*self._student.weights, *self._teacher.weights]:
            if id(w) not in trainable and id(w) not in seen:
                seen.add(id(w))
                weights.append(w)
        return weights

    @property
    def metrics(self) -> list:
        metrics = [self._loss_tracker, self._student_loss_tracker, self._distillation_loss_tracker]
        compiled = getattr(self, "compiled_metrics", None)
        if compiled is not None:
            metrics += compiled.metrics
        return metrics

    # -- Keras API ---------------------------------------------------------------------------

    def compile(
        self,
        optimizer: Any = "rmsprop",
        metrics: Sequence[Any] | None = None,
        student_loss_fn: Callable | None = None,
        distillation_loss_fn: Callable | None = None,
        **kwargs: Any,
    ) -> None:
        """Like ``keras.Model.compile``, with two losses instead of ``loss``.

        ``student_loss_fn(y_true, student_logits)`` defaults to sparse categorical cross-entropy
        on logits (use ``CategoricalCrossentropy(from_logits=True)`` for one-hot labels).
        ``distillation_loss_fn(teacher_probs, student_probs)`` receives the temperature-softened
        probabilities; the default is the exact KL divergence computed from the logits.
        ``metrics`` are computed on the student's output.
        """
        if "loss" in kwargs:
            raise InputError(
                f"Distiller.compile got loss={kwargs['loss']!r}: pass student_loss_fn (hard labels) and, "
                "optionally, distillation_loss_fn instead"
            )
        self.student_loss_fn = _check_student_loss_fn(student_loss_fn)
        self.distillation_loss_fn = _check_distillation_loss_fn(distillation_loss_fn)
        if tf.distribute.has_strategy() or getattr(self, "_distribution_strategy", None) is not None:
            strategy = self.distribute_strategy  # Keras compiles in the strategy the model was built in
            for role, model in (("student", self._student), ("teacher", self._teacher)):
                if not all(strategy.extended.variable_created_in_scope(v) for v in model.variables):
                    raise InputError(
                        f"{role} '{model.name}' was created outside the scope of the {type(strategy).__name__} "
                        f"this Distiller is compiled in: create or load it inside `with strategy.scope():` "
                        f"(to copy a model there: copy = keras.models.clone_model(model); "
                        f"copy.set_weights(model.get_weights()))"
                    )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def call(self, inputs: Any, training: bool | None = None) -> tf.Tensor:
        """The student's output (what ``predict`` returns)."""
        return self._student(inputs, training=training)

    def _distillation_losses(
        self, x: Any, y: Any, sample_weight: Any, training: bool
    ) -> tuple[tf.Tensor, tf.Tensor, dict]:
        teacher_logits, _ = self._teacher_head(x, training=False)
        teacher_logits = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
        student_logits, student_output = self._student_head(x, training=training)
        student_logits = tf.cast(student_logits, tf.float32)

        t = self._temperature
        student_loss = _per_example(self.student_loss_fn, y, student_logits, "student_loss_fn")
        if self.distillation_loss_fn is None:
            kl = _kl_divergence(teacher_logits / t, student_logits / t)
        else:
            kl = _per_example(
                self.distillation_loss_fn,
                tf.nn.softmax(teacher_logits / t, axis=-1),
                tf.nn.softmax(student_logits / t, axis=-1),
                "distillation_loss_fn",
            )
        distillation_loss = (t * t) * kl
        combined = self._alpha * student_loss + (1.0 - self._alpha) * distillation_loss
        if sample_weight is not None:
            weight = tf.reshape(tf.cast(sample_weight, tf.float32), tf.shape(combined))
            student_loss, distillation_loss, combined = (
                v * weight for v in (student_loss, distillation_loss, combined)
            )
        # Sum over this replica's examples / examples in the global batch: summing the replicas'
        # gradients (as the optimizer does under a strategy) then gives the global-batch mean.
        loss = tf.math.divide_no_nan(tf.reduce_sum(combined), _global_batch_size(combined))
        regularization = self._student.losses
        if regularization:
            total_regularization = tf.add_n([tf.cast(r, tf.float32) for r in regularization])
            loss += tf.nn.scale_regularization_loss(total_regularization)
            combined = combined + total_regularization
        per_example = {"loss": combined, "student_loss": student_loss, "distillation_loss": distillation_loss}
        return loss, student_output, per_example

    def _update_metrics(self, y: Any, student_output: tf.Tensor, sample_weight: Any, per_example: dict) -> dict:
        self._loss_tracker.update_state(per_example["loss"])
        self._student_loss_tracker.update_state(per_example["student_loss"])
        self._distillation_loss_tracker.update_state(per_example["distillation_loss"])
        self.compiled_metrics.update_state(y, student_output, sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data: Any) -> dict:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, student_output, per_example = self._distillation_losses(x, y, sample_weight, training=True)
        self.optimizer.minimize(loss, self._student.trainable_variables, tape=tape)
        return self._update_metrics(y, student_output, sample_weight, per_example)

    def test_step(self, data: Any) -> dict:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, student_output, per_example = self._distillation_losses(x, y, sample_weight, training=False)
        return self._update_metrics(y, student_output, sample_weight, per_example)

    # -- serialization -----------------------------------------------------------------------

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self._student),
            "teacher": keras.saving.serialize_keras_object(self._teacher),
            "temperature": self._temperature,
            "alpha": self._alpha,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Distiller:
        """Rebuild from :meth:`get_config`. A pruned or quantization-aware student or teacher needs the
        caller's scope (``tfedge.models.custom_objects()``, which :func:`tfedge.load_model` enters)."""
        config = dict(config)
        student = keras.saving.deserialize_keras_object(config.pop("student"), custom_objects=custom_objects)
        teacher = keras.saving.deserialize_keras_object(config.pop("teacher"), custom_objects=custom_objects)
        return cls(student, teacher, **config)


__all__ = ["Distiller"]
