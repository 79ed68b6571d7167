"""tfedge.distillation: the Distiller's loss, its Keras behaviour, softmax handling, distribution and
its use with pruned and quantization-aware students."""

from __future__ import annotations

from tfedge._keras import tf

import numpy as np
import pytest

import tfedge
from tfedge import keras
from tfedge.distillation import Distiller
from tfedge.errors import InputError, ModelError

from conftest import accuracy, compile_classifier

# --------------------------------------------------------------------------------------------
# helpers


def build_mlp(hidden: int = 16, name: str = "mlp") -> keras.Model:
    """The issue's student: Flatten -> Dense(16, relu) -> Dense(10) logits."""
    return keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ],
        name=name,
    )


def copy_model(model: keras.Model) -> keras.Model:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def fixed_logits_model(logits: np.ndarray, head: str = "logits", name: str = "fixed") -> keras.Model:
    """A model whose output on ``np.eye(len(logits))`` is ``logits`` (row i for sample i), with the
    softmax, if any, placed as ``head`` says."""
    n, classes = logits.shape
    layers = [keras.layers.Input((n,))]
    if head == "dense_softmax":
        layers.append(keras.layers.Dense(classes, use_bias=False, activation="softmax", name="dense"))
    else:
        layers.append(keras.layers.Dense(classes, use_bias=False, name="dense"))
    if head == "softmax_layer":
        layers.append(keras.layers.Softmax(name="softmax"))
    elif head == "activation_layer":
        layers.append(keras.layers.Activation("softmax", name="probs"))
    model = keras.Sequential(layers, name=name)
    model.get_layer("dense").set_weights([logits.astype(np.float32)])
    return model


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def hand_losses(student, teacher, y, temperature, alpha, weights=None) -> dict:
    """The issue's formula in float64 numpy, reduced like Keras (sum of weighted losses / batch size)."""
    student, teacher = student.astype(np.float64), teacher.astype(np.float64)
    ce = -log_softmax(student)[np.arange(len(y)), y]
    log_t, log_s = log_softmax(teacher / temperature), log_softmax(student / temperature)
    kl = np.sum(np.exp(log_t) * (log_t - log_s), axis=-1)
    dl = temperature**2 * kl
    total = alpha * ce + (1 - alpha) * dl
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    return {"loss": np.mean(w * total), "student_loss": np.mean(w * ce), "distillation_loss": np.mean(w * dl)}


RNG = np.random.default_rng(0)
STUDENT_LOGITS = RNG.normal(0, 3, (6, 4)).astype(np.float32)
TEACHER_LOGITS = RNG.normal(0, 3, (6, 4)).astype(np.float32)
LABELS = np.array([0, 1, 2, 3, 1, 2])
EYE = np.eye(6, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# the loss, by hand


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_loss_matches_hand_computation(alpha, temperature):
    student = fixed_logits_model(STUDENT_LOGITS, name="student")
    teacher = fixed_logits_model(TEACHER_LOGITS, name="teacher")
    distiller = Distiller(student, teacher, temperature=temperature, alpha=alpha)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    expected = hand_losses(STUDENT_LOGITS, TEACHER_LOGITS, LABELS, temperature, alpha)

    evaluated = distiller.evaluate(EYE, LABELS, batch_size=6, verbose=0, return_dict=True)
    trained = distiller.train_on_batch(EYE, LABELS, return_dict=True)  # loss of the forward pass
    for logs in (evaluated, trained):
        assert set(logs) == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(logs[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_sample_weights_weight_each_example_over_the_batch_size():
    weights = np.array([0.0, 1.0, 2.0, 0.5, 1.0, 3.0], np.float32)
    distiller = Distiller(
        fixed_logits_model(STUDENT_LOGITS), fixed_logits_model(TEACHER_LOGITS), temperature=2.0, alpha=0.3
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = distiller.evaluate(EYE, LABELS, sample_weight=weights, batch_size=6, verbose=0, return_dict=True)
    expected = hand_losses(STUDENT_LOGITS, TEACHER_LOGITS, LABELS, 2.0, 0.3, weights)
    for key, value in expected.items():
        np.testing.assert_allclose(logs[key], value, rtol=1e-5, err_msg=key)


def test_custom_loss_functions_get_logits_and_softened_probabilities():
    one_hot = np.eye(4, dtype=np.float32)[LABELS]
    distiller = Distiller(
        fixed_logits_model(STUDENT_LOGITS), fixed_logits_model(TEACHER_LOGITS), temperature=4.0, alpha=0.5
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0),
        student_loss_fn=keras.losses.CategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
    )
    logs = distiller.evaluate(EYE, one_hot, batch_size=6, verbose=0, return_dict=True)
    expected = hand_losses(STUDENT_LOGITS, TEACHER_LOGITS, LABELS, 4.0, 0.5)
    for key, value in expected.items():  # Keras' KLDivergence clips probabilities at 1e-7
        np.testing.assert_allclose(logs[key], value, rtol=1e-4, err_msg=key)


# --------------------------------------------------------------------------------------------
# models ending in a softmax


@pytest.mark.parametrize(
    "student_head, teacher_head",
    [("softmax_layer", "dense_softmax"), ("dense_softmax", "activation_layer")],
)
def test_softmax_models_are_distilled_on_their_pre_softmax_logits(student_head, teacher_head):
    student = fixed_logits_model(STUDENT_LOGITS, student_head, name="student")
    teacher = fixed_logits_model(TEACHER_LOGITS, teacher_head, name="teacher")
    distiller = Distiller(student, teacher, temperature=4.0, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.5), metrics=["accuracy"])
    logs = distiller.evaluate(EYE, LABELS, batch_size=6, verbose=0, return_dict=True)
    expected = hand_losses(STUDENT_LOGITS, TEACHER_LOGITS, LABELS, 4.0, 0.5)
    for key, value in expected.items():
        np.testing.assert_allclose(logs[key], value, rtol=1e-5, err_msg=key)

    # predict is the student's own output: probabilities here
    probs = distiller.predict(EYE, verbose=0)
    np.testing.assert_allclose(probs, np.exp(log_softmax(STUDENT_LOGITS)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(logs["accuracy"], accuracy(STUDENT_LOGITS, LABELS))

    # gradients reach the student's kernel through the logits view; the teacher does not move
    teacher_before = teacher.get_weights()
    distiller.train_on_batch(EYE, LABELS)
    assert np.abs(student.get_layer("dense").get_weights()[0] - STUDENT_LOGITS).max() > 1e-3
    np.testing.assert_array_equal(teacher.get_weights()[0], teacher_before[0])


def test_softmax_fused_inside_a_pruning_or_qat_wrapper_is_refused_with_the_fix():
    model = fixed_logits_model(STUDENT_LOGITS, "dense_softmax")
    teacher = fixed_logits_model(TEACHER_LOGITS)
    for wrapped in (tfedge.prune(model, 0.5), tfedge.quantize_aware(model)):
        with pytest.raises(
            ModelError,
            match=r"student 'fixed\w*' ends in \w+ .*activation='softmax' fused.*"
            r"Dense\(num_classes\) with no activation.*keras.layers.Softmax\(\)",
        ):
            Distiller(wrapped, teacher)


def test_non_logit_activation_is_refused():
    sigmoid = keras.Sequential([keras.layers.Input((6,)), keras.layers.Dense(4, activation="sigmoid", name="d")])
    with pytest.raises(ModelError, match="activation 'sigmoid'; the Distiller needs class logits"):
        Distiller(fixed_logits_model(STUDENT_LOGITS), sigmoid)


# --------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0}, r"temperature must be in \(0, inf\), got 0: use e.g. 4.0"),
        ({"temperature": -2.0}, r"temperature must be in \(0, inf\), got -2.0"),
        ({"temperature": float("inf")}, "temperature must be a finite number, got inf"),
        ({"temperature": "4"}, "temperature must be a number, got '4'"),
        ({"alpha": -0.1}, r"alpha must be in \[0, 1\], got -0.1"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
        ({"alpha": float("nan")}, "alpha must be a finite number, got nan"),
        ({"alpha": True}, "alpha must be a number, got True"),
    ],
)
def test_temperature_and_alpha_are_validated(kwargs, message):
    with pytest.raises(InputError, match=message):
        Distiller(fixed_logits_model(STUDENT_LOGITS), fixed_logits_model(TEACHER_LOGITS), **kwargs)


def test_mismatched_models_are_refused_at_construction():
    student = fixed_logits_model(STUDENT_LOGITS)
    wider = keras.Sequential([keras.layers.Input((6,)), keras.layers.Dense(5)])
    with pytest.raises(InputError, match=r"student output shape \(None, 4\) differs from the teacher's \(None, 5\)"):
        Distiller(student, wider)
    other_input = keras.Sequential([keras.layers.Input((7,)), keras.layers.Dense(4)])
    with pytest.raises(InputError, match=r"student input shape \(None, 6\) differs from the teacher's \(None, 7\)"):
        Distiller(student, other_input)
    with pytest.raises(InputError, match="same model object"):
        Distiller(student, student)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ModelError, match="teacher is a subclassed model"):
        Distiller(student, Subclassed())
    unbuilt = keras.Sequential([keras.layers.Dense(4)])
    with pytest.raises(InputError, match="teacher 'sequential.*' is not built"):
        Distiller(student, unbuilt)


def test_compile_refuses_a_plain_loss_and_probability_losses():
    distiller = Distiller(fixed_logits_model(STUDENT_LOGITS), fixed_logits_model(TEACHER_LOGITS))
    with pytest.raises(InputError, match="got loss='mse': pass student_loss_fn"):
        distiller.compile(optimizer="sgd", loss="mse")
    with pytest.raises(InputError, match="from_logits=False.*create it with from_logits=True"):
        distiller.compile(optimizer="sgd", student_loss_fn=keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(InputError, match="student_loss_fn must be a loss object"):
        distiller.compile(optimizer="sgd", student_loss_fn="sparse_categorical_crossentropy")


# --------------------------------------------------------------------------------------------
# training on digits


def test_alpha_one_matches_plain_cross_entropy_step_for_step(digits, small_cnn):
    keras.utils.set_random_seed(1)
    init = build_mlp()
    x, y = digits.x_train[:640], digits.y_train[:640]

    def record(model, store):
        return keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: store.append(model.get_weights()))

    plain, plain_steps = compile_classifier(copy_model(init), lr=1e-2), []
    plain.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0, callbacks=[record(plain, plain_steps)])

    student, distilled_steps = copy_model(init), []
    distiller = Distiller(student, small_cnn, temperature=4.0, alpha=1.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    distiller.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0, callbacks=[record(student, distilled_steps)])

    assert len(plain_steps) == len(distilled_steps) == 20
    assert np.abs(plain_steps[-1][0] - init.get_weights()[0]).max() > 1e-2  # it did train
    for step, (a, b) in enumerate(zip(plain_steps, distilled_steps)):
        for wa, wb in zip(a, b):
            np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


@pytest.fixture(scope="module")
def distilled_mlp(digits, small_cnn):
    """The 16-unit MLP distilled from the trained CNN, with the teacher's weights before training."""
    keras.utils.set_random_seed(0)
    teacher_before = small_cnn.get_weights()
    student = build_mlp()
    distiller = Distiller(student, small_cnn, temperature=4.0, alpha=0.1)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = distiller.fit(
        digits.x_train,
        digits.y_train,
        epochs=25,
        batch_size=64,
        verbose=0,
        validation_data=(digits.x_test, digits.y_test),
    )
    return distiller, history, teacher_before


def test_distilled_16_unit_mlp_reaches_93_percent(distilled_mlp, digits):
    distiller, _, _ = distilled_mlp
    student_accuracy = accuracy(distiller.student.predict(digits.x_test, verbose=0), digits.y_test)
    assert student_accuracy >= 0.93
    logs = distiller.evaluate(digits.x_test, digits.y_test, verbose=0, return_dict=True)
    assert logs["accuracy"] == pytest.approx(student_accuracy)  # evaluate reports the student
    np.testing.assert_allclose(
        distiller.predict(digits.x_test[:32], verbose=0), distiller.student.predict(digits.x_test[:32], verbose=0)
    )


def test_history_holds_both_losses_and_student_metrics(distilled_mlp):
    distiller, history, _ = distilled_mlp
    h = history.history
    assert set(h) == {
        "loss",
        "student_loss",
        "distillation_loss",
        "accuracy",
        "val_loss",
        "val_student_loss",
        "val_distillation_loss",
        "val_accuracy",
    }
    assert distiller.metrics_names == ["loss", "student_loss", "distillation_loss", "accuracy"]
    for prefix in ("", "val_"):
        combined = 0.1 * np.array(h[prefix + "student_loss"]) + 0.9 * np.array(h[prefix + "distillation_loss"])
        np.testing.assert_allclose(h[prefix + "loss"], combined, rtol=1e-4)
    assert h["student_loss"][-1] < h["student_loss"][0] / 3
    assert h["distillation_loss"][-1] < h["distillation_loss"][0] / 3


def test_teacher_is_frozen_and_only_the_student_trains(distilled_mlp, small_cnn):
    distiller, _, teacher_before = distilled_mlp
    for before, after in zip(teacher_before, small_cnn.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert [id(w) for w in distiller.trainable_weights] == [id(w) for w in distiller.student.trainable_weights]
    teacher_ids = {id(w) for w in small_cnn.weights}
    assert teacher_ids <= {id(w) for w in distiller.non_trainable_weights}
    assert distiller.teacher is small_cnn and small_cnn.trainable  # the user's teacher object is not changed


def test_distiller_round_trips_through_config_and_a_keras_file(distilled_mlp, digits, tmp_path):
    distiller, _, _ = distilled_mlp
    config = distiller.get_config()
    rebuilt = Distiller.from_config(config)
    assert (rebuilt.temperature, rebuilt.alpha) == (4.0, 0.1)
    again = rebuilt.get_config()
    assert again["student"] == config["student"]
    assert again["teacher"]["config"]["layers"] == config["teacher"]["config"]["layers"]

    path = tmp_path / "distiller.keras"
    tfedge.save_model(distiller, path)
    loaded = tfedge.load_model(path)
    assert isinstance(loaded, Distiller) and (loaded.temperature, loaded.alpha) == (4.0, 0.1)
    np.testing.assert_allclose(
        loaded.predict(digits.x_test[:64], verbose=0),
        distiller.predict(digits.x_test[:64], verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        loaded.teacher.predict(digits.x_test[:64], verbose=0),
        distiller.teacher.predict(digits.x_test[:64], verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


# --------------------------------------------------------------------------------------------
# MirroredStrategy


def test_mirrored_strategy_reduces_against_the_global_batch(digits, small_cnn):
    keras.utils.set_random_seed(2)
    init = build_mlp()

    def make() -> Distiller:
        distiller = Distiller(copy_model(init), copy_model(small_cnn), temperature=4.0, alpha=0.3)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), metrics=["accuracy"])
        return distiller

    # 63 examples split 32 / 31 between the replicas: a per-replica mean, or a per-replica batch
    # size times the replica count, would weight them wrongly.
    x, y = digits.x_train[:63], digits.y_train[:63]
    single = make()
    single_logs = single.train_on_batch(x, y, return_dict=True)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = make()
    assert mirrored.distribute_strategy.num_replicas_in_sync == 2
    mirrored_logs = mirrored.train_on_batch(x, y, return_dict=True)

    for key in single_logs:
        np.testing.assert_allclose(mirrored_logs[key], single_logs[key], rtol=1e-5, err_msg=key)
    moved = np.abs(single.student.get_weights()[0] - init.get_weights()[0]).max()
    assert moved > 1e-2
    for a, b in zip(single.student.get_weights(), mirrored.student.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)

    history = mirrored.fit(digits.x_train, digits.y_train, epochs=3, batch_size=128, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.5

    with strategy.scope():
        outside_teacher = Distiller(copy_model(init), small_cnn)  # small_cnn was built outside the scope
    with pytest.raises(InputError, match="teacher 'small_cnn' was created outside the scope of the MirroredStrategy"):
        outside_teacher.compile(optimizer="sgd")


# --------------------------------------------------------------------------------------------
# pruned and quantization-aware students


def test_pruned_then_quantization_aware_student_reaches_sparsity_and_converts_to_int8(digits, small_cnn):
    keras.utils.set_random_seed(3)
    target = 0.75
    pruned = tfedge.prune(build_mlp(), target)
    distiller = Distiller(pruned, small_cnn, temperature=4.0, alpha=0.1)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    history = distiller.fit(
        digits.x_train,
        digits.y_train,
        epochs=10,
        batch_size=64,
        verbose=0,
        callbacks=[tfedge.PruningCallback(strict=True)],
    )
    assert history.history["sparsity"][-1] >= target - 0.01  # the callback found the student's wrappers
    report = tfedge.sparsity_report(distiller.student)
    assert set(report["layers"]) == {"hidden", "logits"}
    assert all(layer["sparsity"] >= target - 0.01 for layer in report["layers"].values())

    qat = tfedge.quantize_aware(tfedge.strip(distiller.student), preserve_sparsity=True)
    distiller = Distiller(qat, small_cnn, temperature=4.0, alpha=0.1)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    distiller.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    student = distiller.student
    assert student is qat
    kernels = [w.numpy() for w in student.weights if w.name.endswith("/kernel:0")]
    assert len(kernels) == 2 and all(np.mean(k == 0) >= target - 0.01 for k in kernels)
    keras_accuracy = accuracy(student.predict(digits.x_test, verbose=0), digits.y_test)
    assert keras_accuracy >= 0.85

    tfl = tfedge.convert(student, representative_data=digits.x_train, quantization="int8")
    info = tfedge.inspect(tfl)
    assert info.fully_int8
    assert len(info.weight_sparsity) == 2 and min(info.weight_sparsity.values()) >= target - 0.01  # zeros kept
    result = tfedge.validate(tfl, digits.x_test, digits.y_test, reference=student, runtimes=("litert",))
    assert result.accuracy["litert"] >= keras_accuracy - 0.03


# --------------------------------------------------------------------------------------------
# fast: config round-trips (no training)


def test_distiller_config_round_trips_without_training():
    student, teacher = build_mlp(8, name="student"), build_mlp(16, name="teacher")
    distiller = Distiller(student, teacher, temperature=2.5, alpha=0.3)
    rebuilt = Distiller.from_config(distiller.get_config())
    assert (rebuilt.temperature, rebuilt.alpha, rebuilt.name) == (2.5, 0.3, distiller.name)
    assert rebuilt.get_config()["student"] == distiller.get_config()["student"]
    assert [w.shape for w in rebuilt.student.weights] == [w.shape for w in student.weights]


def test_distiller_from_config_uses_the_callers_scope_for_a_pruned_student():
    from tfedge.models import custom_objects
    from tfedge.pruning import AdaptiveSchedule

    student = tfedge.prune(build_mlp(8, name="student"), 0.5, epochs=1, steps_per_epoch=10)
    config = Distiller(student, build_mlp(16, name="teacher")).get_config()
    with pytest.raises(TypeError, match="PruneLowMagnitude"):  # TF-MOT's wrapper is unknown outside its scope
        Distiller.from_config(config)
    with custom_objects():
        rebuilt = Distiller.from_config(config)
    assert isinstance(rebuilt.student.layers[1].pruning_schedule, AdaptiveSchedule)
