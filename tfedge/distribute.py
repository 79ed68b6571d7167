"""tfedge on ``tf.distribute``: the strategy for ``--distribute``, who the chief of a multi-worker run
is (read from ``TF_CONFIG``), and a digest that shows the workers ended with the same weights.

>>> strategy, chief = strategy_for("none")
>>> chief
True
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re

from tfedge._keras import keras, tf

import numpy as np

from tfedge.checks import check_choice
from tfedge.errors import InputError, TfedgeError

#: The values of ``--distribute`` / ``strategy_for``.
STRATEGIES = ("none", "mirrored", "multiworker")


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """This process's place in a multi-worker cluster, as ``TF_CONFIG`` describes it."""

    type: str  # "chief" or "worker"
    index: int
    workers: int  # training tasks in the cluster: the chief (if any) and every worker
    chief: bool  # the one task that writes outputs


def cluster_task(raw: str | None) -> ClusterTask:
    """Read ``TF_CONFIG`` (the JSON text ``raw``) without starting TensorFlow: who this task is, who writes.

    The chief is the ``chief`` task, or worker 0 when the cluster has no ``chief`` job (TensorFlow's rule).

    >>> cluster = '{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, '
    >>> cluster_task(cluster + '"task": {"type": "worker", "index": 1}}')
    ClusterTask(type='worker', index=1, workers=2, chief=False)
    >>> cluster_task(cluster + '"task": {"type": "worker", "index": 2}}')
    Traceback (most recent call last):
    tfedge.errors.InputError: TF_CONFIG task worker 2 is not in the cluster, which lists 2 worker addresses ...
    """
    see = "see README 'Scaling out'"
    if not raw or not raw.strip():
        raise InputError(
            f"--distribute multiworker needs TF_CONFIG in the environment (the cluster and this task), got none: {see}"
        )
    try:
        config = json.loads(raw)
    except ValueError:
        raise InputError(f"TF_CONFIG is not valid JSON, got {raw[:60]!r}: {see}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise InputError(f"TF_CONFIG needs a 'cluster' object and a 'task' object, got {raw[:60]!r}: {see}")
    other = sorted(set(cluster) - {"chief", "worker"})
    if other:
        raise InputError(
            f"TF_CONFIG cluster has a '{other[0]}' job, which MultiWorkerMirroredStrategy does not use: "
            "list only 'chief' and 'worker' addresses"
        )
    for job, hosts in cluster.items():
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and ":" in h for h in hosts):
            raise InputError(f"TF_CONFIG cluster '{job}' must be a list of 'host:port' addresses, got {hosts!r}")
    if len(cluster.get("chief", [])) > 1:
        raise InputError(f"TF_CONFIG cluster 'chief' must list one address, got {len(cluster['chief'])}")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster:
        raise InputError(
            f"TF_CONFIG task type must be one of the cluster's jobs ({', '.join(sorted(cluster))}), got {kind!r}"
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise InputError(
            f"TF_CONFIG task {kind} {index} is not in the cluster, which lists {len(cluster[kind])} "
            f"{kind} addresses (index 0 to {len(cluster[kind]) - 1}): give every process its own "
            "task index"
        )
    chief = kind == "chief" or ("chief" not in cluster and index == 0)
    return ClusterTask(str(kind), index, sum(len(hosts) for hosts in cluster.values()), chief)


def lost_worker(task: ClusterTask, exc: Exception) -> TfedgeError:
    """One line for TensorFlow's error when another task of the cluster stopped in the middle of a run.

    >>> error = RuntimeError("in user code: ... ipv4:127.0.0.1:41211: Failed to connect to remote host")
    >>> print(lost_worker(ClusterTask("worker", 1, workers=2, chief=False), error))
    worker 1 lost the connection to another task of the multi-worker run (127.0.0.1:41211): look for ...
    """
    peer = re.search(r"\b(\d{1,3}(?:\.\d{1,3}){3}:\d+)", str(exc))
    return TfedgeError(
        f"{task.type} {task.index} lost the connection to another task of the multi-worker run"
        + (f" ({peer.group(1)})" if peer else "")
        + ": look for the first error in the other tasks' "
        "logs, then start the command again on every worker"
    )


@functools.cache
def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """One MirroredStrategy per process, reused by every ``--distribute mirrored`` run.

    Each new MirroredStrategy numbers its collective ops from the same keys, so a second one in the same
    process can fail with "Shape mismatch in the collective instance" (tensorflow/tensorflow#62790).
    """
    return tf.distribute.MirroredStrategy()


def strategy_for(distribute: str) -> tuple[tf.distribute.Strategy, bool]:
    """The strategy for ``--distribute`` and whether this process is the chief (the one that writes).

    ``multiworker`` reads ``TF_CONFIG`` and joins the cluster: it waits until every task has started.
    """
    check_choice(distribute, "distribute", STRATEGIES)
    if distribute == "none":
        return tf.distribute.get_strategy(), True
    if distribute == "mirrored":
        return _mirrored_strategy(), True
    task = cluster_task(os.environ.get("TF_CONFIG"))
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:
        if "program startup" not in str(exc):
            raise
        raise InputError(
            "--distribute multiworker must start before anything else runs TensorFlow in this "
            "process, but TensorFlow was already running: start `tfedge compress ... --distribute "
            "multiworker` as a process of its own on every worker"
        ) from None
    return strategy, task.chief


def weights_sha256(model: keras.Model) -> str:
    """SHA-256 over the shapes, dtypes and bytes of every weight of ``model``, in order (names left out).

    The workers of a multi-worker run keep their weights in sync, so each ends with the same digest.

    >>> model = keras.Sequential([keras.layers.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    >>> weights_sha256(model)[:16]
    '0c9382f210504e85'
    """
    digest = hashlib.sha256()
    for value in model.get_weights():
        value = np.ascontiguousarray(value)
        digest.update(f"{value.dtype.str}{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


__all__ = ["ClusterTask", "cluster_task", "lost_worker", "strategy_for", "weights_sha256"]
