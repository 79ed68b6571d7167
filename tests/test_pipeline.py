"""The main job end to end: `tfedge demo --quick` and `tfedge compress`, re-measured independently; the pipeline's
config, records and recipes in fast unit tests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

import tfedge
from tfedge import cli, keras
from tfedge.pipeline import PipelineConfig, RunContext, StageRecord
from tfedge.recipes import DIGITS, shifted

ROOT = Path(__file__).resolve().parent.parent
DEMO_FILES = {
    "digits_teacher_float32.tflite",
    "digits_student_int8.tflite",
    "digits_student_int8.h",
    "digits_student_int8.cc",
    "report.json",
    "report.md",
    "report.png",
    "MANIFEST.json",
}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def test_demo_writes_every_output(demo_dir, capsys):
    assert {p.name for p in demo_dir.iterdir()} == DEMO_FILES
    report = json.loads((demo_dir / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == [
        "teacher float32",
        "teacher int8 (PTQ baseline)",
        "student float32 (distilled)",
        "QAT (fake-quant Keras)",
        "deployed int8",
    ]
    assert report["fully_int8"] is True
    search = report["search"]
    assert search["budget"] == {"flash": 3500, "ram": 4096} and search["chosen"]
    chosen = next(c for c in search["candidates"] if c["name"] == search["chosen"])
    assert chosen["bytes"] == report["stages"][-1]["bytes"] <= 3500 and chosen["arena_bytes"] <= 4096
    assert chosen["accuracy"] >= search["floor"]
    assert "## Candidates (budget search)" in (demo_dir / "report.md").read_text()
    md = (demo_dir / "report.md").read_text()
    assert "| deployed int8 |" in md and "acc tflm" in md
    assert (demo_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_figures_match_an_independent_remeasurement(demo_dir, digits):
    report = json.loads((demo_dir / "report.json").read_text())
    deployed = report["stages"][-1]
    content = (demo_dir / "digits_student_int8.tflite").read_bytes()
    assert deployed["bytes"] == len(content)
    # accuracy: our own LiteRT loop over the shipped file, not tfedge.validate
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zero = inp["quantization"]
    correct = 0
    for x, y in zip(digits.x_test, digits.y_test, strict=True):
        q = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)[None]
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        correct += int(np.argmax(interp.get_tensor(out["index"])[0]) == y)
    assert deployed["accuracy"]["litert"] == pytest.approx(correct / len(digits.y_test), abs=1e-9)
    # sparsity and int8-ness from the flatbuffer itself
    info = tfedge.inspect(content)
    assert info.fully_int8 and info.sparsity == pytest.approx(deployed["sparsity"], abs=1e-9)
    assert deployed["compression"] == pytest.approx(report["stages"][0]["bytes"] / len(content))
    # the C array holds the same bytes and the measured arena
    header = (demo_dir / "digits_student_int8.h").read_text()
    assert f"digits_student_int8_arena_size = {deployed['arena_bytes']}" in header.replace("u;", ";")


def test_manifest_hashes_match_files(demo_dir):
    manifest = json.loads((demo_dir / "MANIFEST.json").read_text())
    names = {entry["file"] for entry in manifest["files"]}
    assert names == DEMO_FILES - {"report.json", "report.md", "report.png", "MANIFEST.json"}
    for entry in manifest["files"]:
        data = (demo_dir / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]


def test_committed_tflite_models_match_their_manifest(digits):
    """The shipped models in tflite_models/ still are what MANIFEST.json says, and still score it."""
    folder = ROOT / "tflite_models"
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    checked = 0
    for entry in manifest["files"]:
        data = (folder / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{entry['file']} drifted from MANIFEST.json"
        assert len(data) == entry["bytes"]
        if "accuracy" in entry:
            result = tfedge.validate(data, digits.x_test, digits.y_test, runtimes=tuple(entry["accuracy"]), verbose=0)
            for runtime, expected in entry["accuracy"].items():
                assert result.accuracy[runtime] == pytest.approx(expected, abs=1e-9)
            checked += 1
    assert checked == 1


def test_committed_demo_states_its_distance_to_the_target():
    """The issue's target (<= 3,500 B, >= 97.9 % on both runtimes, arena <= 4 KB), on the committed deployed model:
    met, or the report states by how much it misses, and the numbers agree with the shipped file."""
    report = json.loads((ROOT / "tflite_models" / "report.json").read_text())
    deployed, target = report["stages"][-1], report["search"]["target"]
    assert (target["bytes"], target["accuracy"], target["arena_bytes"]) == (3500, 0.979, 4096)
    size = (ROOT / "tflite_models" / "digits_student_int8.tflite").stat().st_size
    worst = min(deployed["accuracy"]["litert"], deployed["accuracy"]["tflm"])
    assert size == deployed["bytes"] and report["fully_int8"]
    assert target["bytes_over"] == max(0, size - 3500)
    assert target["accuracy_short"] == pytest.approx(max(0.0, 0.979 - worst), abs=1e-6)
    assert target["arena_over"] == max(0, deployed["arena_bytes"] - 4096)
    assert target["met"] == (size <= 3500 and worst >= 0.979 and deployed["arena_bytes"] <= 4096)
    assert ("Target (<= 3,500 B, >= 97.9 %, arena <= 4,096 B): " + ("met" if target["met"] else "not met")) in report[
        "summary"
    ]


def test_shifted_copies_are_one_pixel_moves():
    x = np.zeros((1, 3, 3, 1), np.float32)
    x[0, 1, 1, 0] = 1.0
    xs, ys = shifted(x, np.array([3]))
    centres = sorted(tuple(np.argwhere(img[..., 0] == 1.0)[0]) for img in xs)
    assert centres == [(0, 1), (1, 0), (1, 1), (1, 2), (2, 1)]
    assert ys.tolist() == [3] * 5


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sparsity": 1.2}, "sparsity must be in [0, 1), got 1.2: e.g. 0.5"),
        ({"flash": "8 GB"}, "flash must be a size in bytes such as 8000, 8KB or 8KiB, got '8 GB'"),
        ({"max_accuracy_drop": -1}, "max_accuracy_drop must be in [0, 100], got -1"),
        ({"channel_ratios": (0.5, 1.0)}, "channel_ratios must be in [0, 1), got 1.0"),
        ({"qat_epochs": 0}, "qat_epochs must be an integer >= 1, got 0"),
        ({"distill_epochs": 2.5}, "distill_epochs must be an integer, got 2.5"),
        ({"temperature": 0}, "temperature must be in (0, inf), got 0: e.g. 4.0"),
        ({"alpha": -0.1}, "alpha must be in [0, 1], got -0.1"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number, got nan"),
        ({"augment": 1}, "augment must be True or False, got 1"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(tfedge.InputError, match=re.escape(message)):
        PipelineConfig(**overrides)


def test_config_round_trips_and_takes_the_recipe_settings():
    config = PipelineConfig.for_recipe(DIGITS, out_dir="build", runtimes=["litert"])
    assert PipelineConfig(**dataclasses.asdict(config)) == config
    assert config.runtimes == ("litert",) and config.out_dir == "build"
    assert {k: getattr(config, k) for k in DIGITS.settings} == dict(DIGITS.settings)
    quick = PipelineConfig.for_recipe(DIGITS, quick=True)
    assert quick.sparsity == DIGITS.settings["sparsity"] and quick.prune_epochs == DIGITS.quick_settings["prune_epochs"]
    assert PipelineConfig().name == "model" and not PipelineConfig().augment  # no digits defaults without the recipe
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sparsity = 0.5


def test_stage_record_dict_leaves_out_what_the_stage_did_not_measure():
    record = StageRecord(
        "pruned float32",
        params=100,
        sparsity=0.5,
        bytes=400,
        gzip_bytes=300,
        accuracy={"keras": 0.9},
        seconds=1.5,
        model=object(),
    )
    assert list(record.to_dict()) == ["stage", "params", "sparsity", "bytes", "gzip_bytes", "accuracy", "seconds"]
    assert record.relative_to(2000).to_dict()["compression"] == 5.0
    assert "model" not in record.relative_to(2000).to_dict()
    assert record.summary() == "pruned float32: keras 90.0 %; 400 bytes; sparsity 50 % (1.5 s)"


def _user_teacher(digits, softmax=True):
    """A user's own trained model: functional, with its softmax fused into the last Dense (as users write it)."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(10, activation="softmax" if softmax else None)(h)
    teacher = keras.Model(inputs, outputs, name="user_net")
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax), metrics=["accuracy"])
    teacher.fit(digits.x_train, digits.y_train, epochs=10, batch_size=64, verbose=0)
    return teacher


@pytest.fixture(scope="module")
def user_files(tmp_path_factory, digits):
    folder = tmp_path_factory.mktemp("user")
    keras.utils.set_random_seed(0)
    _user_teacher(digits).save(folder / "user_net.keras")
    tfedge.datasets.save_npz(folder / "train.npz", digits.x_train, digits.y_train)
    tfedge.datasets.save_npz(folder / "val.npz", digits.x_test, digits.y_test)
    return folder


def _remeasured_accuracy(path, digits):
    result = tfedge.validate(path.read_bytes(), digits.x_test, digits.y_test, runtimes=("litert", "tflm"), verbose=0)
    return min(result.accuracy.values()), result.arena_bytes


def test_compress_cli_with_a_flash_budget_ships_the_most_accurate_candidate_that_fits(
    tmp_path, user_files, digits, capsys
):
    model_path = user_files / "user_net.keras"
    before = model_path.read_bytes()
    out = tmp_path / "out"
    code = cli.main(
        [
            "compress",
            str(model_path),
            "--data",
            str(user_files / "train.npz"),
            "--val",
            str(user_files / "val.npz"),
            "--flash",
            "6KB",
            "--ram",
            "4KiB",
            "--max-accuracy-drop",
            "2",
            "--channels",
            "0.5",
            "--epochs",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert model_path.read_bytes() == before, "the user's model file is never modified"
    report = json.loads((out / "report.json").read_text())
    search, deployed = report["search"], report["stages"][-1]
    assert search["budget"] == {"flash": 6000, "ram": 4096}
    shipped = out / "user_net_student_int8.tflite"
    accuracy, arena = _remeasured_accuracy(shipped, digits)  # re-measured from the file, independently
    assert shipped.stat().st_size == deployed["bytes"] <= 6000 and arena == deployed["arena_bytes"] <= 4096
    assert accuracy == pytest.approx(min(deployed["accuracy"].values()))
    assert accuracy >= search["floor"] == pytest.approx(search["baseline"]["accuracy"] - 0.02)
    holding = [  # trained, fit, and surely within the drop on new data (the baseline is exempt: it does not fit)
        c
        for c in search["candidates"]
        if c.get("accuracy") is not None
        and c["bytes"] <= 6000
        and c["arena_bytes"] <= 4096
        and c["drop_bound"] <= 0.02 + 1e-12
    ]
    assert max(c["accuracy"] for c in holding) == pytest.approx(accuracy)  # the most accurate that fits
    over = [c for c in search["candidates"] if c["bytes"] > 6000]
    assert over and all(c["status"] == "does not fit" for c in over if c["name"] != "teacher int8 (PTQ)")
    assert report["fully_int8"] and (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    collapsed = [c["name"] for c in search["candidates"] if c["status"].startswith("collapsed")]
    if collapsed:  # 3 epochs are few for a small student: the run says so, and what to change
        assert f"note: {len(collapsed)} candidate(s) collapsed in training" in capsys.readouterr().out
    # the user's data, not the demo's digits, and accuracies measured on validation samples
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["dataset"].startswith("the user's data: 1,347 training and 450 validation samples (given)")
    assert report["data"]["split"] == "validation" and "; 450 validation samples, total" in report["summary"]


def test_a_collapsed_student_stops_naming_the_stage_and_ships_nothing(tmp_path, user_files, capsys):
    """The issue's case: the user's tiny student (two stride-2 Conv2D, GlobalAveragePooling2D, softmax Dense) under
    a softmax teacher distils to chance; compress exits 1 naming the stage and the likely causes, no model shipped."""
    student = keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="tiny",
    )
    student.save(tmp_path / "tiny.keras")
    out = tmp_path / "out"
    capsys.readouterr()
    code = cli.main(
        [
            "compress",
            str(user_files / "user_net.keras"),
            "--data",
            str(user_files / "train.npz"),
            "--student",
            str(tmp_path / "tiny.keras"),
            "--epochs",
            "2",
            "--channels",
            "0.5",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert re.search(r"stage 'distillation' failed: the accuracy of 'tiny' collapsed to \d+\.\d % .*chance", err)
    assert "learning rate" in err and "softmax head" in err and "too small" in err
    assert not (out / "user_net_student_int8.tflite").exists()
    assert (out / "user_net_teacher_float32.tflite").exists()  # the completed stages' outputs are kept


def test_compress_never_ships_below_the_floor(tmp_path, digits, user_files):
    """Only a built-in student fits the budget (no narrower teacher is asked for) and it cannot hold the teacher's
    accuracy in one epoch: compress
    raises CheckFailed with the table of what was tried, writes the report and no deployed model."""
    out = tmp_path / "out"
    with pytest.raises(tfedge.CheckFailed) as info:
        tfedge.pipeline.compress(
            tfedge.load_model(user_files / "user_net.keras"),
            (digits.x_train, digits.y_train),
            val=(digits.x_test, digits.y_test),
            flash="3KB",
            max_accuracy_drop=0.0,
            epochs=1,
            channels=(),
            student_widths=(4,),
            out_dir=str(out),
            name="small",
            verbose=0,
        )
    first, table = str(info.value).split("\n", 1)
    assert "no model within flash <= 3,000 B reaches the accuracy floor" in first
    assert "student_w4" in table and "teacher int8 (PTQ)" in table
    assert not (out / "small_student_int8.tflite").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["search"]["chosen"] is None and report["summary"] == first


def test_compress_cli_exit_codes(tmp_path, user_files, capsys):
    args = [
        "compress",
        str(user_files / "user_net.keras"),
        "--data",
        str(user_files / "train.npz"),
        "--out",
        str(tmp_path / "out"),
    ]
    assert cli.main([*args, "--flash", "8 GB"]) == 2
    assert "--flash must be a size in bytes such as 8000, 8KB or 8KiB, got '8 GB'" in capsys.readouterr().err
    assert cli.main([*args, "--max-accuracy-drop", "-1"]) == 2
    assert cli.main([*args, "--flash", "500", "--channels", "0.5"]) == 1
    err = capsys.readouterr().err
    assert re.search(
        r"no candidate fits flash <= 500 B .*the smallest file is [\d,]+ B \('.*'\), over the flash "
        r"budget of 500 B by [\d,]+ B",
        err,
    )
    assert not (tmp_path / "out" / "user_net_student_int8.tflite").exists()


def test_a_residual_1d_model_goes_through_compress(tmp_path, digits):
    """Not digits-shaped: the rows of each digit as a sequence (8 steps x 8 features), a Conv1D residual network."""
    x_train, x_test = digits.x_train[..., 0], digits.x_test[..., 0]
    inputs = keras.Input((8, 8))
    h = keras.layers.Conv1D(16, 3, padding="same", activation="relu")(inputs)
    r = keras.layers.Conv1D(16, 3, padding="same")(h)
    h = keras.layers.ReLU()(keras.layers.Add()([h, r]))
    h = keras.layers.GlobalAveragePooling1D()(h)
    teacher = keras.Model(inputs, keras.layers.Dense(10)(h), name="seq_res")
    teacher.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    teacher.fit(x_train, digits.y_train, epochs=20, batch_size=32, verbose=0)
    out = tmp_path / "out"
    report = tfedge.pipeline.compress(
        teacher,
        (x_train, digits.y_train),
        val=(x_test, digits.y_test),
        epochs=4,
        channels=0.5,
        student_widths=(8,),
        out_dir=str(out),
        verbose=0,
    )
    search, deployed = report["search"], report["stages"][-1]
    assert report["fully_int8"] and deployed["bytes"] <= search["baseline"]["bytes"]
    assert min(deployed["accuracy"].values()) >= search["floor"]
    names = {c["name"] for c in search["candidates"]}
    assert {"seq_res -50% channels", "built-in student_w8", "seq_res (QAT)"} <= names
    assert abs(deployed["accuracy"]["litert"] - deployed["accuracy"]["tflm"]) <= 0.01
    chosen = next(c for c in search["candidates"] if c["name"] == search["chosen"])
    trained = [c for c in search["candidates"] if c.get("accuracy") is not None and c["name"] != search["baseline"]]
    assert all(0.0 <= c["drop_bound"] < 1.0 for c in trained if c["name"] != "teacher int8 (PTQ)")
    assert chosen["name"] == "teacher int8 (PTQ)" or chosen["drop_bound"] <= 0.01 + 1e-12


def test_on_few_validation_samples_a_smaller_model_must_match_the_baseline(tmp_path, digits, user_files):
    """60 validation samples (one is 1.7 points): a narrower copy that comes within a point of the baseline there
    is not shipped as within a point on new data unless it matches the baseline; its drop bound, recomputed here
    from the shipped file and the teacher's own int8 model sample by sample, says so."""
    teacher = tfedge.load_model(user_files / "user_net.keras")
    x_val, y_val = digits.x_test[:60], digits.y_test[:60]
    report = tfedge.pipeline.compress(
        teacher,
        (digits.x_train, digits.y_train),
        val=(x_val, y_val),
        epochs=2,
        channels=(0.5,),
        student_widths=(),
        out_dir=str(tmp_path / "out"),
        name="few",
        verbose=0,
    )
    search = report["search"]
    assert search["confidence"] == 0.8
    shipped = (tmp_path / "out" / "few_student_int8.tflite").read_bytes()
    ptq = tfedge.convert(teacher, representative_data=digits.x_train, calibration_samples=500)
    runs = [tfedge.validate(m, x_val, y_val, runtimes=("litert-ref",), verbose=0) for m in (shipped, ptq)]
    correct = [r.predictions["litert-ref"] == y_val for r in runs]
    bound = tfedge.budget.drop_bound(*correct)
    assert bound <= 0.01 + 1e-12 or search["chosen"] == "teacher int8 (PTQ)"
    for c in search["candidates"]:
        if c.get("drop_bound") is not None and c["drop_bound"] > 0.01:
            assert c["name"] != search["chosen"]
            if c["accuracy"] >= search["floor"]:  # above the floor here, but not surely on new data
                assert "not surely within the drop" in c["status"]
    # equal on 60 samples is not enough: only a candidate right where the baseline is wrong can pass
    assert tfedge.budget.drop_bound(correct[1], correct[1]) > 0.01


def test_stage_context_names_the_stage_and_what_was_kept(tmp_path, digits):
    run = RunContext.prepare(PipelineConfig(out_dir=str(tmp_path / "run")), digits)
    assert (tmp_path / "run").is_dir() and len(run.x_fit) == len(digits.x_train)  # no augmentation by default
    with pytest.raises(
        tfedge.ModelError,
        match=r"^stage 'pruning' failed: bad layer; the outputs of the completed "
        r"stages are kept in .*run$",
    ):
        with run.stage("pruning"):
            raise tfedge.ModelError("bad layer")
    quiet = RunContext.prepare(PipelineConfig(augment=True), digits, recipe=DIGITS, write=False)
    assert len(quiet.x_fit) == 5 * len(digits.x_train)  # the recipe's one-pixel shifts
    with pytest.raises(tfedge.InputError, match=r"^stage 'teacher' failed: x$"):
        with quiet.stage("teacher"):
            raise tfedge.InputError("x")
    with pytest.raises(ValueError, match="^not ours$"):  # only tfedge's own errors are reworded
        with quiet.stage("teacher"):
            raise ValueError("not ours")


def test_compress_refuses_bad_arrays_before_training(small_cnn, digits):
    x, y = digits.x_train[:50], digits.y_train[:50]
    with pytest.raises(tfedge.InputError, match=r"data: samples have shape 64, the model expects 8x8x1"):
        tfedge.pipeline.compress(small_cnn, (x.reshape(50, 64), y), out_dir="unused", write=False)
    with pytest.raises(tfedge.InputError, match="val must be a pair"):
        tfedge.pipeline.compress(small_cnn, (x, y), val=x, out_dir="unused", write=False)
    with pytest.raises(tfedge.InputError, match="data has 5 samples; give at least 10"):
        tfedge.pipeline.compress(small_cnn, (x[:5], y[:5]), out_dir="unused", write=False)
    with pytest.raises(tfedge.InputError, match="epochs must be an integer >= 1, got 0"):
        tfedge.pipeline.compress(small_cnn, (x, y), epochs=0, out_dir="unused", write=False)
