"""tfedge.models: safe loading (Keras safe mode plus tfedge's own config scan), atomic save, model checks."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import tfedge
from tfedge import keras
from tfedge.errors import InputError, ModelError
from tfedge.models import check_graph_model


def _tiny():
    return keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3, name="d")], name="tiny")


def test_keras_round_trip_and_file_not_modified(tmp_path):
    model = _tiny()
    path = tmp_path / "m.keras"
    tfedge.save_model(model, path)
    before = path.read_bytes()
    loaded = tfedge.load_model(path)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name != "m.keras"]


def test_save_failure_keeps_existing_file(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"precious")

    class Unsaveable(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

        def get_config(self):
            raise RuntimeError("cannot serialize")

    model = keras.Sequential([keras.layers.Input((4,)), Unsaveable()])
    with pytest.raises(RuntimeError, match="cannot serialize"):
        tfedge.save_model(model, path)
    assert path.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


def test_lambda_layer_is_refused(tmp_path):
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Lambda(lambda t: t * 2, name="double")])
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(InputError, match=r"contains a Lambda layer 'double', refused because it runs arbitrary"):
        tfedge.load_model(path)


def _rewrite_config(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)


def test_tfsmlayer_and_file_vocabulary_are_refused(tmp_path):
    src = tmp_path / "ok.keras"
    _tiny().save(src)

    def to_tfsm(config):
        config["config"]["layers"][-1]["class_name"] = "TFSMLayer"

    def to_lookup(config):
        layer = config["config"]["layers"][-1]
        layer["class_name"] = "StringLookup"
        layer["config"]["vocabulary"] = "/etc/passwd"

    _rewrite_config(src, tmp_path / "tfsm.keras", to_tfsm)
    with pytest.raises(InputError, match="contains a TFSMLayer layer 'd'"):
        tfedge.load_model(tmp_path / "tfsm.keras")
    _rewrite_config(src, tmp_path / "lookup.keras", to_lookup)
    with pytest.raises(InputError, match="reads its vocabulary from the file '/etc/passwd'"):
        tfedge.load_model(tmp_path / "lookup.keras")


def test_h5_and_savedmodel_need_trust(tmp_path):
    model = _tiny()
    h5 = tmp_path / "m.h5"
    model.save(h5)
    with pytest.raises(InputError, match="Keras cannot load safely .*--trust-model"):
        tfedge.load_model(h5)
    assert tfedge.load_model(h5, trust=True).output_shape == (None, 3)
    sm = tmp_path / "sm"
    model.save(sm, save_format="tf")
    with pytest.raises(InputError, match="is a SavedModel, which Keras cannot load safely"):
        tfedge.load_model(sm)


@pytest.mark.parametrize(
    "content, message",
    [(b"not a zip at all", "not a .keras archive"), (b"", "is empty")],
)
def test_bad_keras_files(tmp_path, content, message):
    path = tmp_path / "bad.keras"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        tfedge.load_model(path)


def test_missing_and_unknown(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        tfedge.load_model(tmp_path / "nope.keras")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown extension '.onnx'"):
        tfedge.load_model(tmp_path / "m.onnx")
    with pytest.raises(InputError, match="is a directory but not a SavedModel"):
        tfedge.load_model(tmp_path)


def test_subclassed_model_is_named():
    class MyNet(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ModelError, match=r"subclassed model \(MyNet\).*keras.Model\(inputs, outputs\)"):
        check_graph_model(MyNet())
    check_graph_model(_tiny())
    inp = keras.Input((4,))
    check_graph_model(keras.Model(inp, keras.layers.Dense(2)(inp)))
