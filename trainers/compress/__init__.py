"""Compression techniques: weight pruning, neuron pruning, fixed-point / uniform / binary / ternary
quantization and low-rank embedding tables, composed by :func:`compress` with a fine-tune in the loop."""

from __future__ import annotations

from trainers.compress._pipeline import CompressionReport, compress, compressible_layers
from trainers.compress.lowrank import Factored, factorize
from trainers.compress.neurons import prune_neurons, unit_importance
from trainers.compress.prune import Pruner, zhu_gupta_sparsity
from trainers.compress.quantize import (
    SCHEMES,
    Binary,
    Encoded,
    FixedPoint,
    Float32,
    Quantizer,
    Ternary,
    Uniform,
    make_quantizer,
)

__all__ = [
    "SCHEMES", "Binary", "CompressionReport", "Encoded", "Factored", "FixedPoint", "Float32", "Pruner", "Quantizer",
    "Ternary", "Uniform", "compress", "compressible_layers", "factorize", "make_quantizer", "prune_neurons",
    "unit_importance", "zhu_gupta_sparsity",
]
