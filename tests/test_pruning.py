"""tfedge.pruning on the real digits data: schedules sized to the run, the callback, strip, report, 2:4,
save / load / resume, MirroredStrategy, nesting in a distillation model, and every error case."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

from tfedge._keras import tf

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
from tensorflow.core.util import event_pb2

import tfedge
from tfedge import keras
from tfedge.errors import CheckFailed, InputError, ModelError
from tfedge.pruning import AdaptiveSchedule, PruneLowMagnitude, PruningWarning, pruned_layers

from conftest import accuracy, build_small_cnn, compile_classifier

L = keras.layers
BATCH = 64
REPO = Path(__file__).resolve().parents[1]


def steps_per_epoch(data, batch=BATCH) -> int:
    return math.ceil(len(data.x_train) / batch)


def fit(model, data, epochs, callback=None, batch=BATCH, **kwargs):
    callbacks = [tfedge.PruningCallback() if callback is None else callback]
    return model.fit(
        data.x_train, data.y_train, epochs=epochs, batch_size=batch, verbose=0, callbacks=callbacks, **kwargs
    )


def kernels(model) -> dict[str, np.ndarray]:
    return {layer.name: layer.get_weights()[0] for layer in model.layers if hasattr(layer, "kernel")}


def build_wide_cnn() -> keras.Model:
    """Two convolutions and a Dense head (~10k weights): room for 80 % sparsity on 8x8 digits."""
    return keras.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(16, 3, activation="relu", name="conv1"),
            L.Conv2D(32, 3, activation="relu", name="conv2"),
            L.Flatten(name="flatten"),
            L.Dense(10, name="logits"),
        ],
        name="wide_cnn",
    )


@pytest.fixture(scope="module")
def dense_cnn(digits):
    keras.utils.set_random_seed(0)
    model = compile_classifier(build_wide_cnn())
    model.fit(digits.x_train, digits.y_train, epochs=8, batch_size=BATCH, verbose=0)
    return model


@pytest.fixture(scope="module")
def pruned_run(digits, dense_cnn):
    """The done-when run: prune to 0.8 with no step counts given, fit 3 epochs; the callback sizes it."""
    keras.utils.set_random_seed(0)
    before = [w.copy() for w in dense_cnn.get_weights()]
    pruned = compile_classifier(tfedge.prune(dense_cnn, 0.8), lr=3e-3)
    history = fit(pruned, digits, 3, tfedge.PruningCallback(strict=True))
    return pruned, history, before


# ------------------------------------------------------------------------------------------------
# the done-when run


def test_three_epoch_run_reaches_080_on_every_layer_within_2_points_of_dense(digits, dense_cnn, pruned_run):
    pruned, history, _ = pruned_run
    stripped = tfedge.strip(pruned)
    report = tfedge.sparsity_report(stripped)
    assert set(report["layers"]) == {"conv1", "conv2", "logits"}
    for name, info in report["layers"].items():
        assert abs(info["sparsity"] - 0.80) <= 0.01, (name, info)
        assert info["sparsity"] == pytest.approx(1 - np.count_nonzero(kernels(stripped)[name]) / info["weights"])
    dense_acc = accuracy(dense_cnn.predict(digits.x_test, verbose=0), digits.y_test)
    pruned_acc = accuracy(stripped.predict(digits.x_test, verbose=0), digits.y_test)
    assert dense_acc > 0.9
    assert pruned_acc >= dense_acc - 0.02, (dense_acc, pruned_acc)
    # History holds the overall sparsity per epoch, rising to the target
    assert len(history.history["sparsity"]) == 3
    assert history.history["sparsity"][0] < history.history["sparsity"][-1]
    assert abs(history.history["sparsity"][-1] - 0.80) <= 0.01
    # the schedule was sized at fit time to this run (3 x 22 steps), ending at end=0.7 of it
    sched = pruned_layers(pruned)[0][1].pruning_schedule
    total = 3 * steps_per_epoch(digits)
    assert sched.begin_step == 1 and sched.end_step == math.ceil(0.7 * total)
    assert int(pruned_layers(pruned)[0][1].pruning_step.numpy()) == total


def test_prune_leaves_the_input_model_untouched(dense_cnn, pruned_run):
    _, _, before = pruned_run
    for old, now in zip(before, dense_cnn.get_weights()):
        np.testing.assert_array_equal(old, now)
    assert all(not isinstance(layer, PruneLowMagnitude) for layer in dense_cnn.layers)


def test_strip_predicts_exactly_like_the_wrapped_model_with_plain_layers(digits, pruned_run):
    pruned, _, _ = pruned_run
    stripped = tfedge.strip(pruned)
    assert [type(layer).__name__ for layer in stripped.layers] == ["Conv2D", "Conv2D", "Flatten", "Dense"]
    assert not pruned_layers(stripped)
    np.testing.assert_allclose(
        stripped.predict(digits.x_test, verbose=0), pruned.predict(digits.x_test, verbose=0), rtol=0, atol=1e-6
    )
    # the zeros are where the masks are, biases untouched
    for name, wrapper in pruned_layers(pruned):
        mask = wrapper.pruning_vars[0][1].numpy()
        kernel = kernels(stripped)[name]
        assert np.all(kernel[mask == 0] == 0)
        assert np.count_nonzero(stripped.get_layer(name).bias.numpy()) == stripped.get_layer(name).bias.shape[0]


def test_sparsity_report_is_a_plain_dict_that_prints_as_a_table(pruned_run):
    pruned, _, _ = pruned_run
    wrapped, stripped = tfedge.sparsity_report(pruned), tfedge.sparsity_report(tfedge.strip(pruned))
    assert isinstance(wrapped, dict)
    assert json.loads(json.dumps(wrapped)) == wrapped
    for name in ("conv1", "conv2", "logits"):
        assert wrapped["layers"][name]["sparsity"] == stripped["layers"][name]["sparsity"]
        assert wrapped["layers"][name]["target"] == 0.8 and stripped["layers"][name]["target"] is None
    assert wrapped["overall"] == pytest.approx(wrapped["zeros"] / wrapped["weights"])
    assert wrapped["weights"] == 16 * 9 + 32 * 16 * 9 + 4 * 4 * 32 * 10
    table = str(stripped)
    assert table == stripped.format_table()
    assert table.splitlines()[0].split() == ["layer", "class", "weights", "zeros", "sparsity", "target"]
    assert "conv2" in table and f"{stripped['overall']:.3f}" in table.splitlines()[-1]


# ------------------------------------------------------------------------------------------------
# the measured trap, and short runs


def test_raw_tfmot_default_schedule_trap_is_caught_by_the_callback(digits, small_cnn):
    """ConstantSparsity(0.5, 0) prunes every 100 steps: a 22-step run stays dense, and the callback says so."""
    model = keras.models.clone_model(small_cnn)
    model.set_weights(small_cnn.get_weights())
    raw = compile_classifier(
        tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    )
    with pytest.warns(PruningWarning, match=r"below target 0\.50: conv \(0\.00\), logits \(0\.00\).*every 100 steps"):
        fit(raw, digits, 1)
    assert tfedge.sparsity_report(tfmot.sparsity.keras.strip_pruning(raw))["overall"] == 0.0
    with pytest.raises(CheckFailed, match="below target 0.50"):
        fit(raw, digits, 1, tfedge.PruningCallback(strict=True))


@pytest.mark.parametrize("schedule", ["polynomial", "constant"])
def test_a_5_step_run_reaches_the_target_and_shows_sparsity_in_the_progress_bar(digits, small_cnn, schedule, capsys):
    pruned = compile_classifier(tfedge.prune(small_cnn, 0.5, schedule=schedule, end=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PruningWarning)
        history = pruned.fit(
            digits.x_train[: 5 * BATCH],
            digits.y_train[: 5 * BATCH],
            epochs=1,
            batch_size=BATCH,
            verbose=2,
            callbacks=[tfedge.PruningCallback(strict=True)],
        )
    assert "sparsity: 0.5" in capsys.readouterr().out
    assert history.history["sparsity"][0] == pytest.approx(0.5, abs=0.01)
    for info in tfedge.sparsity_report(tfedge.strip(pruned))["layers"].values():
        assert info["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_schedule_sizes_itself_to_any_run_length():
    for total in (1, 2, 7, 66, 1000, 100_000):
        for begin, end in ((0.0, 0.7), (0.2, 0.5), (0.0, 1.0), (0.5, 0.5)):
            s = AdaptiveSchedule(0.8, begin=begin, end=end)
            assert not s.configured
            s.configure(total)
            assert 1 <= s.begin_step <= s.end_step <= total
            assert s.frequency <= 100
            assert bool(s(s.end_step)[0]) and float(s(s.end_step)[1]) == pytest.approx(0.8)
            assert bool(s(s.begin_step)[0])
            assert not bool(s(s.end_step + 1)[0])
    unsized = AdaptiveSchedule(0.8)
    assert not bool(unsized(1)[0])  # never prunes before it is sized
    exact = AdaptiveSchedule(0.8, end=0.7)
    exact.configure(10)  # 0.7 * 10 is 7.000000000000001 in floating point
    assert (exact.begin_step, exact.end_step) == (1, 7)
    exact.configure(10, start_step=30)  # sized after a resumed model's step
    assert (exact.begin_step, exact.end_step) == (31, 37)


# ------------------------------------------------------------------------------------------------
# save / load / resume


def test_saved_model_loads_and_resumes_at_its_pruning_step(digits, small_cnn, tmp_path):
    keras.utils.set_random_seed(0)
    pruned = compile_classifier(tfedge.prune(small_cnn, 0.8, epochs=3))
    with pytest.warns(PruningWarning, match=r"stopped at pruning step 22, before the schedule ends at step 47"):
        fit(pruned, digits, 1)
    expected = pruned.predict(digits.x_test, verbose=0)
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"pruned{suffix}"
        tfedge.save_model(pruned, path)
        loaded = tfedge.load_model(path, trust=suffix == ".h5")
        layers = pruned_layers(loaded)
        assert [name for name, _ in layers] == ["conv", "logits"], suffix
        assert [int(w.pruning_step.numpy()) for _, w in layers] == [22, 22], suffix
        assert isinstance(layers[0][1].pruning_schedule, AdaptiveSchedule), suffix
        assert layers[0][1].pruning_schedule.end_step == 47, suffix
        np.testing.assert_allclose(loaded.predict(digits.x_test, verbose=0), expected, atol=1e-6)
        # two more epochs complete the 3-epoch schedule; a restart at step 0 would stop short of step 47
        history = fit(compile_classifier(loaded), digits, 2, tfedge.PruningCallback(strict=True))
        assert [int(w.pruning_step.numpy()) for _, w in layers] == [66, 66], suffix
        assert abs(history.history["sparsity"][-1] - 0.8) <= 0.01, suffix


def test_a_pruned_model_loads_in_a_fresh_process(small_cnn, tmp_path):
    path = tmp_path / "pruned.keras"
    tfedge.save_model(tfedge.prune(small_cnn, 0.5), path)
    code = f"import tfedge; m = tfedge.load_model(r'{path}'); print(type(m.layers[0].pruning_schedule).__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "AdaptiveSchedule"


# ------------------------------------------------------------------------------------------------
# distribution, nesting, TensorBoard


def test_prune_and_fit_under_mirrored_strategy_reach_the_target(digits):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(0)
    with strategy.scope():
        pruned = compile_classifier(tfedge.prune(build_small_cnn(), 0.7))
        history = fit(pruned, digits, 2, tfedge.PruningCallback(strict=True), batch=128)
    assert isinstance(pruned_layers(pruned)[0][1].pruning_step, tf.distribute.DistributedValues)
    assert abs(history.history["sparsity"][-1] - 0.7) <= 0.01
    for info in tfedge.sparsity_report(tfedge.strip(pruned))["layers"].values():
        assert abs(info["sparsity"] - 0.7) <= 0.01


class _Distiller(keras.Model):
    """A minimal distillation model: the pruned student is an attribute, trained against the teacher."""

    def __init__(self, student, teacher):
        super().__init__()
        self.student, self.teacher = student, teacher

    def call(self, x, training=False):
        return self.student(x, training=training)

    def train_step(self, data):
        x, y = data
        soft = tf.nn.softmax(self.teacher(x, training=False) / 4.0)
        with tf.GradientTape() as tape:
            logits = self.student(x, training=True)
            hard = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            loss = 0.1 * tf.reduce_mean(hard) + 0.9 * tf.reduce_mean(
                keras.losses.kl_divergence(soft, tf.nn.softmax(logits / 4.0))
            )
        grads = tape.gradient(loss, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
        return {"loss": loss}


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    scalars: dict[str, list] = {}
    for path in sorted(Path(log_dir).rglob("events.out.tfevents*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return scalars


def test_callback_finds_a_student_nested_in_a_distillation_model_and_logs_tensorboard(digits, small_cnn, tmp_path):
    keras.utils.set_random_seed(0)
    student = tfedge.prune(build_small_cnn(), 0.6)
    distiller = _Distiller(student, small_cnn)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3))
    teacher_before = [w.copy() for w in small_cnn.get_weights()]
    history = fit(distiller, digits, 2, tfedge.PruningCallback(log_dir=tmp_path / "tb", strict=True))
    assert abs(history.history["sparsity"][-1] - 0.6) <= 0.01
    for old, now in zip(teacher_before, small_cnn.get_weights()):
        np.testing.assert_array_equal(old, now)
    with pytest.raises(
        ModelError,
        match=r"subclassed model \(_Distiller\) holding pruned layers"
        r".*tfedge.strip\(distiller.student\)",
    ):
        tfedge.strip(distiller)
    report = tfedge.sparsity_report(distiller)  # student and teacher share the name "small_cnn"
    assert report["layers"]["small_cnn/conv"]["target"] == 0.6
    assert report["layers"]["small_cnn_2/conv"]["target"] is None
    scalars = read_scalars(tmp_path / "tb")
    assert set(scalars) == {"sparsity/small_cnn/conv", "sparsity/small_cnn/logits", "sparsity/overall"}
    steps = [step for step, _ in scalars["sparsity/overall"]]
    assert steps == [steps_per_epoch(digits), 2 * steps_per_epoch(digits)]
    assert scalars["sparsity/overall"][-1][1] == pytest.approx(history.history["sparsity"][-1], abs=1e-6)
    assert scalars["sparsity/small_cnn/logits"][-1][1] == pytest.approx(0.6, abs=0.01)


# ------------------------------------------------------------------------------------------------
# selection, structured sparsity


def test_layers_and_skip_select_by_name_or_class_and_never_prune_biases_or_batchnorm(digits):
    inner = keras.Sequential(
        [L.Dense(32, activation="relu", input_shape=(36,), name="hidden"), L.BatchNormalization(name="bn")],
        name="block",
    )
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = inner(L.Flatten(name="flatten")(x))
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))

    def wrapped(m):
        return sorted(name for name, _ in pruned_layers(m))

    assert wrapped(tfedge.prune(model, 0.5)) == ["block/hidden", "conv", "logits"]
    assert wrapped(tfedge.prune(model, 0.5, skip=[L.Conv2D])) == ["block/hidden", "logits"]
    assert wrapped(tfedge.prune(model, 0.5, layers=["logits", "hidden"])) == ["block/hidden", "logits"]
    assert wrapped(tfedge.prune(model, 0.5, layers=L.Dense, skip="hidden")) == ["logits"]

    pruned = compile_classifier(tfedge.prune(model, 0.5))
    np.testing.assert_allclose(
        pruned.predict(digits.x_test, verbose=0), model.predict(digits.x_test, verbose=0), atol=1e-6
    )
    for _, wrapper in pruned_layers(pruned):  # only kernels get masks
        assert [w.name.split("/")[-1] for w, _, _ in wrapper.pruning_vars] == ["kernel:0"]
    fit(pruned, digits, 1, tfedge.PruningCallback(strict=True))
    stripped = tfedge.strip(pruned)
    np.testing.assert_allclose(
        stripped.predict(digits.x_test, verbose=0), pruned.predict(digits.x_test, verbose=0), atol=1e-6
    )
    block = stripped.get_layer("block")
    for name, wrapper in pruned_layers(pruned):
        layer = block.get_layer("hidden") if name == "block/hidden" else stripped.get_layer(name)
        kernel, bias = layer.get_weights()
        assert abs(1 - np.count_nonzero(kernel) / kernel.size - 0.5) <= 0.01
        np.testing.assert_array_equal(bias, wrapper.layer.bias.numpy())  # biases are never masked
    assert isinstance(pruned.get_layer("block").get_layer("bn"), L.BatchNormalization)
    for old, new in zip(pruned.get_layer("block").get_layer("bn").get_weights(), block.get_layer("bn").get_weights()):
        np.testing.assert_array_equal(old, new)


def blocks_of(kernel: np.ndarray, n: int) -> np.ndarray:
    """Blocks of n consecutive weights along the input channels (TFLite's layout for 2:4)."""
    rows = kernel.T if kernel.ndim == 2 else np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])
    assert rows.shape[1] % n == 0
    return rows.reshape(rows.shape[0], -1, n)


def test_m_by_n_2_4_holds_on_every_4_block_after_strip(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(8, 3, activation="relu", name="stem"),
            L.Conv2D(16, 3, activation="relu", name="conv"),
            L.Flatten(name="flatten"),
            L.Dense(10, name="logits"),
        ]
    )
    pruned = compile_classifier(tfedge.prune(model, 0.5, m_by_n=(2, 4), skip="stem"))
    fit(pruned, digits, 1, tfedge.PruningCallback(strict=True))
    stripped = tfedge.strip(pruned)
    for name in ("conv", "logits"):
        blocks = blocks_of(kernels(stripped)[name], 4)
        zeros = np.sum(blocks == 0, axis=-1)
        assert blocks.shape[1] > 0 and np.all(zeros >= 2), name
    assert np.count_nonzero(kernels(stripped)["stem"] == 0) == 0
    with pytest.raises(InputError, match=r"m_by_n=\(2, 4\).*pass target_sparsity=0.5, got 0.8"):
        tfedge.prune(model, 0.8, m_by_n=(2, 4))


# ------------------------------------------------------------------------------------------------
# DepthwiseConv2D (TF-MOT's registry leaves it dense; tfedge prunes its depthwise kernel)


@pytest.fixture(scope="module")
def depthwise_run(digits):
    """Conv2D -> DepthwiseConv2D -> Flatten -> Dense pruned to 0.75 over 2 epochs."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(8, 3, activation="relu", name="conv"),
            L.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="dw"),
            L.Flatten(name="flatten"),
            L.Dense(10, name="logits"),
        ],
        name="dw_cnn",
    )
    pruned = compile_classifier(tfedge.prune(model, 0.75))
    fit(pruned, digits, 2, tfedge.PruningCallback(strict=True))
    return model, pruned


def test_depthwise_kernel_reaches_the_target_and_strip_gives_the_plain_layer(digits, depthwise_run):
    model, pruned = depthwise_run
    assert [name for name, _ in pruned_layers(pruned)] == ["conv", "dw", "logits"]
    assert type(model.get_layer("dw")) is L.DepthwiseConv2D  # the input model keeps its layer
    stripped = tfedge.strip(pruned)
    assert [type(layer) for layer in stripped.layers] == [L.Conv2D, L.DepthwiseConv2D, L.Flatten, L.Dense]
    dw = stripped.get_layer("dw")
    kernel = dw.depthwise_kernel.numpy()
    assert kernel.shape == (3, 3, 8, 2)
    assert abs(1 - np.count_nonzero(kernel) / kernel.size - 0.75) <= 0.01
    assert np.count_nonzero(dw.bias.numpy()) == dw.bias.shape[0]  # the bias is never pruned
    assert dw.get_config() == model.get_layer("dw").get_config()
    for report in (tfedge.sparsity_report(pruned), tfedge.sparsity_report(stripped)):
        info = report["layers"]["dw"]
        assert info["class"] == "DepthwiseConv2D" and info["weights"] == kernel.size
        assert abs(info["sparsity"] - 0.75) <= 0.01
    np.testing.assert_allclose(
        stripped.predict(digits.x_test, verbose=0), pruned.predict(digits.x_test, verbose=0), rtol=0, atol=1e-6
    )
    tfl = tfedge.convert(stripped, representative_data=digits.x_train, quantization="int8")
    assert tfedge.inspect(tfl).fully_int8


def test_pruned_depthwise_model_round_trips_through_a_keras_file(digits, depthwise_run, tmp_path):
    _, pruned = depthwise_run
    path = tmp_path / "pruned_dw.keras"
    tfedge.save_model(pruned, path)
    loaded = tfedge.load_model(path)
    layers = dict(pruned_layers(loaded))
    assert list(layers) == ["conv", "dw", "logits"]
    assert type(layers["dw"].layer).__name__ == "PrunableDepthwiseConv2D"
    ((weight, _, _),) = layers["dw"].pruning_vars  # the depthwise kernel only, never the bias
    assert weight is layers["dw"].layer.depthwise_kernel
    np.testing.assert_allclose(
        loaded.predict(digits.x_test, verbose=0), pruned.predict(digits.x_test, verbose=0), rtol=0, atol=1e-6
    )
    assert type(tfedge.strip(loaded).get_layer("dw")) is L.DepthwiseConv2D


# ------------------------------------------------------------------------------------------------
# errors


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(3)

    def call(self, x):
        return self.dense(x)


def test_subclassed_model_is_refused_naming_the_class_and_the_fix():
    model = _Subclassed()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(
        ModelError,
        match=r"subclassed model \(_Subclassed\).*Sequential or Functional"
        r".*keras\.Model\(inputs, outputs\)",
    ):
        tfedge.prune(model, 0.5)


@pytest.mark.parametrize("target", [0, 0.0, 1, 1.0, 1.5, -0.2, float("nan"), "0.5", True, None])
def test_target_outside_0_1_is_refused_showing_the_value(small_cnn, target):
    with pytest.raises(InputError, match="target_sparsity must be"):
        tfedge.prune(small_cnn, target)
    try:
        tfedge.prune(small_cnn, target)
    except InputError as exc:
        assert repr(target) in str(exc) or str(target) in str(exc)
        assert "\n" not in str(exc)


def test_unknown_layer_names_list_the_available_layers(small_cnn):
    with pytest.raises(
        InputError, match=r"layers= names 'dense', which is not in the model; layers: conv, pool, flatten, logits"
    ):
        tfedge.prune(small_cnn, 0.5, layers=["dense"])
    with pytest.raises(InputError, match=r"skip= names 'convv', which is not in the model; layers: conv, pool"):
        tfedge.prune(small_cnn, 0.5, skip="convv")
    with pytest.raises(
        InputError,
        match=r"'pool' \(MaxPooling2D\), which has no weights TF-MOT can prune; "
        r"prunable layers: conv, logits",
    ):
        tfedge.prune(small_cnn, 0.5, layers="pool")
    with pytest.raises(InputError, match="leave nothing to prune"):
        tfedge.prune(small_cnn, 0.5, skip=["conv", "logits"])
    with pytest.raises(InputError, match="layer names or layer classes, got 3"):
        tfedge.prune(small_cnn, 0.5, layers=[3])


def test_model_with_nothing_prunable_is_refused():
    model = keras.Sequential(
        [
            L.Input((8, 8, 1)),
            L.BatchNormalization(name="bn"),
            L.MaxPooling2D(name="pool"),
            L.GlobalAveragePooling2D(name="gap"),
        ]
    )
    with pytest.raises(ModelError, match=r"has no layer TF-MOT can prune \(layers: bn, pool, gap\).*DepthwiseConv2D"):
        tfedge.prune(model, 0.5)
    # a DepthwiseConv2D alone is prunable now (its depthwise kernel), but never m-by-n
    depthwise = keras.Sequential(
        [
            L.Input((8, 8, 1)),
            L.BatchNormalization(name="bn"),
            L.DepthwiseConv2D(3, name="dw"),
            L.GlobalAveragePooling2D(name="gap"),
        ]
    )
    assert [name for name, _ in pruned_layers(tfedge.prune(depthwise, 0.5))] == ["dw"]
    with pytest.raises(ModelError, match=r"has no layer TF-MOT can prune \(layers: bn, dw, gap\).*m_by_n"):
        tfedge.prune(depthwise, 0.5, m_by_n=(2, 4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"schedule": "cubic"}, "schedule must be one of 'polynomial', 'constant', got 'cubic'"),
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0: or None"),
        ({"steps_per_epoch": 2.5}, "steps_per_epoch must be an integer, got 2.5: or None"),
        ({"begin": 0.8, "end": 0.5}, "begin must not be after end, got begin=0.8 and end=0.5"),
        ({"end": 0}, r"end must be in \(0, 1\], got 0"),
        ({"m_by_n": (4, 2)}, r"m_by_n must be two integers 0 < m < n such as \(2, 4\), got \(4, 2\)"),
    ],
)
def test_bad_arguments_are_refused_with_the_value(small_cnn, kwargs, message):
    with pytest.raises(InputError, match=message):
        tfedge.prune(small_cnn, 0.5, **kwargs)


def test_already_pruned_model_and_callback_without_wrappers_are_refused(digits, small_cnn):
    with pytest.raises(InputError, match="already pruned.*strip"):
        tfedge.prune(tfedge.prune(small_cnn, 0.5), 0.5)
    plain = compile_classifier(build_small_cnn())
    with pytest.raises(InputError, match="has no pruning wrappers: wrap it with tfedge.prune"):
        fit(plain, digits, 1)
    with pytest.raises(InputError, match="log_dir must be a folder path or None, got 3"):
        tfedge.PruningCallback(log_dir=3)


def test_dataset_of_unknown_length_asks_for_steps_per_epoch(digits, small_cnn):
    dataset = (
        tf.data.Dataset.from_tensor_slices((digits.x_train, digits.y_train)).batch(BATCH).filter(lambda x, y: True)
    )
    pruned = compile_classifier(tfedge.prune(small_cnn, 0.5))
    with pytest.raises(InputError, match="steps per epoch.*pass steps_per_epoch= to fit or to tfedge.prune"):
        pruned.fit(dataset, epochs=1, verbose=0, callbacks=[tfedge.PruningCallback()])


# ------------------------------------------------------------------------------------------------
# benchmark


def test_benchmark_measures_both_arms_on_the_same_schedule(capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_pruning
    finally:
        sys.path.pop(0)
    assert bench_pruning.main(["--repeats", "1", "--epochs", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["tfedge_seconds"]) == len(result["tfmot_seconds"]) == 1
    assert result["ratio"] == pytest.approx(result["tfedge_median_seconds"] / result["tfmot_median_seconds"])
    assert result["sparsity"]["tfedge"] == pytest.approx(result["sparsity"]["tfmot"], abs=1e-9)
    assert abs(result["sparsity"]["tfedge"] - 0.8) <= 0.01


def test_qat_keeps_pruned_depthwise_zeros(depthwise_run, digits):
    _, pruned = depthwise_run
    stripped = tfedge.strip(pruned)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tfedge.quantization.QuantizationWarning)
        qat = tfedge.quantize_aware(stripped, preserve_sparsity=True)
    qat.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(digits.x_train[:256], digits.y_train[:256], epochs=1, batch_size=64, verbose=0)
    before = stripped.get_layer("dw").depthwise_kernel.numpy()
    after = next(w for w in qat.get_layer("quant_dw").weights if w.name.endswith("depthwise_kernel:0")).numpy()
    assert np.mean(before == 0) >= 0.74 and np.all(after[before == 0] == 0) and not np.array_equal(after, before)


# --------------------------------------------------------------------------------------------------
# fast: config round-trips and argument checks (no training)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_sparsity": 0.8, "epochs": 2, "steps_per_epoch": 10},  # sized here
        {"target_sparsity": 0.5, "kind": "constant", "begin": 0.2, "end": 0.9},  # sized later, by the callback
        {"target_sparsity": 0.5, "m_by_n": (2, 4), "epochs": 1, "steps_per_epoch": 100},
    ],
)
def test_schedule_config_round_trips_through_the_keras_registry(kwargs):
    schedule = AdaptiveSchedule(**kwargs)
    saved = json.loads(json.dumps(schedule.get_config()))
    cls = keras.utils.get_registered_object(saved["class_name"])
    assert cls is AdaptiveSchedule
    rebuilt = cls.from_config(saved["config"])
    assert rebuilt.get_config() == saved
    assert (rebuilt.begin_step, rebuilt.end_step, rebuilt.frequency) == (
        schedule.begin_step,
        schedule.end_step,
        schedule.frequency,
    )
    for step in (0, 1, 5, 50, 200):
        assert [float(v) for v in rebuilt(step)] == [float(v) for v in schedule(step)]


def test_pruning_wrapper_config_round_trips_in_prune_scope():
    from tfedge.pruning import prune_scope

    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, name="d")])
    wrapper = tfedge.prune(model, 0.5, epochs=1, steps_per_epoch=10).layers[0]
    with prune_scope():
        rebuilt = keras.layers.deserialize(keras.layers.serialize(wrapper))
    assert isinstance(rebuilt, PruneLowMagnitude) and isinstance(rebuilt.pruning_schedule, AdaptiveSchedule)
    assert rebuilt.pruning_schedule.get_config() == wrapper.pruning_schedule.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_sparsity": 1.0}, r"target_sparsity must be in \(0, 1\), got 1.0"),
        ({"target_sparsity": "0.5"}, "target_sparsity must be a number, got '0.5'"),
        ({"target_sparsity": 0.5, "kind": "step"}, "schedule must be one of 'polynomial', 'constant', got 'step'"),
        ({"target_sparsity": 0.5, "begin": 1.0}, r"begin must be in \[0, 1\), got 1.0"),
        ({"target_sparsity": 0.5, "epochs": -1}, "epochs must be an integer >= 1, got -1"),
        ({"target_sparsity": 0.5, "steps_per_epoch": True}, "steps_per_epoch must be an integer, got True"),
    ],
)
def test_schedule_refuses_bad_arguments_with_the_value(kwargs, message):
    with pytest.raises(InputError, match=message):
        AdaptiveSchedule(**kwargs)


def test_callback_checks_its_arguments_when_made():
    with pytest.raises(InputError, match="strict must be True or False, got 'yes'"):
        tfedge.PruningCallback(strict="yes")
    with pytest.raises(InputError, match="log_dir must be a folder path or None, got ''"):
        tfedge.PruningCallback(log_dir="")
    callback = tfedge.PruningCallback(log_dir=Path("logs"), strict=True)
    assert (callback.log_dir, callback.strict) == ("logs", True)
    with pytest.raises(InputError, match=r"a pruning run needs at least 1 training step, got 0"):
        AdaptiveSchedule(0.5).configure(0)


def test_sparsity_report_prints_with_the_shared_table_printer():
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2, name="d")])
    model.set_weights([np.array([[0, 1], [0, 2], [3, 0], [0, 0]], "float32"), np.ones(2, "float32")])
    lines = str(tfedge.sparsity_report(model)).splitlines()
    assert lines[0].split() == ["layer", "class", "weights", "zeros", "sparsity", "target"]
    assert lines[2].split() == ["d", "Dense", "8", "5", "0.625", "-"]
    assert lines[3].split() == ["overall", "8", "5", "0.625", "-"]
