"""tfedge.tflite: the one TFLite model, tensor description and "path, bytes or model -> bytes" (no TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tfedge
from tfedge.errors import InputError
from tfedge.flatbuffer import parse
from tfedge.tflite import QUANTIZATION_MODES, TensorInfo, TFLiteModel, guess_quantization, model_bytes, tiny_int8_model


def test_tiny_model_runs_on_litert_and_its_description_matches_litert_details():
    content = tiny_int8_model()
    model = TFLiteModel(content)
    it = Interpreter(model_content=content)
    it.allocate_tensors()
    for ours, theirs in ((model.inputs, it.get_input_details()), (model.outputs, it.get_output_details())):
        assert [TensorInfo.from_details(d, "m", "tensor") for d in theirs] == list(ours)
        for info, d in zip(ours, theirs, strict=True):
            details = info.details()
            assert details["dtype"] == d["dtype"] and details["shape"] == tuple(d["shape"])
            assert (details["scale"], details["zero_point"]) == pytest.approx(d["quantization"])
    assert model.input_details == [t.details() for t in model.inputs]
    assert guess_quantization(parse(content)) == model.quantization == "int8"


def test_tensor_info_to_dict_is_json_and_quantize_round_trips():
    info = TFLiteModel(tiny_int8_model()).inputs[0]
    data = info.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert list(data) == ["name", "index", "shape", "dtype", "scale", "zero_point"]
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    assert np.abs(info.dequantize(info.quantize(x)) - x).max() <= info.scale / 2 + 1e-6
    with pytest.raises(AttributeError):
        info.scale = 1.0  # frozen


def test_model_bytes_takes_a_path_bytes_or_model_and_names_the_source(tmp_path):
    content = tiny_int8_model()
    path = tmp_path / "tiny.tflite"
    path.write_bytes(content)
    model = TFLiteModel(content, source="my model")
    assert model_bytes(path) == (content, f"TFLite model '{path}'")
    assert model_bytes(str(path)) == (content, f"TFLite model '{path}'")
    assert model_bytes(bytearray(content)) == (content, "TFLite model (bytes)")
    assert model_bytes(model) == (content, "my model")
    with pytest.raises(InputError, match=r"^TFLite model \(bytes\) is not a valid TFLite model: .*truncated"):
        model_bytes(content[: len(content) // 2])
    with pytest.raises(InputError, match="model must be a .tflite path, its bytes or a tfedge.TFLiteModel, got int"):
        model_bytes(3)
    with pytest.raises(InputError, match=r"is a Keras model \(Sequential\); .*tfedge.convert"):
        model_bytes(tfedge.keras.Sequential([tfedge.keras.layers.Input((2,)), tfedge.keras.layers.Dense(1)]))


def test_the_public_names_stay_where_users_find_them():
    assert tfedge.TFLiteModel is TFLiteModel
    assert tfedge.conversion.MODES == QUANTIZATION_MODES
    assert tfedge.runtimes.TensorInfo is TensorInfo
    assert tfedge.inspection.non_int8_ops is tfedge.tflite.non_int8_ops
