"""Keras 3 in and out: ports predict what the original predicts on the digits, files go through the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfedge
from tfedge import keras
from tfedge.runtimes import LiteRT

k3 = tfedge.keras3.keras3()  # Keras 3 (`import keras`), through tfedge's one bridge module
L = k3.layers


def _max_diff(a, b) -> float:
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    assert len(a) == len(b)
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


def _assert_port(model, digits, port=None):
    """``port`` (default: from_keras3(model)) is a tf_keras model predicting what ``model`` does on the digits."""
    port = tfedge.from_keras3(model) if port is None else port
    assert isinstance(port, keras.Model)
    x = digits.x_test[:128]
    assert _max_diff(model.predict(x, verbose=0), port.predict(x, verbose=0)) <= 1e-5
    return port


def _perturb_batchnorm(model):
    """Give BatchNormalization layers non-trivial statistics, so that copying them is tested."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([w + rng.uniform(0.1, 0.5, size=w.shape).astype("float32") for w in layer.get_weights()])


def _residual():
    inp = L.Input((8, 8, 1), name="image")
    h = L.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    h = L.BatchNormalization()(h)
    h = L.ReLU(max_value=6.0)(h)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")(h)
    y = L.BatchNormalization()(y)
    h = L.Add()([h, y])
    h = L.SeparableConv2D(8, 3, padding="same", activation="relu")(h)
    h = L.GlobalAveragePooling2D()(h)
    model = k3.Model(inp, L.Dense(10)(L.Dropout(0.2)(h)), name="residual")
    _perturb_batchnorm(model)
    return model


def test_sequential_cnn(digits):
    model = k3.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(8, 3, activation="relu", kernel_regularizer=k3.regularizers.L2(1e-4)),
            L.MaxPooling2D(),
            L.ZeroPadding2D(1),
            L.AveragePooling2D(2),
            L.Flatten(),
            L.Dense(16, activation="silu"),
            L.Activation("relu6"),
            L.Dense(10, activation="softmax"),
        ],
        name="seq_cnn",
    )
    port = _assert_port(model, digits)
    assert isinstance(port, keras.Sequential) and port.name == "seq_cnn"
    assert [type(layer).__name__ for layer in port.layers] == [
        "Conv2D",
        "MaxPooling2D",
        "ZeroPadding2D",
        "AveragePooling2D",
        "Flatten",
        "Dense",
        "ReLU",
        "Dense",
    ]
    assert port.layers[0].kernel_regularizer.get_config()["l2"] == pytest.approx(1e-4)


def test_functional_residual_batchnorm_relu6_depthwise_gap(digits):
    model = _residual()
    port = _assert_port(model, digits)
    names = [type(layer).__name__ for layer in port.layers]
    assert names.count("BatchNormalization") == 2 and "DepthwiseConv2D" in names and "Add" in names
    # DepthwiseConv2D(activation="relu6") has no tf_keras twin: ported as the layer plus a ReLU(max_value=6)
    assert port.get_layer("dw").get_config()["activation"] == "linear"
    assert float(port.get_layer("dw_relu6").max_value) == 6.0
    assert port.input_names == ["image"]


def test_conv1d_model(digits):
    model = k3.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Reshape((64, 1)),
            L.Conv1D(6, 5, strides=2, activation="relu"),
            L.MaxPooling1D(2),
            L.ZeroPadding1D(1),
            L.Conv1D(6, 3),
            L.GlobalAveragePooling1D(),
            L.Dense(10),
        ]
    )
    _assert_port(model, digits)


def test_two_outputs_concatenate_multiply(digits):
    inp = L.Input((8, 8, 1))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = L.Conv2D(4, 1, activation="tanh")(inp)
    h = L.Concatenate()([a, b])
    h = L.Flatten()(L.MaxPooling2D()(h))
    logits = L.Dense(10, name="logits")(h)
    gate = L.Dense(1, activation="sigmoid", name="gate")(L.Multiply()([h, h]))
    model = k3.Model(inp, [logits, gate])
    port = _assert_port(model, digits)
    assert port.output_names == ["logits", "gate"]


def test_rescaling_and_normalization(digits):
    norm = L.Normalization(axis=-1)
    norm.adapt(digits.x_train)  # adapted: mean, variance and count are weights to copy
    model = k3.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Rescaling(16.0, offset=-0.5),
            norm,
            L.Normalization(mean=0.2, variance=4.0),
            L.Flatten(),
            L.Dense(10),
        ]
    )
    port = _assert_port(model, digits)
    assert np.asarray(port.layers[1].mean).item() == pytest.approx(float(np.asarray(norm.mean).item()))


def test_unportable_layers_are_listed_in_one_error():
    model = k3.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Flatten(),
            L.LayerNormalization(name="ln"),
            L.Dense(8, activation="hard_sigmoid", name="hs"),
            L.UnitNormalization(name="unit"),
            L.Dense(10, name="ok"),
        ]
    )
    match = (
        r"^3 layers of model '.*' cannot be ported to tf_keras: 'ln' \(LayerNormalization\): layer type not "
        r"supported; 'hs' \(Dense\): activation 'hard_sigmoid' has no equivalent in tf_keras; 'unit' "
        r"\(UnitNormalization\): layer type not supported: replace them"
    )
    with pytest.raises(tfedge.ModelError, match=match):
        tfedge.from_keras3(model)


def test_subclassed_unbuilt_and_wrong_models_are_refused():
    class Net(k3.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(tfedge.ModelError, match=r"is a subclassed model \(Net\).*keras\.Model\(inputs, outputs\)"):
        tfedge.from_keras3(net)
    with pytest.raises(tfedge.ModelError, match=r"is not built.*Input\(shape\)"):
        tfedge.from_keras3(k3.Sequential([L.Dense(2)]))
    with pytest.raises(tfedge.InputError, match=r"already a tf_keras model"):
        tfedge.from_keras3(keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(2)]))
    with pytest.raises(tfedge.InputError, match=r"already a Keras 3 model: use it as it is"):
        tfedge.to_keras3(_residual())


def test_keras3_file_loads_through_load_model(digits, tmp_path):
    model = _residual()
    model.save(tmp_path / "residual.keras")
    before = (tmp_path / "residual.keras").read_bytes()
    port = tfedge.load_model(tmp_path / "residual.keras")
    _assert_port(model, digits, port)
    assert (tmp_path / "residual.keras").read_bytes() == before  # the user's file is never modified


def test_keras3_file_with_lambda_is_refused_before_loading(tmp_path):
    inp = L.Input((4,))
    model = k3.Model(inp, L.Dense(2)(L.Lambda(lambda t: t * 2.0, name="double")(inp)))
    model.save(tmp_path / "lambda.keras")
    # tfedge's own scan answers (an InputError naming the layer), before Keras 3 reads the file
    with pytest.raises(
        tfedge.InputError,
        match=r"contains a Lambda layer 'double', refused because it runs "
        r"arbitrary Python code",
    ):
        tfedge.load_model(tmp_path / "lambda.keras")


def test_to_keras3_saves_an_equivalent_model(small_cnn, digits, tmp_path):
    out = tmp_path / "student.keras"
    model = tfedge.to_keras3(small_cnn, out)
    assert type(model).__module__.startswith("keras.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.keras"]  # atomic: no temporary file left
    reloaded = k3.saving.load_model(out, safe_mode=True)
    x = digits.x_test
    assert _max_diff(small_cnn.predict(x, verbose=0), reloaded.predict(x, verbose=0)) <= 1e-5
    # and back: a Keras 3 file written by tfedge loads in tfedge
    _assert_port(reloaded, digits, tfedge.load_model(out))
    with pytest.raises(tfedge.InputError, match=r"use a \.keras file name"):
        tfedge.to_keras3(small_cnn, tmp_path / "student.h5")


def test_to_keras3_residual_roundtrip(digits):
    port = tfedge.from_keras3(_residual())
    back = tfedge.to_keras3(port)
    x = digits.x_test[:128]
    assert _max_diff(port.predict(x, verbose=0), back.predict(x, verbose=0)) <= 1e-5


@pytest.mark.slow
def test_cli_convert_a_keras3_file(digits, tmp_path):
    k3.utils.set_random_seed(0)
    model = k3.Sequential(
        [
            L.Input((8, 8, 1)),
            L.Conv2D(8, 3, activation="relu"),
            L.BatchNormalization(),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(10),
        ]
    )
    model.compile(optimizer="adam", loss=k3.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=8, batch_size=32, verbose=0)
    model.save(tmp_path / "k3.keras")
    tfedge.datasets.save_npz(tmp_path / "calib.npz", digits.x_train[:200])
    out = tmp_path / "k3_int8.tflite"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfedge",
            "convert",
            str(tmp_path / "k3.keras"),
            "--data",
            str(tmp_path / "calib.npz"),
            "--quantization",
            "int8",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert tfedge.inspect(out).fully_int8
    expected = model.predict(digits.x_test, verbose=0)
    got = LiteRT(out).run(digits.x_test, warmup=0).dequantized()
    agreement = float(np.mean(expected.argmax(1) == got.argmax(1)))
    accuracy = float(np.mean(got.argmax(1) == digits.y_test))
    assert agreement >= 0.97 and accuracy >= 0.85, (agreement, accuracy)
    assert float(np.max(np.abs(expected - got))) < 0.1 * float(np.max(np.abs(expected)))


def test_readme_keras3_example_runs(digits, tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "from_keras3" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md Keras 3 example", "exec"), namespace)
    assert tfedge.inspect(tmp_path / "student_int8.tflite").fully_int8
    student = namespace["distiller"].student
    back = k3.saving.load_model(tmp_path / "student.keras", safe_mode=True)
    assert _max_diff(student.predict(digits.x_test, verbose=0), back.predict(digits.x_test, verbose=0)) <= 1e-5
    port_accuracy = float(np.mean(namespace["port"].predict(digits.x_test, verbose=0).argmax(1) == digits.y_test))
    assert port_accuracy > 0.8


def test_nested_sequential_and_shared_layer(digits):
    block = k3.Sequential([L.Input((8, 8, 1)), L.Conv2D(4, 3, padding="same", activation="relu")], name="block")
    shared = L.Dense(10, name="shared")
    inp = L.Input((8, 8, 1))
    flat = L.Flatten()(block(inp))
    model = k3.Model(inp, L.Add()([shared(flat), shared(L.Dropout(0.5)(flat))]))
    port = _assert_port(model, digits)
    assert isinstance(port.get_layer("block"), keras.Sequential)
    assert len(port.get_layer("shared")._inbound_nodes) == 2  # still one layer, called twice
