"""tfedge: prune, quantize, distill and convert Keras models to fully int8 TFLite, proven on LiteRT
and TFLite Micro.

Public names are loaded on first use, so ``import tfedge`` (and ``tfedge --help``) stays fast and
TensorFlow is imported only by the modules that need it, always through ``tfedge._keras``.

>>> import tfedge
>>> tfedge.datasets.digits().x_train.shape
(1347, 8, 8, 1)
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("tfedge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# public name -> module that defines it
_EXPORTS = {
    "keras": "tfedge._keras",
    "InputError": "tfedge.errors",
    "ModelError": "tfedge.errors",
    "TfedgeError": "tfedge.errors",
    "ConversionError": "tfedge.errors",
    "ValidationError": "tfedge.errors",
    "CheckFailed": "tfedge.errors",
    "load_model": "tfedge.models",
    "save_model": "tfedge.models",
    "prune": "tfedge.pruning",
    "strip": "tfedge.pruning",
    "sparsity_report": "tfedge.pruning",
    "PruningCallback": "tfedge.pruning",
    "prune_channels": "tfedge.channels",
    "channel_report": "tfedge.channels",
    "ChannelPruningCallback": "tfedge.channels",
    "quantize_aware": "tfedge.quantization",
    "cluster": "tfedge.clustering",
    "strip_clustering": "tfedge.clustering",
    "lut_compress": "tfedge.lut",
    "Distiller": "tfedge.distillation",
    "convert": "tfedge.conversion",
    "TFLiteModel": "tfedge.tflite",
    "inspect": "tfedge.inspection",
    "validate": "tfedge.validation",
    "export_c_array": "tfedge.export",
    "from_keras3": "tfedge.keras3",
    "to_keras3": "tfedge.keras3",
    "PipelineConfig": "tfedge.pipeline",
    "run_pipeline": "tfedge.pipeline",
    "compress": "tfedge.pipeline",
}
# one submodule a line, so that parallel branches adding one merge without conflicts
_SUBMODULES = (
    "checks",
    "errors",
    "files",
    "tables",
    "graph",
    "datasets",
    "distribute",
    "pruning",
    "channels",
    "clustering",
    "quantize_configs",
    "quantization",
    "distillation",
    "keras3",
    "models",
    "tflite",
    "native",
    "conversion",
    "lut",
    "inspection",
    "runtimes",
    "validation",
    "export",
    "candidates",
    "budget",
    "recipes",
    "pipeline",
    "report",
)

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"tfedge.{name}")
    else:
        raise AttributeError(f"module 'tfedge' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
