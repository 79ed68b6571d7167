"""tfedge.prune_channels, its channel dependency graph, ChannelPruningCallback and channel_report."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

import tfedge
from tfedge import keras
from tfedge.channel_graph import ChannelGraph, channel_axes
from tfedge.channels import ChannelPruningWarning, channel_importance
from tfedge.errors import InputError, ModelError

from conftest import accuracy, compile_classifier

L = keras.layers


# -- the model shapes the graph must handle ----------------------------------------------------------


def plain_cnn() -> keras.Model:
    return keras.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(12, 3, padding="same", name="conv1"),
            L.BatchNormalization(name="bn1"),
            L.ReLU(name="relu1"),
            L.Conv2D(16, 3, name="conv2"),
            L.BatchNormalization(name="bn2"),
            L.Activation("relu", name="relu2"),
            L.MaxPooling2D(2, name="pool"),
            L.Dropout(0.1, name="drop"),
            L.Flatten(name="flatten"),
            L.Dense(16, activation="relu", name="fc"),
            L.Dense(10, name="logits"),
        ],
        name="plain_cnn",
    )


def residual() -> keras.Model:
    x = L.Input((8, 8, 1))
    stem = L.ReLU(name="stem_relu")(
        L.BatchNormalization(name="stem_bn")(L.Conv2D(8, 3, padding="same", name="stem")(x))
    )
    y = L.ReLU(name="r1")(L.BatchNormalization(name="bn_a")(L.Conv2D(12, 3, padding="same", name="conv_a")(stem)))
    y = L.BatchNormalization(name="bn_b")(L.Conv2D(8, 3, padding="same", name="conv_b")(y))
    y = L.ReLU(name="r2")(L.Add(name="add")([stem, y]))
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, L.Dense(10, name="logits")(y), name="residual")


def inverted_residual(
    width: int = 8, expand: int = 6, blocks: int = 2, squeeze: tuple[int, ...] = (0, 1), gate: str = "sigmoid"
) -> keras.Model:
    """MobileNetV2-style: 1x1 expand, depthwise 3x3, squeeze-excite (in the blocks listed in ``squeeze``),
    1x1 project, Add; a separable head."""
    x = L.Input((8, 8, 1))
    y = L.ReLU(6.0, name="stem_relu")(
        L.BatchNormalization(name="stem_bn")(L.Conv2D(width, 3, padding="same", name="stem")(x))
    )
    for b in range(blocks):
        h = L.ReLU(6.0, name=f"b{b}_expand_relu")(
            L.BatchNormalization(name=f"b{b}_expand_bn")(L.Conv2D(width * expand, 1, name=f"b{b}_expand")(y))
        )
        h = L.ReLU(6.0, name=f"b{b}_dw_relu")(
            L.BatchNormalization(name=f"b{b}_dw_bn")(L.DepthwiseConv2D(3, padding="same", name=f"b{b}_dw")(h))
        )
        if b in squeeze:
            s = L.GlobalAveragePooling2D(name=f"b{b}_se_pool")(h)
            s = L.Dense(4, activation="relu", name=f"b{b}_se_reduce")(s)
            s = L.Dense(width * expand, activation=gate, name=f"b{b}_se_expand")(s)
            h = L.Multiply(name=f"b{b}_se_scale")([h, L.Reshape((1, 1, width * expand), name=f"b{b}_se_shape")(s)])
        h = L.BatchNormalization(name=f"b{b}_project_bn")(L.Conv2D(width, 1, name=f"b{b}_project")(h))
        y = L.Add(name=f"b{b}_add")([y, h])
    y = L.ReLU(name="head_relu")(
        L.SeparableConv2D(width * 4, 3, padding="same", depth_multiplier=2, name="head_sep")(y)
    )
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, L.Dense(10, name="logits")(y), name="inverted_residual")


def conv1d() -> keras.Model:
    return keras.Sequential(
        [
            L.Input((16, 3)),
            L.Conv1D(8, 3, activation="relu", name="c1"),
            L.ZeroPadding1D(1, name="pad"),
            L.Conv1D(10, 3, name="c2"),
            L.BatchNormalization(name="bn"),
            L.ReLU(name="relu"),
            L.GlobalMaxPooling1D(name="gmp"),
            L.Dense(4, name="out"),
        ],
        name="conv1d",
    )


def concatenate() -> keras.Model:
    x = L.Input((8, 8, 1))
    a = L.Conv2D(6, 3, padding="same", activation="relu", name="branch_a")(x)
    b = L.Conv2D(10, 1, activation="relu", name="branch_b")(x)
    y = L.Concatenate(name="concat")([a, b])
    y = L.Conv2D(8, 3, activation="relu", name="mix")(y)
    y = L.Flatten(name="flatten")(L.MaxPooling2D(2, name="pool")(y))
    return keras.Model(x, L.Dense(10, name="logits")(y), name="concatenate")


def two_outputs() -> keras.Model:
    x = L.Input((8, 8, 1))
    y = L.Conv2D(8, 3, activation="relu", name="trunk")(x)
    y = L.Reshape((36, 8), name="tokens")(y)
    y = L.GlobalMaxPooling1D(name="gmp")(y)
    y = L.Dense(12, activation="relu", name="shared")(y)
    return keras.Model(x, [L.Dense(10, name="classes")(y), L.Dense(1, name="score")(y)], name="two_outputs")


def reshape_flat() -> keras.Model:
    return keras.Sequential(
        [
            L.Input((6, 6, 2)),
            L.Conv2D(6, 3, activation="relu", name="conv"),
            L.Reshape((-1,), name="flat"),
            L.Dense(8, activation="relu", name="fc"),
            L.Dense(3, name="out"),
        ],
        name="reshape_flat",
    )


BUILDERS = {
    "plain_cnn": plain_cnn,
    "reshape_flat": reshape_flat,
    "residual": residual,
    "inverted_residual": inverted_residual,
    "conv1d": conv1d,
    "concatenate": concatenate,
    "two_outputs": two_outputs,
}


def _randomize_bn(model: keras.Model, rng: np.random.Generator) -> None:
    """Non-trivial BatchNorm statistics, so that a wrong slice shows in the outputs."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.2, beta.shape),
                    rng.normal(0, 0.2, mean.shape),
                    rng.uniform(0.5, 1.5, var.shape),
                ]
            )


def _inputs(model: keras.Model, n: int = 16) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1, (n, *model.input_shape[1:])).astype(keras.backend.floatx())


def _outputs(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def _kill(model: keras.Model, graph: ChannelGraph, dead: set[int]) -> None:
    """Make the coupled channels ``dead`` exactly zero: their filters, biases and BatchNorm gamma/beta
    (and depthwise filters), leaving the next layers' weights alone."""
    for name, lc in graph.layers.items():
        if lc.kind not in ("producer", "separable", "channelwise"):
            continue
        layer = model.get_layer(name)
        weights = layer.get_weights()
        for k, axis, side in channel_axes(layer, lc.kind):
            if side not in ("out", "chan"):
                continue
            if isinstance(layer, L.BatchNormalization) and k >= 2:  # moving statistics stay as they are
                continue
            ids = lc.out_ids if side == "out" else lc.in_ids
            mask = np.array([int(r) in dead for r in graph.roots(ids)])
            w = np.moveaxis(weights[k], axis, -1).copy()
            w[..., mask] = 0.0
            weights[k] = np.moveaxis(w, -1, axis)
        layer.set_weights(weights)


# -- exactness --------------------------------------------------------------------------------------


def _dyadic(model: keras.Model, rng: np.random.Generator) -> None:
    """Weights that are small multiples of 1/2 (BatchNorm: variance + epsilon == 1), so that every sum in the
    float64 model is exact: its outputs then cannot depend on the order in which a kernel adds its terms,
    and a removed channel that contributes exactly zero must leave them bit for bit as they were."""
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = weights
            unit = np.float64(1.0) - layer.epsilon
            assert unit + layer.epsilon == 1.0
            weights = [
                rng.choice([0.5, 1.0], gamma.shape),
                rng.choice([-0.5, 0.0, 0.5], beta.shape),
                rng.choice([-0.5, 0.0, 0.5], mean.shape),
                np.full(var.shape, unit),
            ]
        else:
            # no zero in a kernel: a live filter never ties with a dead one in the ranking
            weights = [rng.choice([-0.5, 0.5] if w.ndim > 1 else [-0.5, 0.0, 0.5], w.shape) for w in weights]
        layer.set_weights(weights)


@pytest.fixture
def float64():
    keras.backend.set_floatx("float64")
    yield
    keras.backend.set_floatx("float32")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_removing_dead_channels_is_bit_identical(name, float64):
    rng = np.random.default_rng(0)
    model = BUILDERS[name]() if name != "inverted_residual" else inverted_residual(squeeze=(0,), gate="relu")
    _dyadic(model, rng)
    graph = ChannelGraph(model)
    prunable = [g for g in graph.groups if g.prunable]
    assert prunable, "every test model has channels to remove"
    dead: set[int] = set()
    for group in prunable:
        count = int(group.size * 0.25 + 0.5)
        dead.update(group.channels[i] for i in rng.choice(group.size, count, replace=False))
    _kill(model, graph, dead)
    x = np.round(_inputs(model) * 4) / 4
    before = _outputs(model, x)
    snapshot = [w.copy() for w in model.get_weights()]

    small = tfedge.prune_channels(model, ratio=0.25)

    after = _outputs(small, x)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert small.count_params() < model.count_params()
    assert small.output_shape == model.output_shape and small.input_shape == model.input_shape
    assert type(small) is type(model)
    for a, b in zip(snapshot, model.get_weights()):  # the caller's model is untouched
        np.testing.assert_array_equal(a, b)
    # exactly the dead channels went: every producer lost its dead filters, no live one
    for group in prunable:
        dead_here = sum(r in dead for r in group.channels)
        for producer in group.producers:
            before_n = model.get_layer(producer).get_config().get("filters") or model.get_layer(producer).units
            after_n = small.get_layer(producer).get_config().get("filters") or small.get_layer(producer).units
            assert before_n - after_n == dead_here, producer


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_ratio_zero_returns_an_equivalent_new_model(name):
    model = BUILDERS[name]()
    _randomize_bn(model, np.random.default_rng(0))
    same = tfedge.prune_channels(model, ratio=0.0)
    assert same is not model and same.count_params() == model.count_params()
    x = _inputs(model)
    for a, b in zip(_outputs(model, x), _outputs(same, x)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_half_the_channels_go_and_outputs_keep_their_shapes(name):
    model = BUILDERS[name]()
    small = tfedge.prune_channels(model, ratio=0.5)
    graph = ChannelGraph(model)
    assert small.output_shape == model.output_shape
    for group in graph.groups:
        for producer in group.producers:
            old, new = model.get_layer(producer), small.get_layer(producer)
            n_old = old.get_config().get("filters") or old.units
            n_new = new.get_config().get("filters") or new.units
            assert n_new == (n_old - int(n_old * 0.5 + 0.5) if group.prunable else n_old), producer
    # a plain model of built-in layers: it saves and loads with tfedge's safe loader
    assert all(type(layer).__module__.startswith("tf_keras") for layer in small.layers)


def test_coupled_channels_form_groups():
    graph = ChannelGraph(inverted_residual())
    groups = {g.producers: g for g in graph.groups}
    # the residual stream: stem and every project conv share one channel set (Add)
    assert groups[("b0_project", "b1_project", "stem")].prunable
    # the expand conv and the squeeze-excite Dense are joined by the Multiply (through DW, BN, Reshape)
    assert groups[("b0_expand", "b0_se_expand")].size == 48
    assert not groups[("logits",)].prunable and graph.unknown == []
    graph = ChannelGraph(concatenate())
    assert [g.producers for g in graph.groups if g.prunable] == [("branch_a",), ("branch_b",), ("mix",)]


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_gamma"])
def test_removed_channels_are_the_least_important(importance):
    model = plain_cnn()
    _randomize_bn(model, np.random.default_rng(3))
    small = tfedge.prune_channels(model, ratio={"conv1": 0.5, "conv2": 0.25}, importance=importance)
    kernel, gamma = model.get_layer("conv1").get_weights()[0], model.get_layer("bn1").get_weights()[0]
    flat = kernel.reshape(-1, kernel.shape[-1])
    score = {"l1": np.abs(flat).sum(0), "l2": np.sqrt((flat**2).sum(0)), "bn_gamma": np.abs(gamma)}[importance]
    kept = np.sort(np.argsort(score)[6:])
    np.testing.assert_array_equal(small.get_layer("conv1").get_weights()[0], kernel[..., kept])
    np.testing.assert_array_equal(small.get_layer("bn1").get_weights()[0], gamma[kept])
    # conv2 reads only the kept channels of conv1
    np.testing.assert_array_equal(small.get_layer("conv2").get_weights()[0].shape, (3, 3, 6, 12))
    assert small.get_layer("fc").get_weights()[0].shape[0] == 12 * 9  # Flatten -> Dense: channel x position rows


def test_taylor_ranks_on_data(digits, small_cnn):
    graph = ChannelGraph(small_cnn)
    scores = channel_importance(small_cnn, graph, "taylor", (digits.x_train[:256], digits.y_train[:256]))
    group = graph.groups[0]
    order = np.argsort([scores[r] for r in group.channels])
    small = tfedge.prune_channels(
        small_cnn, 0.5, importance="taylor", data=(digits.x_train[:256], digits.y_train[:256])
    )
    kernel = small_cnn.get_layer("conv").get_weights()[0]
    np.testing.assert_array_equal(small.get_layer("conv").get_weights()[0], kernel[..., np.sort(order[4:])])
    with pytest.raises(InputError, match="taylor.*needs data"):
        tfedge.prune_channels(small_cnn, 0.5, importance="taylor")


def test_round_to_rounds_kept_channels_up():
    small = tfedge.prune_channels(plain_cnn(), ratio=0.4, round_to=4)
    assert small.get_layer("conv1").filters == 8 and small.get_layer("conv2").filters == 12
    assert small.get_layer("fc").units == 12


# -- errors and unknown layers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ratio": 1.5}, r"ratio must be in \[0, 1\), got 1.5"),
        ({"ratio": -0.1}, r"ratio must be in \[0, 1\), got -0.1"),
        ({"ratio": {"conv1": 1.0}}, r"ratio\['conv1'\] must be in \[0, 1\), got 1.0"),
        ({"ratio": {"nope": 0.5}}, r"ratio names layer 'nope', which is not in model 'plain_cnn'"),
        ({"ratio": {"logits": 0.5}}, r"'logits', whose channels cannot be removed"),
        ({"ratio": {"conv1": 0.97}}, r"ratio 0.97 would leave layer 'conv1' with 0 of its 12 channels"),
        ({"importance": "random"}, r"importance must be one of 'l2', 'l1', 'bn_gamma', 'taylor', got 'random'"),
        ({"round_to": 0}, r"round_to must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments_raise_one_line_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message) as info:
        tfedge.prune_channels(plain_cnn(), **kwargs)
    assert "\n" not in str(info.value)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 3), np.float32))
    with pytest.raises(ModelError, match="subclassed model"):
        tfedge.prune_channels(net)


def test_unknown_layers_keep_their_channels_or_fail_with_strict():
    x = L.Input((8, 8, 1))
    a = L.Conv2D(8, 3, name="a")(x)
    n = L.LayerNormalization(name="norm")(a)  # mixes channels: the graph cannot reason about it
    b = L.Conv2D(6, 3, name="b")(n)
    y = L.Dense(3, name="out")(L.GlobalAveragePooling2D()(b))
    model = keras.Model(x, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = tfedge.prune_channels(model, 0.5)
    assert [str(w.message) for w in caught if w.category is ChannelPruningWarning] == [
        "prune_channels keeps the channels around 1 layer(s) it cannot trace: 'norm' (strict=True refuses them)"
    ]
    assert small.get_layer("a").filters == 8 and small.get_layer("b").filters == 3
    with pytest.raises(ModelError, match="cannot trace: 'norm'; replace them"):
        tfedge.prune_channels(model, 0.5, strict=True)


# -- gradual pruning, distillation, and the rest of the pipeline -----------------------------------------


def _digits_cnn() -> keras.Model:
    return keras.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            L.Conv2D(16, 3, activation="relu", name="conv2"),
            L.MaxPooling2D(2, name="pool"),
            L.Flatten(name="flatten"),
            L.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


def test_callback_prunes_during_fit_and_the_result_converts_to_int8(digits):
    model = compile_classifier(_digits_cnn())
    callback = tfedge.ChannelPruningCallback(ratio=0.5, prune_at=[2, 4])
    model.fit(digits.x_train, digits.y_train, epochs=5, batch_size=32, verbose=0, callbacks=[callback])
    small = callback.pruned_model
    assert small.get_layer("conv1").filters == 8 and small.get_layer("conv2").filters == 8
    # the removed channels were held at zero: removing them changes nothing
    x = digits.x_test
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert accuracy(small.predict(x, verbose=0), digits.y_test) > 0.85
    tfl = tfedge.convert(small, representative_data=digits.x_train, quantization="int8")
    result = tfedge.validate(tfl, digits.x_test, digits.y_test, runtimes=("litert",), verbose=0)
    assert result.accuracy["litert"] > 0.85
    assert tfedge.inspect(tfl).fully_int8


def test_pruned_student_recovers_by_distillation_and_goes_on_through_prune_and_qat(digits):
    teacher = compile_classifier(_digits_cnn())
    teacher.fit(digits.x_train, digits.y_train, epochs=8, batch_size=32, verbose=0)
    student = tfedge.prune_channels(teacher, ratio=0.75)
    before = accuracy(student.predict(digits.x_test, verbose=0), digits.y_test)
    distiller = tfedge.Distiller(student=student, teacher=teacher)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
    distiller.fit(digits.x_train, digits.y_train, epochs=6, batch_size=32, verbose=0)
    after = accuracy(distiller.student.predict(digits.x_test, verbose=0), digits.y_test)
    assert after > before and after > 0.85
    assert teacher.get_layer("conv1").filters == 16  # the teacher is untouched
    # the small model is a plain model for the rest of the pipeline
    pruned = tfedge.prune(student, 0.5)
    assert [type(layer).__name__ for layer in pruned.layers].count("PruneLowMagnitude") == 3
    qat = tfedge.quantize_aware(student)
    assert qat.output_shape == (None, 10)


def test_callback_on_a_distiller_prunes_the_student(digits, small_cnn):
    student = keras.models.clone_model(small_cnn)
    student.set_weights(small_cnn.get_weights())
    distiller = tfedge.Distiller(student=student, teacher=small_cnn)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
    callback = tfedge.ChannelPruningCallback(ratio=0.5, prune_at=[1])
    distiller.fit(digits.x_train, digits.y_train, epochs=4, batch_size=32, verbose=0, callbacks=[callback])
    small = callback.pruned_model
    assert small.get_layer("conv").filters == 4 and small_cnn.get_layer("conv").filters == 8
    np.testing.assert_allclose(
        small.predict(digits.x_test, verbose=0), distiller.student.predict(digits.x_test, verbose=0), atol=1e-5
    )
    assert accuracy(small.predict(digits.x_test, verbose=0), digits.y_test) > 0.85


def test_callback_rejects_bad_arguments():
    with pytest.raises(InputError, match=r"prune_at must list increasing epoch numbers, got \[3, 2\]"):
        tfedge.ChannelPruningCallback(prune_at=[3, 2])
    with pytest.raises(InputError, match=r"ratio must be in \[0, 1\), got 2"):
        tfedge.ChannelPruningCallback(ratio=2)


# -- report -----------------------------------------------------------------------------------------------


def test_channel_report_measures_bytes_and_arena(digits):
    model = inverted_residual(blocks=1, squeeze=())
    small = tfedge.prune_channels(model, 0.5)
    report = tfedge.channel_report(model, small, digits.x_train[:64])
    rows = {row.name: row for row in report.layers}
    assert (rows["b0_expand"].channels_before, rows["b0_expand"].channels_after) == (48, 24)
    assert rows["b0_expand"].params_after < rows["b0_expand"].params_before
    assert report.params_after == small.count_params()
    assert report.int8_bytes_after < report.int8_bytes_before
    assert report.arena_after < report.arena_before
    data = json.loads(report.to_json())
    assert data["arena_before"] == report.arena_before and data["layers"][0]["name"] == "stem"
    table = report.format_table()
    assert "b0_expand" in table and "TFLite Micro arena" in table
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.params_after = 0  # type: ignore[misc]


def test_callback_refuses_a_ratio_that_empties_a_layer_before_training(digits):
    model = compile_classifier(_digits_cnn())
    callback = tfedge.ChannelPruningCallback(ratio={"conv2": 0.99})
    with pytest.raises(InputError, match="ratio 0.99 would leave layer 'conv2' with 0 of its 16 channels"):
        model.fit(digits.x_train[:64], digits.y_train[:64], epochs=1, verbose=0, callbacks=[callback])


def test_shared_and_nested_layers_keep_their_channels():
    inner = keras.Sequential([L.Input((4, 4, 8)), L.Conv2D(4, 1, name="inner_conv")], name="inner")
    x = L.Input((4, 4, 2))
    shared = L.Conv2D(8, 1, name="shared")
    y = inner(L.Add(name="add")([shared(x), shared(x)]))
    model = keras.Model(x, L.Dense(3, name="out")(L.Flatten(name="flatten")(y)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = tfedge.prune_channels(model, 0.5)
    expected = (
        "prune_channels keeps the channels around 2 layer(s) it cannot trace: 'shared', 'inner' "
        "(strict=True refuses them)"
    )
    assert [str(w.message) for w in caught if w.category is ChannelPruningWarning] == [expected]
    assert small.count_params() == model.count_params()
    x = _inputs(model)
    np.testing.assert_array_equal(_outputs(model, x)[0], _outputs(small, x)[0])
