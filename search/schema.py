"""The config schema: every key's type, default, allowed values, range and doc, and the rules between keys.

One pydantic model per config block (``Study``, ``Train``, ``Quant``, ...) declares each key once::

    folds: Int(2) = Field(5, description="stratified, shuffled with `seed`; the same folds for every trial")

``Int(2)`` is the type and range ("an integer >= 2"), ``5`` the default, the description the doc. Everything
else reads this module: :mod:`search.validate` (its ``RULES`` table and the space checks), the compose
errors of :mod:`search.config` (unknown keys, typed ``key=value`` arguments), the README's key table
(``python -m search.schema --readme`` rewrites it, ``tests/test_schema.py`` compares), and the trainers' own
limits come *from* :mod:`trainers.options` (scheme names and bit ranges, pruning criteria, optimizers,
codecs), so a value is refused before a study exists exactly when a trial would refuse it.

Why pydantic rather than Hydra structured configs (dataclasses in the ConfigStore):

* ranges and choices: pydantic's ``Field(ge=..., lt=...)``, ``Literal`` and unions (``data.pca`` is null, a
  count or a share) check them; OmegaConf 2.3 checks a dataclass field's type only (no ranges, no
  ``Literal``, no unions other than ``Optional``), so the ranges would live elsewhere again;
* the YAML files stay what users read and edit, with their comments; a structured config would need a
  ``defaults`` entry in every group file and one dataclass per group choice (and per user's own group);
* errors: a structured config fails inside ``compose`` with a multi-line OmegaConf message; here a bad
  value becomes one ``InputError`` line that names the key and the rule;
* pydantic is already installed (an MLflow dependency) and imports in ~0.2 s; nothing here imports torch.

The defaults here equal those of ``conf/sweep.yaml`` (a test checks it); a key the YAML does not have
(yet) passes validation, and its default here is what the code must use. Keys of the ``data`` and ``model``
groups have their defaults in the group files (``conf/data/<name>.yaml``): the schema gives their type,
range and doc, and each key is checked where the chosen group has it.

Rules between keys are plain functions over values (:data:`CROSS_RULES`); those that need the loaded data
or the machine (:func:`pca_problem`, :func:`device_problem`, :func:`input_problem`) are called by the
up-front checks of :mod:`search.preflight`.

Example:
    >>> KEYS["cv.folds"].check(1)
    'must be an integer >= 2'
    >>> KEYS["cv.folds"].default, KEYS["cv.folds"].check(5) is None
    (5, True)
    >>> scheme_bits_problem("fixed_point", 1).key
    'compress.quant.bits'
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from search.names import OBJECTIVE_DIRECTIONS
from trainers import options

__all__ = [
    "CROSS_RULES", "DATA_INPUTS", "KEYS", "MODEL_INPUTS", "RUNTIMES", "SAMPLERS", "SEQUENCE_DATA", "CrossRule",
    "Key", "Problem", "SweepConfig", "cross_problems", "data_model_problem", "device_problem", "input_problem",
    "RANKING_MODELS", "loss_model_problem",
    "markdown_table", "nearest_key", "pca_model_problem", "pca_problem", "scheme_bits_problem",
    "workers_storage_problem",
]

SEED_MAX = 2**32 - 1  # numpy and scikit-learn take seeds in 0 .. 2**32 - 1
FLOAT32_MAX = 3.4028234663852886e38  # numbers that reach a tensor must stay finite in float32

#: ``study.sampler`` (the keys of search/sweep.py:SAMPLER_BUILDERS, which builds them; a test holds them equal)
SAMPLERS = ("tpe", "nsga2", "random", "gp")
#: ``device``: where training runs (latency is always measured on CPU)
DEVICES = ("auto", "cpu", "cuda")
#: ``latency.runtimes``: the runtimes a loaded model may be timed in
RUNTIMES = ("fp32_dense", "torchscript", "int8_dynamic", "onnxruntime", "onnxruntime_int8")
#: ``data.format`` of data=interactions
INTERACTION_FORMATS = ("auto", "movielens_tab", "movielens_dat", "csv")
#: Optuna storage URL prefixes ``study.storage`` accepts
STORAGE_PREFIXES = ("sqlite:", "journal:", "postgresql", "mysql")

#: the input each model reads; and the input of each built-in data group (``npz``: decided by its file)
#: (``model=custom``, a user's module, is not listed: search/preflight.py refuses it on sequence data)
MODEL_INPUTS: dict[str, tuple[str, ...]] = {"mlp": ("tabular", "image"), "cnn": ("image",), "seqrec": ("sequence",)}
DATA_INPUTS: dict[str, str] = {"digits": "image", "breast_cancer": "tabular", "csv": "tabular",
                               "ecommerce": "sequence", "interactions": "sequence"}
#: data groups whose rows are users' event sequences (trainers/data/_sequence.py); they need model=seqrec
SEQUENCE_DATA = tuple(name for name, kind in DATA_INPUTS.items() if kind == "sequence")
#: models that rank items (they read sequence data); only they train with ``train.loss=sampled``
RANKING_MODELS = tuple(name for name, kinds in MODEL_INPUTS.items() if "sequence" in kinds)


# --- types: each carries the rule a user reads ("must be <rule>") --------------------------------------


@dataclass(frozen=True)
class Rule:
    """Annotation metadata: the sentence a bad value gets, ``"must be an integer >= 2"``."""

    text: str


def _null_or(text: str, null: bool) -> str:
    return f"must be null or {text}" if null else f"must be {text}"


def _maybe_null(tp: Any, text: str, null: bool) -> Any:
    return Annotated[tp | None if null else tp, Rule(_null_or(text, null))]


def Int(lo: int | None = None, hi: int | None = None, *, null: bool = False) -> Any:
    """An integer (not a bool) in ``lo..hi``."""
    bounds = f" in {lo}..{hi}" if lo is not None and hi is not None else f" >= {lo}" if lo is not None else ""
    return _maybe_null(Annotated[int, Field(ge=lo, le=hi)], f"an integer{bounds}", null)


def Num(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
        null: bool = False, f32: bool = False) -> Any:
    """A number (int or float, not a bool, not nan) in the interval; ``f32``: also finite in float32."""
    if lo is not None and hi is not None:
        bounds = f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        bounds = f" {'>' if lo_open else '>='} {lo:g}"
    else:
        bounds = ""
    text = f"a number{bounds}" + (" (finite in float32)" if f32 and hi is None else "")
    limits = {("gt" if lo_open else "ge"): lo, ("lt" if hi_open else "le"): hi}
    if f32 and hi is None:
        limits["le"] = FLOAT32_MAX
    return _maybe_null(Annotated[float, Field(**{k: v for k, v in limits.items() if v is not None})], text, null)


def OneOf(*names: str, null: bool = False) -> Any:
    """One of ``names`` (a registry's keys)."""
    return _maybe_null(Literal[names], f"one of {'|'.join(names)}", null)


def Text(*, null: bool = False) -> Any:
    """A non-empty (not blank) string."""
    return _maybe_null(Annotated[str, Field(pattern=r"\S")], "a non-empty string", null)


Bool = Annotated[bool, Rule("must be true or false")]


def IntList(*, non_empty: bool) -> Any:
    """A list of positive integers (layer sizes)."""
    text = f"must be a {'non-empty ' if non_empty else ''}list of positive integers"
    return Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1 if non_empty else 0), Rule(text)]


def _checked(tp: Any, check: Callable[[Any], str | None], text: str) -> Any:
    """``tp`` plus a check that returns the rule a value breaks, when it says more than ``text``."""

    def after(v: Any) -> Any:
        problem = check(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    return Annotated[tp, AfterValidator(after), Rule(text)]


def _distinct_names(what: str, names: tuple[str, ...] | Callable[[], list[str]], *, non_empty: bool,
                    null: bool = False, suffix: str = "") -> Any:
    def text() -> str:
        known = names() if callable(names) else names
        rule = f"a {'non-empty ' if non_empty else ''}list of distinct {what}s from {'|'.join(known)}{suffix}"
        return _null_or(rule, null)

    def check(v: Any) -> str | None:
        if v is None:
            return None if null else text()
        known = names() if callable(names) else names
        if non_empty and not v:
            return text()
        for name in v:
            if name not in known:
                return f"has unknown {what} {name!r}: {text()}"
        return f"lists {what} {_first_twice(v)!r} twice: {text()}" if len(set(v)) != len(v) else None

    tp = list[str] | None if null else list[str]
    return _checked(tp, check, text() if not callable(names) else _null_or(f"a list of distinct {what}s{suffix}", null))


def _first_twice(v: list[Any]) -> Any:
    return next(x for i, x in enumerate(v) if x in v[:i])


def _recipe_names() -> list[str]:
    from search.recipes import recipe_names  # conf/recipe/*.yaml

    return recipe_names()


def _study_name(v: str) -> str | None:
    return None if v.strip() and "/" not in v else "must be a non-empty string without '/'"


def _storage(v: str | None) -> str | None:
    if v is None:
        return None
    if not v.startswith(STORAGE_PREFIXES):
        return _STORAGE_TEXT
    if v.startswith("journal:") and not v[len("journal:"):].strip():
        return "must name a file after journal:, e.g. journal:mlruns/optuna.log"
    return None


_STORAGE_TEXT = ("must be null (sqlite:///mlruns/optuna.db), sqlite:///<file>, journal:<file>, postgresql://... "
                 "or mysql://...")
_PCA_TEXT = "must be null, a number of components (integer >= 1) or a share of variance (float in (0, 1))"
_TARGET_TEXT = "must be a column name (non-empty string) or index (integer)"

_SEP_TEXT = f"must be null (detect), {', '.join(dict.fromkeys(options.CSV_SEPARATORS))} or one character"


def _sep(v: str | None) -> str | None:
    ok = v is None or v in options.CSV_SEPARATORS or (len(v) == 1 and v not in "\"\r\n")
    return None if ok else _SEP_TEXT


def _dotted_path(v: str) -> str | None:
    parts = v.split(".")
    return None if len(parts) >= 2 and all(p.isidentifier() for p in parts) else _DOTTED_TEXT


_DOTTED_TEXT = "must be the dotted import path of an nn.Module class, such as my_pkg.nets.ResMLP"
Kwargs = Annotated[dict[str, Any], Rule("must be a mapping of constructor arguments (plain values)")]
Names = Annotated[list[Annotated[str, Field(pattern=r"\S")]], Rule("must be a list of names")]
Patterns = Annotated[list[Annotated[str, Field(pattern=r"\S")]] | None,
                     Rule("must be null or a list of module-name patterns (fnmatch: layers.0, *.fc*)")]

Pca = Annotated[Union[None, Annotated[int, Field(ge=1)], Annotated[float, Field(gt=0, lt=1)]],  # noqa: UP007
                Rule(_PCA_TEXT)]
Target = Annotated[Union[Annotated[str, Field(pattern=r"\S")], int], Rule(_TARGET_TEXT)]  # noqa: UP007


# --- the blocks -----------------------------------------------------------------------------------------
#
# Field(default, description=...): the default of conf/sweep.yaml (tests/test_schema.py compares) and the doc.
# Blocks of a config group (Data, Model) have no defaults here: each group file has its own.


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Group(Block):
    """A config group's block: keys are checked where the chosen group file has them."""


class Data(Group):
    name: Text() = Field(description="the loader (set by the group file, conf/data/<name>.yaml)")
    path: Text() = Field(description="csv, npz, interactions: the file to read (required)")
    target: Target = Field(description="csv: the label column, by name or index (required)")
    sep: _checked(str | None, _sep, _SEP_TEXT) = Field(
        description="csv: the delimiter (null = detect from the first lines)")
    test_size: Num(0, 1, lo_open=True, hi_open=True) = Field(
        description="share of rows held out as a stratified test split, never seen by the search")
    standardize: Bool = Field(description="standardize features (fitted on training rows only)")
    pca: Pca = Field(description="PCA on flat inputs (model=mlp): components, or a share of variance")
    seed: Int(0, SEED_MAX) = Field(description="ecommerce: seeds the synthetic world")
    n_users: Int(1) = Field(description="ecommerce: users")
    n_items: Int(2) = Field(description="ecommerce: items")
    n_categories: Int(3) = Field(description="ecommerce: item categories")
    n_brands: Int(1) = Field(description="ecommerce: brands")
    brands_per_category: Int(1) = Field(description="ecommerce: brands selling in each category")
    min_events: Int(3) = Field(description="ecommerce, interactions: fewest events per user")
    max_events: Int(3) = Field(description="ecommerce: most events per user")
    popularity_exponent: Num(0, 3) = Field(description="ecommerce: Zipf exponent of item popularity")
    transition_strength: Num(0, 1) = Field(description="ecommerce: share of favourite category transitions")
    interest_mix: Num(0, 1) = Field(description="ecommerce: chance the next category is a user interest")
    brand_loyalty: Num(0, 1) = Field(description="ecommerce: chance of buying a recent brand again")
    format: OneOf(*INTERACTION_FORMATS) = Field(description="interactions: the file's format (auto: first line)")
    user_col: Text() = Field(description="interactions, csv format: user column")
    item_col: Text() = Field(description="interactions, csv format: item column")
    time_col: Text(null=True) = Field(description="interactions, csv format: time column (null = row order)")
    item_features: Text(null=True) = Field(description="interactions: optional CSV of item side features")
    user_features: Text(null=True) = Field(description="interactions: optional CSV of user features (age, ...)")
    max_len: Int(1) = Field(description="ecommerce, interactions: input events kept per user")
    top_k: Int(1) = Field(description="ecommerce, interactions: k of HR@k and NDCG@k")


class Model(Group):
    name: Text() = Field(description="the network (set by the group file, conf/model/<name>.yaml)")
    channels: IntList(non_empty=True) = Field(description="cnn: conv 3x3 blocks")
    hidden: IntList(non_empty=False) = Field(description="mlp, cnn: hidden layer sizes")
    width: Num(0, lo_open=True, f32=True) = Field(description="multiplies every hidden size")
    dropout: Num(0, 1, hi_open=True) = Field(description="dropout rate")
    d_model: Int(1) = Field(description="seqrec: embedding width")
    heads: Int(1) = Field(description="seqrec: attention heads")
    blocks: Int(1) = Field(description="seqrec: transformer blocks")
    ffn_mult: Num(0, lo_open=True, f32=True) = Field(description="seqrec: feed-forward units per d_model")
    max_len: Int(1) = Field(description="seqrec: most recent events read (at most data.max_len)")
    side_features: Bool = Field(description="seqrec: embed the data's side features")
    user_features: Bool = Field(description="seqrec: add the data's user features (profile) to the sequence state")
    target: _checked(str, _dotted_path, _DOTTED_TEXT) = Field(
        alias="_target_", description="custom: the user's nn.Module class (import path)")
    kwargs: Kwargs = Field(description="custom: constructor arguments (data shapes are passed by squeeze)")
    widen: Names = Field(description="custom: integer kwargs that model.width multiplies")


class Study(Block):
    name: _checked(str, _study_name, "must be a non-empty string without '/'") = Field(
        "${data.name}-${model.name}", description="same name + same storage = resume")
    storage: _checked(str | None, _storage, _STORAGE_TEXT) = Field(
        None, description="Optuna storage; null = sqlite:///mlruns/optuna.db")
    sampler: OneOf(*SAMPLERS) = Field("tpe", description="Optuna sampler")
    n_trials: Int(1) = Field(20, description="finished trials to reach (a resumed study runs the missing ones)")
    timeout: Num(0, lo_open=True, null=True) = Field(None, description="seconds since the command started (references included); no new trial after this")
    seed: Int(0, SEED_MAX, null=True) = Field("${seed}", description="sampler seed")
    objectives: _distinct_names("objective", tuple(OBJECTIVE_DIRECTIONS), non_empty=True) = Field(
        ["accuracy", "size_bytes", "latency_ms"], description="accuracy is maximized, size and latency minimized")
    min_accuracy: Num(0, 1, null=True) = Field(None, description="constraint: lowest accuracy on the Pareto front")
    max_size_bytes: Num(0, lo_open=True, null=True) = Field(None, description="constraint: largest file")
    max_latency_ms: Num(0, lo_open=True, null=True) = Field(None, description="constraint: slowest latency")
    max_failure_rate: Num(0, 1) = Field(0.5, description="stop when more than this share of trials failed")
    n_workers: Int(1) = Field(1, description="worker processes on this machine (> 1: journal or RDB storage)")
    heartbeat_seconds: Int(1) = Field(10, description="RDB storages: a running trial beats this often")
    grace_seconds: Int(1) = Field(30, description="a silent trial is failed and retried after this long")
    base_cache: Bool = Field(True, description="reuse a fold's trained fp32 model across trials")
    base_cache_gb: Num(0, lo_open=True) = Field(2, description="size bound of the base-model cache")
    base_cache_dir: Text(null=True) = Field(None, description="null = base-cache/<study.name> beside the storage")
    seed_recipes: _distinct_names("recipe", _recipe_names, non_empty=False, suffix=" (conf/recipe/*.yaml), or []") = (
        Field(["deep_compression", "twn", "neurons_lowbit", "sparse_int8", "aggressive"],
              description="recipes enqueued as the first trials of a new study"))
    early_stop: Bool = Field(True, description="stop a trial after a fold when a finished trial dominates it")
    early_stop_margin: Num(0, 1) = Field(0.01, description="accuracy margin of the early stop")
    shrink_every: Int(0) = Field(3, description="every n-th trial is a shrink step of the smallest model "
                                                "within shrink_tolerance (search/shrink.py); 0 = none")
    shrink_tolerance: Num(0, 1) = Field(0.005, description="accuracy loss vs the fp32 reference a shrink "
                                                           "step's parent may have")
    shrink_levels: Int(1) = Field(3, description="every other shrink step uses shrink_tolerance, the ones between "
                                                 "4x, 16x, ... it (3: 0.5, 2 and 8 pt); 1 = one level")


class CV(Block):
    folds: Int(2) = Field(5, description="stratified, shuffled with `seed`; the same folds for every trial")


class Train(Block):
    optimizer: OneOf(*options.OPTIMIZERS) = Field("adam", description="torch.optim optimizer")
    lr: Num(0, lo_open=True, f32=True) = Field(0.001, description="learning rate")
    weight_decay: Num(0, f32=True) = Field(0.0, description="L2 penalty")
    epochs: Int(1) = Field(20, description="training epochs")
    batch_size: Int(1) = Field(64, description="mini-batch size")
    momentum: Num(0, 1, hi_open=True) = Field(0.9, description="sgd only")
    threads: Int(1) = Field(1, description="CPU threads for training, compression and scoring")
    loss: OneOf(*options.LOSSES) = Field(
        "full", description="ranking models: full softmax over every item, or sampled softmax (large catalogues)")
    negatives: Int(1) = Field(options.DEFAULT_NEGATIVES,
                              description="train.loss=sampled: items drawn uniformly per batch as negatives")


class Prune(Block):
    ratio: Num(0, options.PRUNE_MAX_RATIO) = Field(0.0, description="share of weights set to zero")
    criterion: OneOf(*options.PRUNE_CRITERIA) = Field("magnitude", description="which weights go first")
    schedule: OneOf(*options.PRUNE_SCHEDULES) = Field(
        "one_shot", description="gradual: Zhu & Gupta cubic schedule over the fine-tune")
    scope: OneOf(*options.PRUNE_SCOPES) = Field(
        "per_layer", description="per_layer: same ratio in every layer; global: one threshold")


class Neurons(Block):
    ratio: Num(0, options.NEURONS_MAX_RATIO) = Field(0.0, description="share of hidden units / channels removed")
    importance: OneOf(*options.NEURON_IMPORTANCES) = Field("mean_abs", description="unit importance measure")


def _bits_text() -> str:
    ranges = [s.bits for s in options.QUANT_SCHEMES.values() if s.bits is not None]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return f"must be an integer in {low}..{high} or {options.BITS_OFF}"


def _bits(v: int) -> str | None:
    return None if any(s.bits_problem(v) is None for s in options.QUANT_SCHEMES.values() if s.bits) else _bits_text()


class Quant(Block):
    scheme: OneOf(*options.QUANT_SCHEMES) = Field("none", description="weight quantization, one per model")
    bits: _checked(int, _bits, _bits_text()) = Field(
        8, description="fixed_point and uniform (range per scheme, see below); 32 = off; others ignore it")
    rounding: OneOf(*options.ROUNDINGS) = Field("nearest", description="fixed_point rounding")
    step_scale: Num(0, lo_open=True, f32=True) = Field(1.0, description="uniform: multiplies the derived step")
    clip: Num(*options.CLIP_RANGE, lo_open=True) = Field(
        1.0, description="uniform: bounds = per-channel quantiles (1 - clip, clip)")
    learn_step: Bool = Field(False, description="uniform: learn the step during fine-tune (LSQ)")
    threshold: Num(0, options.THRESHOLD_MAX, lo_open=True) = Field(
        0.7, description="ternary: zero weights with |w| < threshold * mean|w|")
    granularity: OneOf(*options.GRANULARITIES) = Field(
        "channel", description="uniform, binary, ternary: grid / alpha per output channel or one per tensor")
    quantize_first_last: Bool = Field(True, description="also quantize the first and last layer")


class Lowrank(Block):
    rank: Int(0) = Field(0, description="embedding tables stored as A (rows x rank) @ B (rank x dim), where that "
                                        "stores fewer values; 0 = off")


_SIDE_BITS_TEXT = f"must be one of {'|'.join(map(str, options.SIDE_BITS))}"


def _side_bits(v: int) -> str | None:
    return None if v in options.SIDE_BITS else _SIDE_BITS_TEXT


class Distill(Block):
    weight: Num(0, 1) = Field(0.0, description="share of the fine-tune loss that follows the fp32 base model's softened "
                                               "outputs (knowledge distillation, classifiers); 0 = off")
    temperature: Num(0, lo_open=True, f32=True) = Field(
        4.0, description="distillation: both models' logits are divided by it before the softmax")


class Compress(Block):
    finetune_epochs: Int(0) = Field(5, description="fine-tune after compression (0 = none)")
    finetune_lr: Num(0, lo_open=True, null=True, f32=True) = Field(None, description="null = train.lr")
    distill: Distill = Field(default_factory=Distill, description="knowledge distillation in the fine-tune")
    prune: Prune = Field(default_factory=Prune, description="weight pruning")
    neurons: Neurons = Field(default_factory=Neurons, description="neuron / channel pruning")
    quant: Quant = Field(default_factory=Quant, description="weight quantization")
    lowrank: Lowrank = Field(default_factory=Lowrank, description="low-rank factorization of embedding tables")
    codec: OneOf(*options.CODECS) = Field("lzma", description="entropy coding of the packed file")
    side_bits: _checked(int, _side_bits, _SIDE_BITS_TEXT) = Field(
        16, description="quantized layers' scale/offset and biases: 16 = float16 where every value fits, 32 = float32")
    include: Patterns = Field(None, description="layers to compress, by name pattern (null = every Linear, "
                                                "Conv1d/2d, Embedding)")
    exclude: Patterns = Field([], description="layers kept fp32, by name pattern (e.g. the first and last)")


class Latency(Block):
    threads: Int(1) = Field(1, description="CPU threads while timing")
    batch_size: Int(1) = Field(1, description="requests of this many rows")
    warmup: Int(0) = Field(20, description="untimed calls first")
    repeats: Int(1) = Field(400, description="timed calls")
    choice_repeats: Int(1) = Field(100, description="timed calls per candidate runtime while choosing one (the "
                                                     "chosen one is then timed with repeats)")
    blocks: Int(2) = Field(20, description="paired timing: alternating blocks of reference and candidate calls "
                                           "(and the interleaved rounds in which runtime candidates are screened)")
    throughput_batch: Int(1) = Field(256, description="batch of the throughput measure")
    runtimes: _distinct_names("runtime", RUNTIMES, non_empty=True, null=True) = Field(
        None, description="runtimes to try (null = all that apply)")


class MLflow(Block):
    tracking_uri: Text() = Field("sqlite:///mlruns/mlflow.db", description="MLflow tracking store")
    artifact_location: Text(null=True) = Field(
        None, description="artifacts of a new experiment (null = artifacts/ beside the SQLite tracking database)")
    experiment: Text() = Field("squeeze", description="MLflow experiment")
    register_: Bool = Field(False, alias="register", description="final-fit and register every Pareto trial")
    registry_name: Text() = Field("squeeze-${study.name}", description="the registered model's name")


class SweepConfig(Block):
    """The composed config of ``python -m search.sweep``, in the order the keys are checked."""

    data: Data = Field(description="conf/data/<name>.yaml")
    model: Model = Field(description="conf/model/<name>.yaml")
    seed: Int(0, SEED_MAX) = Field(0, description="seeds the test split, the CV folds, training and compression")
    device: OneOf(*DEVICES) = Field("auto", description="where training runs (latency: always CPU)")
    study: Study = Field(default_factory=Study, description="the Optuna study")
    cv: CV = Field(default_factory=CV, description="cross-validation")
    train: Train = Field(default_factory=Train, description="training")
    compress: Compress = Field(default_factory=Compress, description="compression")
    latency: Latency = Field(default_factory=Latency, description="latency measurement")
    mlflow: MLflow = Field(default_factory=MLflow, description="tracking")


#: top-level blocks that are config groups (their defaults are in conf/<group>/<name>.yaml); ``space`` is free
GROUPS = ("data", "model")
FREE_BLOCKS = ("space",)


# --- the flat view: one Key per dotted name --------------------------------------------------------------

_STRICT = ConfigDict(strict=True)
_NO_DEFAULT = object()


@dataclass(frozen=True)
class Key:
    """One dotted config key.

    Attributes:
        name: ``compress.quant.bits``.
        type: the annotated type (pydantic checks it, strictly: ``1`` is no bool, ``5.0`` no integer).
        rule: what a valid value is, ``"must be an integer >= 2"``.
        default: the default of ``conf/sweep.yaml`` (``None`` is a real default); absent for group keys.
        doc: one line.
        group: ``data`` / ``model`` for keys of a config group, else ``None``.
    """

    name: str
    type: Any
    rule: str
    default: Any
    doc: str
    group: str | None

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    @property
    def plain_type(self) -> Any:
        """``int``, ``float``, ``bool`` or ``str`` (``None | ...`` when nullable) for parsing ``key=text``;
        ``str`` for lists and unions, which a command line gives in Hydra's grammar."""
        return _plain_type(self.type)

    @cached_property
    def _adapter(self) -> TypeAdapter:
        return TypeAdapter(self.type, config=_STRICT)

    def check(self, value: Any) -> str | None:
        """``None`` when ``value`` is valid, else the rule it breaks (without the value)."""
        if isinstance(value, float) and math.isnan(value):
            return self.rule
        try:
            self._adapter.validate_python(value)
        except ValidationError as err:
            for e in err.errors():
                if e["type"] == "value_error":
                    return str(e["ctx"]["error"])
            return self.rule
        return None


def _plain_type(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) is Literal:
        return str
    if get_origin(tp) in (Union, UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) < len(get_args(tp)):
            inner = _plain_type(args[0])
            return inner | None if inner in (int, float, bool, str) else str
        return str
    return tp if tp in (int, float, bool, str) else str


def _rule_of(field: Any) -> str:
    for meta in field.metadata:
        if isinstance(meta, Rule):
            return meta.text
    for meta in getattr(field.annotation, "__metadata__", ()):
        if isinstance(meta, Rule):
            return meta.text
    raise TypeError(f"schema field without a Rule: {field!r}")  # pragma: no cover


def _keys(model: type[BaseModel], prefix: str = "", group: str | None = None) -> Iterator[Key]:
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{field.alias or name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _keys(ann, f"{dotted}.", name if issubclass(ann, Group) else group)
            continue
        tp = Annotated[(ann, *field.metadata)] if field.metadata else ann
        default = _NO_DEFAULT if field.is_required() else field.get_default(call_default_factory=True)
        yield Key(dotted, tp, _rule_of(field), default, field.description or "", group)


#: every public key, in the order of the composed config (groups first), by dotted name
KEYS: dict[str, Key] = {k.name: k for k in _keys(SweepConfig)}


def nearest_key(name: str, candidates: Any = None) -> str | None:
    """The known key closest to a mistyped ``name`` (difflib), or ``None`` when none is close."""
    pool = list(KEYS) if candidates is None else list(candidates)
    match = difflib.get_close_matches(name, pool, n=1, cutoff=0.75)
    if not match:  # a typo in the last part only: compare within the same block
        block, _, leaf = name.rpartition(".")
        leaves = {k.rpartition(".")[2]: k for k in pool if k.rpartition(".")[0] == block}
        close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        match = [leaves[close[0]]] if close else []
    return match[0] if match else None


# --- rules between keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A broken rule between keys: the key to change and the rule (the caller adds ``, got <value>``)."""

    key: str
    rule: str


def workers_storage_problem(n_workers: Any, storage: Any) -> Problem | None:
    """Several workers need a storage that takes writes from several processes (not SQLite)."""
    if isinstance(n_workers, int) and n_workers > 1 and (storage is None or str(storage).startswith("sqlite:")):
        return Problem("study.storage", "must be journal:<file> or postgresql://... when study.n_workers > 1 "
                                        "(sqlite does not take writes from several processes; study.n_workers is "
                                        f"{n_workers})")
    return None


def pca_model_problem(pca: Any, model: Any) -> Problem | None:
    """PCA needs flat inputs: only model=mlp reads them."""
    if pca is not None and model != "mlp":
        return Problem("data.pca", f"must be null unless model.name is mlp (PCA needs flat inputs; model.name is "
                                   f"{model!r})")
    return None


def data_model_problem(data_name: Any, model: Any, input_kind: str | None = None) -> Problem | None:
    """The model must read the data's input: ``input_kind`` (tabular | image | sequence) from the loaded data,
    else from :data:`DATA_INPUTS` (a group of unknown input, like npz or a user's group, passes)."""
    kind = input_kind or DATA_INPUTS.get(str(data_name))
    if kind is None or model not in MODEL_INPUTS or kind in MODEL_INPUTS[model]:
        return None
    fits = [m for m, kinds in MODEL_INPUTS.items() if kind in kinds]
    readers = "; ".join(f"{m} reads {' or '.join(k)} data" for m, k in MODEL_INPUTS.items())
    return Problem("model.name", f"must be {' or '.join(fits)} for data={data_name} (its input is {kind} data; "
                                 f"{readers})")


def input_problem(model: Any, data_name: Any, input_kind: str) -> Problem | None:
    """:func:`data_model_problem` for the loaded data's ``Dataset.kind``."""
    return data_model_problem(data_name, model, input_kind)


def loss_model_problem(loss: Any, model: Any) -> Problem | None:
    """A sampled softmax samples items: only a ranking model (one that reads sequence data) has them."""
    if loss == "sampled" and model not in RANKING_MODELS:
        rankers = " or ".join(RANKING_MODELS)
        return Problem("train.loss", f"must be full unless model.name is {rankers} (a sampled softmax draws "
                                     f"negative items; model.name is {model!r})")
    return None


def distill_model_problem(weight: Any, model: Any) -> Problem | None:
    """Distillation matches class scores; a ranking model trains on its own next-item loss over the catalogue."""
    if isinstance(weight, (int, float)) and weight > 0 and model in RANKING_MODELS:
        return Problem("compress.distill.weight", f"must be 0 for model.name={model} (distillation is for "
                                                  f"classifiers; a ranker fine-tunes on its next-item loss)")
    return None


def scheme_bits_problem(scheme: Any, bits: Any) -> Problem | None:
    """``compress.quant.bits`` must be a width the chosen scheme quantizes to (or 32 = off)."""
    spec = options.QUANT_SCHEMES.get(scheme) if isinstance(scheme, str) else None
    if spec is None or not isinstance(bits, int) or spec.bits_problem(bits) is None:
        return None
    low, high = spec.bits
    hint = " (1 bit: scheme=binary, or uniform)" if bits < low else ""
    return Problem("compress.quant.bits", f"must be in {low}..{high} or {options.BITS_OFF} when "
                                          f"compress.quant.scheme is {scheme}{hint}")


def pca_problem(pca: Any, n_features: int, n_rows: int | None = None) -> str | None:
    """An integer ``data.pca`` can ask for at most ``min(features, training rows)`` components (needs the data)."""
    if not isinstance(pca, int) or isinstance(pca, bool):
        return None
    limit = n_features if n_rows is None else min(n_features, n_rows)
    if pca <= limit:
        return None
    why = f"the data has {n_features} features" if limit == n_features else f"a CV fold trains on {n_rows} rows"
    return f"asks for {pca} PCA components, but {why}: use at most {limit}, or a share of variance such as 0.95"


def device_problem(device: Any, cuda_available: bool) -> str | None:
    """``device=cuda`` needs a CUDA device (needs the machine)."""
    if device == "cuda" and not cuda_available:
        return "is cuda but this machine has no CUDA device: use device=auto or device=cpu"
    return None


@dataclass(frozen=True)
class CrossRule:
    """A rule between config keys: ``check(*values of keys)`` gives a :class:`Problem` or ``None``."""

    keys: tuple[str, ...]
    check: Callable[..., Problem | None]


#: the rules between keys that the config alone decides (checked after each key is valid on its own)
CROSS_RULES: tuple[CrossRule, ...] = (
    CrossRule(("study.n_workers", "study.storage"), workers_storage_problem),
    CrossRule(("data.pca", "model.name"), pca_model_problem),
    CrossRule(("data.name", "model.name"), data_model_problem),
    CrossRule(("train.loss", "model.name"), loss_model_problem),
    CrossRule(("compress.distill.weight", "model.name"), distill_model_problem),
    CrossRule(("compress.quant.scheme", "compress.quant.bits"), scheme_bits_problem),
)


def cross_problems(values: Mapping[str, Any]) -> Iterator[tuple[Problem, Any]]:
    """Every broken :data:`CROSS_RULES` for ``{dotted key: value}`` (missing keys read as ``None``), with
    the value of the key to change."""
    for rule in CROSS_RULES:
        problem = rule.check(*(values.get(k) for k in rule.keys))
        if problem is not None:
            yield problem, values.get(problem.key)


# --- the README table ------------------------------------------------------------------------------------

README_BEGIN = "<!-- schema:begin (generated by `python -m search.schema --readme`; do not edit) -->"
README_END = "<!-- schema:end -->"


def _yaml_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    return str(value)


def markdown_table() -> str:
    """The README's table of every key: allowed values or range, default, doc, then the rules between keys."""
    def cell(text: str) -> str:  # a table cell: | would end it, <file> would read as an HTML tag
        return text.replace("|", "\\|").replace("<", "&lt;")

    rows = ["| key | allowed | default | what |", "|---|---|---|---|"]
    for key in KEYS.values():
        default = f"`{_yaml_text(key.default)}`" if key.has_default else f"per `conf/{key.group}/*.yaml`"
        rows.append(f"| `{key.name}` | {cell(key.rule.removeprefix('must be '))} | {default} | {cell(key.doc)} |")
    rows += ["", "Rules between keys, checked before anything is created:", ""]
    for name, spec in options.QUANT_SCHEMES.items():
        bits = f"`bits` in {spec.bits[0]}..{spec.bits[1]} or {options.BITS_OFF} (off)" if spec.bits else "ignores `bits`"
        rows.append(f"* `compress.quant.scheme={name}`: {spec.doc}; {bits};")
    for model, kinds in MODEL_INPUTS.items():
        groups = ", ".join(f"`{d}`" for d, k in DATA_INPUTS.items() if k in kinds)
        npz = "" if "sequence" in kinds else "; `npz` by its file's rank"
        rows.append(f"* `model={model}` reads {' or '.join(kinds)} data ({groups}{npz});")
    rows.append("* `data.pca` only with `model=mlp`, and at most as many components as features and training rows;")
    rows.append(f"* `train.loss=sampled` only with {' or '.join(f'`model={m}`' for m in RANKING_MODELS)} (ranking);")
    rows.append(f"* `compress.distill.weight` > 0 not with {' or '.join(f'`model={m}`' for m in RANKING_MODELS)} "
                f"(classifiers only);")
    rows.append("* `study.n_workers` > 1 needs `study.storage=journal:<file>` or a database (not SQLite);")
    rows.append("* `device=cuda` needs a CUDA device.")
    return "\n".join(rows)


def readme_block() -> str:
    return f"{README_BEGIN}\n{markdown_table()}\n{README_END}"


def _main(argv: list[str]) -> int:
    from pathlib import Path

    if argv != ["--readme"]:
        print("usage: python -m search.schema --readme   (rewrite the key table of README.md)")
        return 2
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    readme.write_text(text[:start] + readme_block() + text[end:])
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
