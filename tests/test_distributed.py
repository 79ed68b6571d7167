"""Distributed training on tf.distribute: MirroredStrategy in-process (two logical CPU devices) and
MultiWorkerMirroredStrategy with two real `tfedge compress --distribute multiworker` processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tfedge._keras import tf

import numpy as np
import pytest

import tfedge
from tfedge import cli, keras
from tfedge.distribute import cluster_task, strategy_for, weights_sha256
from tfedge.errors import InputError
from tfedge.pipeline import PipelineConfig
from tfedge.recipes import DIGITS

from conftest import accuracy

ROOT = Path(__file__).resolve().parent.parent
TWO_CPUS = ["/cpu:0", "/cpu:1"]


def _copy(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with its weights, built in the current strategy scope (if any)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _scaling_out_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Scaling out\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the 'Scaling out' section has one Python example"
    return blocks[0]


# ------------------------------------------------------------------------------------------------
# MirroredStrategy, in-process


def test_readme_mirrored_example_prunes_and_distills_to_the_target(tmp_path, monkeypatch, small_cnn, digits):
    """The README's own example (a user's tf.data.Dataset, prune + PruningCallback inside a Distiller),
    run on two replicas: it reaches the sparsity target and keeps the accuracy."""
    code = _scaling_out_example()
    assert code.count("tf.distribute.MirroredStrategy()") == 1
    code = code.replace("tf.distribute.MirroredStrategy()", f"tf.distribute.MirroredStrategy({TWO_CPUS!r})")
    tfedge.save_model(small_cnn, tmp_path / "teacher.keras")
    teacher_weights = small_cnn.get_weights()
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md Scaling out", "exec"), ns)

    strategy, distiller, pruned = ns["strategy"], ns["distiller"], ns["pruned"]
    assert strategy.num_replicas_in_sync == 2
    assert distiller.distribute_strategy is strategy
    assert all(isinstance(v, tf.distribute.DistributedValues) for v in distiller.student.trainable_weights)
    report = tfedge.sparsity_report(pruned)
    assert set(report["layers"]) == {"conv", "logits"}
    for name, info in report["layers"].items():
        assert abs(info["sparsity"] - 0.6) <= 0.01, (name, info)
    assert accuracy(pruned.predict(digits.x_test, verbose=0), digits.y_test) >= 0.85
    for before, after in zip(teacher_weights, distiller.teacher.get_weights()):  # the teacher is never trained
        np.testing.assert_array_equal(before, after)


def test_run_pipeline_under_mirrored_strategy_end_to_end(tmp_path, small_cnn, digits):
    """The whole pipeline (distilled pruning, distilled QAT, int8, validation, files) on two replicas."""
    strategy = tf.distribute.MirroredStrategy(TWO_CPUS)
    with strategy.scope():
        teacher, student = _copy(small_cnn), _copy(small_cnn)
    out = tmp_path / "out"
    config = PipelineConfig.for_recipe(
        DIGITS,
        quick=True,
        out_dir=str(out),
        sparsity=0.5,
        distill_epochs=0,
        prune_epochs=1,
        qat_epochs=1,
        augment=False,
        calibration_samples=100,
        verbose=0,
        flash=None,
        ram=None,
        max_accuracy_drop=100.0,
    )  # ship the student, pruned
    report = tfedge.run_pipeline(config, digits, teacher=teacher, student=student, strategy=strategy, write=True)

    assert {"digits_student_int8.tflite", "digits_student_int8.h", "report.json", "MANIFEST.json"} <= {
        p.name for p in out.iterdir()
    }
    pruned = next(s for s in report["stages"] if s["stage"] == "pruned float32")
    assert abs(pruned["sparsity"] - 0.5) <= 0.01
    info = tfedge.inspect(out / "digits_student_int8.tflite")  # re-measured from the file written
    assert info.fully_int8
    kernels = list(info.weight_sparsity.values())  # conv and dense kernels
    assert len(kernels) == 2 and min(kernels) >= 0.49
    deployed = report["stages"][-1]
    assert deployed["accuracy"]["litert"] >= 0.85
    assert abs(deployed["accuracy"]["tflm"] - deployed["accuracy"]["litert"]) <= 0.01
    assert json.loads((out / "report.json").read_text())["student_weights_sha256"] == report["student_weights_sha256"]


def test_run_pipeline_trains_in_the_strategy_it_is_given(small_cnn, digits):
    """A teacher built outside the strategy is refused by the Distiller the pipeline compiles in that strategy:
    the pipeline does not silently train on one device."""
    strategy = tf.distribute.MirroredStrategy(TWO_CPUS)
    with strategy.scope():
        student = _copy(small_cnn)
    config = PipelineConfig.for_recipe(DIGITS, quick=True, distill_epochs=1, augment=False, verbose=0)
    with pytest.raises(InputError, match="teacher '.*' was created outside the scope of the MirroredStrategy"):
        tfedge.run_pipeline(config, digits, teacher=_copy(small_cnn), student=student, strategy=strategy, write=False)


# ------------------------------------------------------------------------------------------------
# helpers of the multi-worker path (no cluster needed)


def test_strategy_for_each_distribute_choice():
    strategy, chief = strategy_for("none")
    assert chief and strategy is tf.distribute.get_strategy()
    strategy, chief = strategy_for("mirrored")
    assert chief and isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy_for("mirrored")[0] is strategy  # one per process: a second one could clash (see above)
    with pytest.raises(InputError, match="distribute must be one of 'none', 'mirrored', 'multiworker', got 'tpu'"):
        strategy_for("tpu")


def test_multiworker_refused_once_tensorflow_is_running(monkeypatch):
    tf.constant(1.0) + 1.0  # TensorFlow's runtime is up in this process (as in any pytest session)
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}),
    )
    with pytest.raises(InputError, match="must start before anything else runs TensorFlow in this process"):
        strategy_for("multiworker")


def testcluster_task_names_the_chief():
    two = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert cluster_task(json.dumps({"cluster": two, "task": {"type": "worker", "index": 0}})).chief
    assert not cluster_task(json.dumps({"cluster": two, "task": {"type": "worker", "index": 1}})).chief
    with_chief = {"chief": ["127.0.0.1:3"], **two}
    task = cluster_task(json.dumps({"cluster": with_chief, "task": {"type": "chief", "index": 0}}))
    assert task.chief and task.workers == 3
    assert not cluster_task(json.dumps({"cluster": with_chief, "task": {"type": "worker", "index": 0}})).chief


@pytest.mark.parametrize(
    "raw, message",
    [
        (None, "needs TF_CONFIG in the environment"),
        ("{cluster", "TF_CONFIG is not valid JSON, got '{cluster'"),
        ('{"task": {"type": "worker"}}', "needs a 'cluster' object and a 'task' object"),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker"}}', "has a 'ps' job"),
        (
            '{"cluster": {"worker": "a:1"}, "task": {"type": "worker"}}',
            "must be a list of 'host:port' addresses, got 'a:1",
        ),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator"}}', "got 'evaluator'"),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
            "task worker 1 is not in the cluster",
        ),
    ],
)
def test_bad_tf_config_is_one_clear_error(raw, message):
    with pytest.raises(InputError, match=re.escape(message)):
        cluster_task(raw)


def test_cli_multiworker_without_tf_config_exits_2_before_loading_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = cli.main(
        [
            "compress",
            str(tmp_path / "missing.keras"),
            "--data",
            str(tmp_path / "missing.npz"),
            "--out",
            str(tmp_path / "out"),
            "--distribute",
            "multiworker",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs TF_CONFIG in the environment" in err
    assert not (tmp_path / "out").exists()


def test_weights_digest_changes_with_any_weight(small_cnn):
    copy = _copy(small_cnn)
    assert weights_sha256(copy) == weights_sha256(small_cnn)
    weights = copy.get_weights()
    weights[-1] = weights[-1].copy()
    weights[-1][0] = np.nextafter(weights[-1][0], np.float32(np.inf))  # one bias, one ulp
    copy.set_weights(weights)
    assert weights_sha256(copy) != weights_sha256(small_cnn)


# ------------------------------------------------------------------------------------------------
# MultiWorkerMirroredStrategy: two `tfedge compress` processes on 127.0.0.1


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tfedge_command() -> list[str]:
    exe = shutil.which("tfedge", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "tfedge"]


def _worker_env(tf_config: dict) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")
    }
    env.update(
        TF_CONFIG=json.dumps(tf_config),
        TF_CPP_MIN_LOG_LEVEL="2",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def test_two_workers_compress_in_lockstep_and_only_the_chief_writes(tmp_path, small_cnn, digits):
    shared = tmp_path / "shared"  # what every host has: the teacher and the training data
    shared.mkdir()
    tfedge.save_model(small_cnn, shared / "teacher.keras")
    tfedge.datasets.save_npz(shared / "train.npz", digits.x_train, digits.y_train)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    command = [
        *_tfedge_command(),
        "compress",
        str(shared / "teacher.keras"),
        "--data",
        str(shared / "train.npz"),
        "--sparsity",
        "0.5",
        "--epochs",
        "1",
        "--out",
        "out",
        "--distribute",
        "multiworker",
        "--channels",
        "0.25",
        "--max-accuracy-drop",
        "30",
    ]  # the smallest candidate within 30 pt ships, pruned
    hosts = [tmp_path / f"host{i}" for i in range(2)]  # each worker's working folder: the same relative --out
    procs, logs = [], []
    try:
        for i, host in enumerate(hosts):
            host.mkdir()
            logs.append((open(tmp_path / f"worker{i}.out", "w"), open(tmp_path / f"worker{i}.err", "w")))
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=host,
                    stdout=logs[i][0],
                    stderr=logs[i][1],
                    env=_worker_env({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 300  # a failed worker ends the wait at once (the other would wait for it)
        while time.monotonic() < deadline and any(p.poll() is None for p in procs) and not any(p.poll() for p in procs):
            time.sleep(0.5)
        codes = [p.poll() for p in procs]
    finally:
        for p in procs:  # whatever happened: stop and reap both workers (and anything they started)
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait(timeout=60)
        for files in logs:
            for f in files:
                f.close()
    out_text = [(tmp_path / f"worker{i}.out").read_text() for i in range(2)]
    err_text = [(tmp_path / f"worker{i}.err").read_text() for i in range(2)]
    assert codes == [0, 0], f"exit codes {codes}; stderr tails: {[e[-1500:] for e in err_text]}"

    # both joined one cluster: two replicas in sync, worker 0 the chief
    assert "worker 0 of 2 tasks, 2 replicas in sync; this chief writes out" in out_text[0]
    assert "worker 1 of 2 tasks, 2 replicas in sync; the chief writes the outputs" in out_text[1]
    # identical final student weights on both workers (and in the chief's report)
    digests = [
        re.findall(rf"worker {i} done; final student weights sha256 ([0-9a-f]{{64}})", out_text[i]) for i in range(2)
    ]
    assert len(digests[0]) == 1 and digests[0] == digests[1]
    report = json.loads((hosts[0] / "out" / "report.json").read_text())
    assert report["student_weights_sha256"] == digests[0][0]

    # only the chief wrote: its folder holds the outputs, the worker's folder stayed empty
    assert sorted(p.name for p in hosts[0].iterdir()) == ["out"]
    assert sorted(p.name for p in (hosts[0] / "out").iterdir()) == sorted(
        [
            "MANIFEST.json",
            "report.json",
            "report.md",
            "report.png",
            "teacher_student_int8.cc",
            "teacher_student_int8.h",
            "teacher_student_int8.tflite",
            "teacher_teacher_float32.tflite",
        ]
    )
    assert list(hosts[1].iterdir()) == []

    # the sparsity target is reached, in the report and in the int8 file itself
    pruned = next(s for s in report["stages"] if s["stage"] == "pruned float32")
    assert abs(pruned["sparsity"] - 0.5) <= 0.01
    info = tfedge.inspect(hosts[0] / "out" / "teacher_student_int8.tflite")
    assert info.fully_int8 and len(info.weight_sparsity) == 2 and min(info.weight_sparsity.values()) >= 0.49
    # the distributed Keras evaluation (gathered from both workers) agrees with LiteRT on the chief
    qat = next(s for s in report["stages"] if s["stage"].startswith("QAT"))
    deployed = report["stages"][-1]
    assert deployed["accuracy"]["litert"] >= max(0.7, report["search"]["floor"])  # one epoch, 50 % sparse, 6 filters
    assert abs(qat["accuracy"]["keras"] - deployed["accuracy"]["litert"]) <= 0.03
