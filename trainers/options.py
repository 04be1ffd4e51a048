"""The choices and limits of the trainers' components, in one place and without importing torch.

Each compression technique, optimizer and codec is a small class or function in its own module; what a
user may choose among them, and the numeric limits those classes enforce, are declared here once:

* the trainers check their arguments against these tables (``make_quantizer``, ``Pruner``,
  ``make_optimizer``, ``prune_neurons``), and
* the config schema (``search/schema.py``) reads them to build its allowed values, so ``python -m
  search.sweep`` refuses before a study exists exactly what a trainer would refuse in a trial.

The module imports nothing heavy, so config errors stay instant (torch takes seconds to import).

Example:
    >>> QUANT_SCHEMES["fixed_point"].bits
    (2, 16)
    >>> QUANT_SCHEMES["fixed_point"].bits_problem(1)
    'fixed_point needs 2..16 bits or 32 (= no quantization)'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BITS_OFF", "CLIP_RANGE", "CODECS", "CSV_SEPARATORS", "DEFAULT_NEGATIVES", "LOSSES", "NEURON_IMPORTANCES",
    "NEURONS_MAX_RATIO", "OPTIMIZERS",
    "PRUNE_CRITERIA", "PRUNE_MAX_RATIO", "PRUNE_SCHEDULES", "PRUNE_SCOPES", "QUANT_SCHEMES", "ROUNDINGS",
    "SIDE_BITS", "SchemeSpec", "THRESHOLD_MAX", "GRANULARITIES",
]

#: ``compress.quant.bits=32`` switches a bit-width scheme off (float32 weights)
BITS_OFF = 32


@dataclass(frozen=True)
class SchemeSpec:
    """What ``compress.quant.scheme=<name>`` accepts.

    Attributes:
        name: the scheme's config value (also the scheme stored in the artifact, except ``none``: fp32).
        bits: inclusive range of ``compress.quant.bits`` the scheme quantizes to, or ``None`` when the
            scheme fixes its own width (binary, ternary: 1 bit) or stores float32 (none); ``bits`` is then
            ignored.
        doc: one line for the README and ``--help``.
    """

    name: str
    bits: tuple[int, int] | None
    doc: str

    def bits_problem(self, bits: int) -> str | None:
        """``None`` when this scheme runs with ``bits``, else the rule it breaks."""
        if self.bits is None or bits == BITS_OFF or self.bits[0] <= bits <= self.bits[1]:
            return None
        return f"{self.name} needs {self.bits[0]}..{self.bits[1]} bits or {BITS_OFF} (= no quantization)"


#: ``compress.quant.scheme`` -> its spec (the quantizer classes in trainers/compress/quantize.py follow it)
QUANT_SCHEMES: dict[str, SchemeSpec] = {s.name: s for s in (
    SchemeSpec("none", None, "float32 weights (no quantization)"),
    SchemeSpec("fixed_point", (2, 16), "signed Qm.n with a power-of-two step (one sign bit, so >= 2 bits)"),
    SchemeSpec("uniform", (1, 16), "per-channel uniform grid of 2^bits levels between clipped bounds"),
    SchemeSpec("binary", None, "alpha * sign(w), 1 bit per weight"),
    SchemeSpec("ternary", None, "{-alpha, 0, +alpha}, 1 bit per kept weight"),
)}

#: ``compress.quant.rounding`` (fixed_point)
ROUNDINGS = ("nearest", "floor", "stochastic")
#: ``compress.quant.granularity`` (uniform, binary, ternary): one grid / alpha per output channel, or one for
#: the whole tensor (repeated per channel in the file, where the codec stores the repeats almost for free)
GRANULARITIES = ("channel", "tensor")
#: ``compress.quant.clip`` (uniform): the open lower and closed upper bound of the quantile
CLIP_RANGE = (0.5, 1.0)
#: ``compress.quant.threshold`` (ternary) lies in (0, THRESHOLD_MAX]
THRESHOLD_MAX = 2.0

#: ``compress.prune.criterion``, ``.scope``, ``.schedule`` and the largest ``.ratio``
PRUNE_CRITERIA = ("magnitude", "random")
PRUNE_SCOPES = ("global", "per_layer")
PRUNE_SCHEDULES = ("one_shot", "gradual")
PRUNE_MAX_RATIO = 0.99

#: ``compress.neurons.importance`` and the largest ``compress.neurons.ratio``
NEURON_IMPORTANCES = ("mean_abs", "apoz")
NEURONS_MAX_RATIO = 0.9

#: ``train.optimizer`` -> the ``torch.optim`` class it builds
OPTIMIZERS: dict[str, str] = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}

#: ``train.loss`` of a ranking model (model=seqrec): ``full`` = softmax over every item, ``sampled`` =
#: sampled softmax over the target and ``train.negatives`` uniformly drawn items (large catalogues)
LOSSES = ("full", "sampled")
#: ``train.negatives``: how many items ``sampled`` draws per batch when the config does not say
DEFAULT_NEGATIVES = 256

#: ``data.sep`` of data=csv: the names a user may give instead of the character (null = detect; or any
#: single character but a quote or a line break)
CSV_SEPARATORS: dict[str, str] = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|"}

#: ``compress.codec``: entropy coding of the packed file (trainers/artifact.py gives each an id)
CODECS = ("none", "zlib", "lzma")

#: ``compress.side_bits``: precision of a quantized layer's side information (per-channel scale/offset and
#: bias): 16 = float16 where every value of the tensor fits (else float32), 32 = float32
SIDE_BITS = (16, 32)
