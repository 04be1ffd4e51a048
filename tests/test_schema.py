"""search/schema.py: one declaration of every key, read by validation, compose, the trainers and the README."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from search import schema
from search.config import coerce, compose, parse_key_values, schema_type
from trainers import options
from trainers.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


# --- the schema agrees with the YAML files and the README ---------------------------------------------


def test_defaults_equal_conf_sweep_yaml():
    raw = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "sweep.yaml"), resolve=False)
    for name, key in schema.KEYS.items():
        if key.group is not None:
            continue
        node = raw
        for part in name.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is KeyError:
            continue  # a key the YAML does not have yet: the schema's default applies
        assert node == key.default and type(node) is type(key.default), (name, node, key.default)


def _leaves(node: dict, prefix: str = ""):
    for k, v in node.items():
        yield from _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]


def test_every_yaml_key_is_in_the_schema():
    raw = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "sweep.yaml"), resolve=False)
    for key in _leaves({k: v for k, v in raw.items() if k not in ("defaults", *schema.FREE_BLOCKS)}):
        assert key in schema.KEYS, key
    for group in schema.GROUPS:
        for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
            for k in OmegaConf.load(path):
                assert f"{group}.{k}" in schema.KEYS, f"{path.name}: {group}.{k}"


def test_every_group_file_passes_the_schema():
    for group in schema.GROUPS:
        for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
            for k, v in OmegaConf.to_container(OmegaConf.load(path)).items():
                if v != "???":
                    assert schema.KEYS[f"{group}.{k}"].check(v) is None, (path.name, k, v)


def test_readme_table_is_generated_from_the_schema():
    readme = (ROOT / "README.md").read_text()
    assert schema.readme_block() in readme, "run: python -m search.schema --readme"


def test_readme_names_no_other_bit_range():
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"\b2\s*(–|-|\.\.)\s*8 bits\b", readme)


def test_schema_imports_no_torch():
    code = "import sys, search.schema, search.validate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- every layer uses the same allowed values -----------------------------------------------------------


def _lists_in_code() -> dict[str, list[Path]]:
    """Each allowed-values list as code would spell it ("magnitude", "random") -> files spelling it so."""
    lists = {
        "criteria": options.PRUNE_CRITERIA, "scopes": options.PRUNE_SCOPES, "schedules": options.PRUNE_SCHEDULES,
        "importances": options.NEURON_IMPORTANCES, "roundings": options.ROUNDINGS, "codecs": options.CODECS,
        "optimizers": tuple(options.OPTIMIZERS), "schemes": tuple(options.QUANT_SCHEMES), "losses": options.LOSSES,
        "samplers": schema.SAMPLERS, "devices": schema.DEVICES, "runtimes": schema.RUNTIMES,
    }
    found = {}
    files = [p for d in ("search", "trainers") for p in (ROOT / d).rglob("*.py")]
    for name, values in lists.items():
        pattern = re.compile(r"""["']{}["']\s*,\s*["']{}["']""".format(*map(re.escape, values[:2])))
        found[name] = [p.relative_to(ROOT) for p in files if pattern.search(p.read_text())]
    return found


def test_each_allowed_values_list_is_written_once():
    for name, files in _lists_in_code().items():
        assert len(files) <= 1, f"{name} listed in {files}"


@pytest.mark.parametrize("scheme", list(options.QUANT_SCHEMES))
@pytest.mark.parametrize("bits", [0, 1, 2, 8, 16, 17, 32])
def test_validation_and_quantizer_agree_on_scheme_and_bits(scheme, bits):
    from trainers.compress.quantize import make_quantizer

    valid = schema.KEYS["compress.quant.bits"].check(bits) is None and schema.scheme_bits_problem(scheme, bits) is None
    if valid:
        make_quantizer({"scheme": scheme, "bits": bits})
    elif options.QUANT_SCHEMES[scheme].bits is not None:  # binary/ternary/none ignore bits
        with pytest.raises(InputError):
            make_quantizer({"scheme": scheme, "bits": bits})


def test_quantizer_registry_matches_the_schemes():
    from trainers.compress.quantize import QUANTIZERS, make_quantizer

    assert set(QUANTIZERS) == set(options.QUANT_SCHEMES)
    assert all(schema.KEYS["compress.quant.scheme"].check(name) is None for name in QUANTIZERS)
    with pytest.raises(InputError, match="compress.quant.scheme: must be one of none|"):
        make_quantizer({"scheme": "int4"})


def test_trainers_accept_exactly_the_schema_choices():
    import torch

    from trainers.artifact import _CODECS
    from trainers.compress.prune import Pruner
    from trainers.fit import make_optimizer

    assert tuple(_CODECS) == options.CODECS
    for name in options.OPTIMIZERS:
        make_optimizer([torch.nn.Parameter(torch.zeros(1))], name, 0.1, 0.0)
    with pytest.raises(InputError, match="train.optimizer"):
        make_optimizer([torch.nn.Parameter(torch.zeros(1))], "lamb", 0.1, 0.0)
    for criterion in options.PRUNE_CRITERIA:
        for scope in options.PRUNE_SCOPES:
            Pruner(criterion, scope).masks([torch.ones(4, 4)], options.PRUNE_MAX_RATIO)
    with pytest.raises(InputError, match="compress.prune.criterion: must be one of magnitude|random"):
        Pruner("l1")


def test_make_sampler_builds_every_schema_sampler():
    from search.sweep import SAMPLER_BUILDERS, make_sampler

    assert tuple(SAMPLER_BUILDERS) == schema.SAMPLERS
    for name in schema.SAMPLERS:
        make_sampler(name, 0, 20)
    with pytest.raises(InputError, match="study.sampler"):
        make_sampler("cmaes", 0, 20)


# --- rules between keys ---------------------------------------------------------------------------------


def test_scheme_bits_rule_names_the_scheme_range():
    problem = schema.scheme_bits_problem("fixed_point", 1)
    assert problem.key == "compress.quant.bits" and "2..16" in problem.rule and "scheme=binary" in problem.rule
    assert schema.scheme_bits_problem("uniform", 1) is None
    assert schema.scheme_bits_problem("binary", 7) is None  # binary ignores bits
    assert schema.scheme_bits_problem("fixed_point", 32) is None  # 32 = off


def test_data_model_rule_reads_the_input_kind():
    assert schema.data_model_problem("digits", "cnn") is None
    assert "must be mlp for data=csv" in schema.data_model_problem("csv", "cnn").rule
    assert "must be seqrec" in schema.data_model_problem("ecommerce", "mlp").rule
    assert schema.data_model_problem("npz", "cnn") is None  # decided by the file: input_problem
    assert "must be mlp for data=npz" in schema.input_problem("cnn", "npz", "tabular").rule
    assert schema.data_model_problem("my_own_data", "cnn") is None


def test_rules_that_need_data_or_hardware():
    assert schema.pca_problem(10, n_features=64) is None and schema.pca_problem(0.95, n_features=4) is None
    assert "use at most 4" in schema.pca_problem(1000, n_features=4)
    assert "use at most 30" in schema.pca_problem(40, n_features=64, n_rows=30)
    assert schema.device_problem("cuda", cuda_available=False).startswith("is cuda")
    assert schema.device_problem("cuda", cuda_available=True) is None
    assert schema.device_problem("auto", cuda_available=False) is None


def test_workers_storage_rule():
    assert schema.workers_storage_problem(2, None).key == "study.storage"
    assert schema.workers_storage_problem(2, "sqlite:///x.db") is not None
    assert schema.workers_storage_problem(2, "journal:x.log") is None
    assert schema.workers_storage_problem(1, None) is None


# --- compose: unknown keys and keys of another group ----------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+compress.prune.ration=0.5"], "compress.prune.ration: no such config key; did you mean compress.prune.ratio?"),
        (["compress.prune.ration=0.5"], "compress.prune.ration: no such config key; did you mean compress.prune.ratio?"),
        (["+studdy.n_trials=3"], "studdy.n_trials: no such config key; did you mean study.n_trials?"),
        (["data.path=x.csv"], "data.path: is not a key of data=digits: add data=csv"),
        (["+data.path=x.npz"], "data.path: is not a key of data=digits: add data=npz"),
        (["data=csv", "data.n_users=3"], "data.n_users: is not a key of data=csv: add data=ecommerce"),
        (["+model.embedding_dim=3"], "model.embedding_dim: no such config key"),
    ],
)
def test_compose_refuses_unknown_keys_in_one_line(overrides, message):
    with pytest.raises(InputError) as info:
        compose(overrides)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_compose_accepts_new_schema_keys_and_group_appends():
    cfg = compose(["+latency.runtimes=[torchscript]", "data=csv", "data.path=x.csv"])
    assert list(cfg.latency.runtimes) == ["torchscript"] and cfg.data.path == "x.csv"


# --- typed key=value arguments --------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("True", True), ("true", True), ("1", True), ("no", False), ("FALSE", False)])
def test_coerce_bool(text, value):
    assert coerce("fix", text, bool) is value


def test_coerce_refuses_and_names_the_key():
    with pytest.raises(InputError, match="fix: must be true or false, got 'maybe'"):
        coerce("fix", "maybe", bool)
    with pytest.raises(InputError, match="trial: must be an integer, got 'x'"):
        coerce("trial", "x", int)


def test_parse_key_values_types_and_stays_compatible():
    keys = ("fix", "trial", "study.storage", "study.name")
    types = {"fix": bool, "trial": int, "study.storage": schema_type("study.storage")}
    args = parse_key_values(["fix=True", "trial=3", "study.storage=null", "study.name=x"], keys, types)
    assert args == {"fix": True, "trial": 3, "study.storage": None, "study.name": "x"}
    assert parse_key_values(["trial=3"], keys) == {"trial": "3"}  # no types: strings, as before
    with pytest.raises(InputError, match="tria: unknown key; did you mean trial"):
        parse_key_values(["tria=3"], keys)


def test_schema_types_of_config_keys():
    assert schema_type("study.n_trials") is int and schema_type("mlflow.register") is bool
    assert coerce("study.timeout", "null", schema_type("study.timeout")) is None
    assert coerce("study.timeout", "60", schema_type("study.timeout")) == 60.0
    assert schema_type("no.such.key") is str


# --- train.loss and train.negatives ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.loss=foo"], "train.loss: must be one of full|sampled, got 'foo'"),
        (["train.negatives=0"], "train.negatives: must be an integer >= 1, got 0"),
        (["train.negatives=1.5"], "train.negatives: must be an integer >= 1, got 1.5"),
        (["model=cnn", "train.loss=sampled"], "train.loss: must be full unless model.name is seqrec"),
    ],
)
def test_bad_train_loss_values_are_refused_in_one_line(overrides, message):
    from search.validate import validate_config

    with pytest.raises(InputError) as info:
        validate_config(compose(overrides))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_loss_model_rule():
    assert schema.loss_model_problem("sampled", "mlp").key == "train.loss"
    assert schema.loss_model_problem("sampled", "seqrec") is None
    assert schema.loss_model_problem("full", "mlp") is None
    assert schema.KEYS["train.loss"].default == "full" and schema.KEYS["train.negatives"].default == 256
