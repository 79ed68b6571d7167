"""Candidate transformations for a budget search: a Keras model in, a trained int8 TFLite model out.

Each composes the public feature functions (clustering, quantization-aware training, conversion), so
the search prices a candidate with exactly what a user would call by hand.
"""

from __future__ import annotations

from typing import Any

from tfedge._keras import keras

import numpy as np

from tfedge.checks import check_int, check_number
from tfedge.clustering import cluster
from tfedge.conversion import convert
from tfedge.quantization import quantize_aware


def cluster_int8(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    clusters: int = 16,
    preserve_sparsity: bool = True,
    epochs: int = 3,
    qat_epochs: int = 2,
    learning_rate: float = 1e-4,
    batch_size: int = 32,
    loss: Any = None,
    verbose: int = 0,
) -> Any:
    """Cluster, train, strip, cluster-preserving QAT, train, convert: an int8 :class:`tfedge.TFLiteModel`
    whose kernels hold at most ``clusters`` values per channel, ready for :func:`tfedge.lut_compress`.

    The candidate transformation a budget search calls (then ``tfedge.lut.lut_report(tfl, bits="auto")``
    prices it in flash and arena bytes). ``loss`` defaults to the model's compiled loss, else sparse
    categorical cross-entropy on logits; ``x`` / ``y`` train both stages and ``x`` calibrates.
    """
    epochs = check_int(epochs, "epochs", minimum=1)
    qat_epochs = check_int(qat_epochs, "qat_epochs", minimum=1)
    learning_rate = check_number(learning_rate, "learning_rate")
    if loss is None:
        loss = getattr(model, "loss", None) or keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train(net: keras.Model, n: int) -> keras.Model:
        net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
        net.fit(x, y, epochs=n, batch_size=batch_size, verbose=verbose)
        return net

    clustered = train(cluster(model, clusters, preserve_sparsity=preserve_sparsity), epochs)
    qat = quantize_aware(clustered, preserve_clusters=True, preserve_sparsity=preserve_sparsity)
    return convert(train(qat, qat_epochs), representative_data=x)


__all__ = ["cluster_int8"]
