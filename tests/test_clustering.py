"""tfedge/clustering.py: weight clustering, strip, cluster-preserving QAT and saving, on digits."""

from __future__ import annotations

import numpy as np
import pytest

import tfedge
from tfedge import keras
from tfedge.clustering import distinct_weights
from tfedge.errors import InputError, ModelError
from tfedge.flatbuffer import parse

from conftest import accuracy, compile_classifier

L = keras.layers


def clone(model: keras.Model) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def fit(model: keras.Model, digits, epochs: int = 1, lr: float = 1e-3) -> keras.Model:
    compile_classifier(model, lr=lr)
    model.fit(digits.x_train, digits.y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def int8_kernels(content: bytes) -> list[tuple[tuple[int, ...], bool, np.ndarray]]:
    """(shape, per_channel, most distinct values in one channel / the tensor) of each int8 constant."""
    model = parse(content)
    out = []
    for t in model.subgraphs[0].tensors:
        if t.is_constant and t.dtype == "int8":
            data = np.frombuffer(model.buffer_data(t.buffer), np.int8).reshape(t.shape)
            per_channel = len(t.scale) > 1
            tables = np.moveaxis(data, t.quantized_dimension, 0) if per_channel else [data]
            out.append((t.shape, per_channel, max(len(np.unique(ch)) for ch in tables)))
    return out


@pytest.fixture(scope="module")
def sparse_cnn(small_cnn):
    """The trained small CNN with the smaller half of each kernel set to exactly zero (as after pruning)."""
    model = clone(small_cnn)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            kernel[np.abs(kernel) < np.median(np.abs(kernel))] = 0.0
            layer.set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def clustered(sparse_cnn, digits):
    """sparse_cnn clustered to 8 values per kernel, trained one epoch."""
    keras.utils.set_random_seed(1)
    return fit(tfedge.cluster(sparse_cnn, clusters=8, per_channel=False), digits, lr=3e-4)


# ------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"clusters": 1}, "clusters must be an integer in [2, 256], got 1"),
        ({"clusters": 300}, "clusters must be an integer in [2, 256], got 300"),
        ({"clusters": "16"}, "clusters must be an integer, got '16'"),
        ({"preserve_sparsity": 1}, "preserve_sparsity must be True or False, got 1"),
        ({"per_channel": None}, "per_channel must be True or False, got None"),
    ],
)
def test_cluster_refuses_bad_arguments(small_cnn, kwargs, message):
    with pytest.raises(InputError) as info:
        tfedge.cluster(small_cnn, **kwargs)
    assert message in str(info.value)


def test_quantize_aware_checks_preserve_clusters(small_cnn):
    with pytest.raises(InputError, match="preserve_clusters must be True or False, got 'yes'"):
        tfedge.quantize_aware(small_cnn, preserve_clusters="yes")


def test_cluster_refuses_clustered_and_subclassed_models(clustered):
    with pytest.raises(ModelError, match="already clustered: .*strip_clustering"):
        tfedge.cluster(clustered)

    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelError, match="subclassed"):
        tfedge.cluster(Net())


def test_cluster_says_when_a_channel_has_too_few_weights(sparse_cnn):
    # 9 weights per conv channel, about half of them zero: k-means++ cannot place 8 centroids per sign
    with pytest.raises(ModelError, match="cannot place 8 clusters .* fewer weights than that"):
        tfedge.cluster(sparse_cnn, clusters=8, per_channel=True, preserve_sparsity=True)


# ------------------------------------------------------------------------------------ behaviour
def test_cluster_trains_to_few_values_keeps_zeros_and_strips_exactly(clustered, sparse_cnn, digits):
    assert [type(layer).__name__ for layer in clustered.layers] == ["ClusterWeights"] * 4  # TF-MOT wraps every one
    plain = tfedge.strip_clustering(clustered)
    assert [type(layer).__name__ for layer in plain.layers] == ["Conv2D", "MaxPooling2D", "Flatten", "Dense"]
    counts = distinct_weights(plain)
    assert set(counts) == {"conv", "logits"} and max(counts.values()) <= 8
    np.testing.assert_array_equal(plain.predict(digits.x_test, verbose=0), clustered.predict(digits.x_test, verbose=0))
    for name in ("conv", "logits"):  # preserve_sparsity: the zeros of sparse_cnn are still zeros
        before = sparse_cnn.get_layer(name).get_weights()[0] == 0
        after = plain.get_layer(name).get_weights()[0] == 0
        assert before.sum() > 0 and np.all(after[before])
    assert accuracy(plain.predict(digits.x_test, verbose=0), digits.y_test) > 0.85
    assert distinct_weights(sparse_cnn)["logits"] > 8  # the input model was not changed


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_clustered_model_saves_and_loads_exactly(clustered, sparse_cnn, digits, tmp_path, suffix):
    path = tmp_path / f"clustered{suffix}"
    tfedge.save_model(clustered, path)
    loaded = tfedge.load_model(path, trust=suffix == ".h5")
    assert tfedge.clustering.is_clustered(loaded)
    x = digits.x_test[:200]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), clustered.predict(x, verbose=0))
    stripped = tfedge.strip_clustering(loaded)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), clustered.predict(x, verbose=0))
    fit(loaded, digits, lr=3e-4)  # a reloaded model keeps training: still few values, zeros still zero
    again = tfedge.strip_clustering(loaded)
    assert max(distinct_weights(again).values()) <= 8
    for name in ("conv", "logits"):
        was_zero = sparse_cnn.get_layer(name).get_weights()[0] == 0
        assert np.all(again.get_layer(name).get_weights()[0][was_zero] == 0)


@pytest.fixture(scope="module")
def pcqat(clustered, digits):
    """PCQAT straight from the clustered (still wrapped) model: quantize_aware strips the wrappers."""
    keras.utils.set_random_seed(2)
    qat = tfedge.quantize_aware(clustered, preserve_clusters=True, preserve_sparsity=True)
    return fit(qat, digits, lr=1e-4)


def test_pcqat_int8_file_keeps_clusters_per_channel_and_zeros(pcqat, clustered, digits):
    tfl = tfedge.convert(pcqat, representative_data=digits.x_train)
    kernels = int8_kernels(tfl.content)
    # the conv kernel per channel (8 x 3x3x1) and the dense kernel per tensor (TF-MOT's 8-bit scheme)
    assert sorted((shape, per_channel) for shape, per_channel, _ in kernels) == [
        ((8, 3, 3, 1), True),
        ((10, 72), False),
    ]
    assert all(count <= 8 for _, _, count in kernels)
    model = parse(tfl.content)
    dense = next(t for t in model.subgraphs[0].tensors if t.shape == (10, 72))
    zeros = np.frombuffer(model.buffer_data(dense.buffer), np.int8) == 0
    assert zeros.mean() >= 0.45  # half the dense weights were zero before clustering, and still are
    run = tfedge.runtimes.TFLiteMicro(tfl).run(digits.x_test, measure_arena=False)
    assert accuracy(run.outputs, digits.y_test) > 0.8


def test_quantize_aware_without_preserve_clusters_loses_them(clustered, digits):
    keras.utils.set_random_seed(2)
    qat = fit(tfedge.quantize_aware(clustered), digits, lr=1e-3)
    tfl = tfedge.convert(qat, representative_data=digits.x_train)
    assert max(count for _, _, count in int8_kernels(tfl.content)) > 8


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_pcqat_model_saves_loads_and_keeps_training(pcqat, digits, tmp_path, suffix):
    path = tmp_path / f"pcqat{suffix}"
    tfedge.save_model(pcqat, path)
    loaded = tfedge.load_model(path, trust=suffix == ".h5")
    x = digits.x_test[:200]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pcqat.predict(x, verbose=0))
    fit(loaded, digits, lr=1e-4)  # the reloaded quantizers still keep the clusters while training
    assert max(distinct_weights(loaded).values()) <= 8
