"""Tests of trainers.artifact: what the loader rejects, that a file stands alone, and that no pickle is used."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers import artifact
from trainers.artifact import FORMAT_VERSION, READS_VERSIONS, ArtifactError
from trainers.bitpack import decode_mask, index_bits, pack_bits, unpack_bits
from trainers.compress import compress
from trainers.compress.lowrank import Factored
from trainers.data import Preprocessor, load_dataset
from trainers.errors import InputError
from trainers.fit import seed_everything, train
from trainers.models import CNN, MLP, Pipeline, Preprocess

REPO = Path(__file__).resolve().parents[1]
TRAIN_CFG = {"optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "epochs": 2, "batch_size": 64, "threads": 1}
PREAMBLE = 20
#: preprocessing statistics: float16 where they fit, whatever ``compress.side_bits``
#: (trainers/models/preprocess.py)
PREPROCESS = {"preprocess.mean", "preprocess.scale", "preprocess.pca_components", "preprocess.pca_mean"}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset({"name": "digits"})
    return ds.X[:300], ds.y[:300]


def _model(X: np.ndarray, y: np.ndarray, net: torch.nn.Module, compress_cfg: dict) -> Pipeline:
    seed_everything(0)
    pre = Preprocess.from_state(list(X.shape[1:]), Preprocessor().fit(X).state_dict())
    with torch.no_grad():
        Xt = pre(torch.from_numpy(X))
    yt = torch.from_numpy(y)
    train(net, Xt, yt, TRAIN_CFG, 0, device="cpu")
    report = compress(net, Xt, yt, compress_cfg, TRAIN_CFG, 0, device="cpu")
    model = Pipeline(pre, net)
    model.encodings = {f"net.{k}": v for k, v in report.encodings.items()}
    return model.eval()


@pytest.fixture(scope="module")
def model(digits) -> Pipeline:
    """A small MLP pruned + uniform-4-bit quantized: every kind of blob (mask, codes, scale, offset)."""
    torch.manual_seed(0)
    cfg = {"finetune_epochs": 1, "prune": {"ratio": 0.5}, "quant": {"scheme": "uniform", "bits": 4}}
    return _model(*digits, MLP(64, [24, 12], 10), cfg)


@pytest.fixture
def saved(model, tmp_path) -> Path:
    path = tmp_path / "model.sqz"
    artifact.save(model, path, meta={"trial": 7})
    return path


def _load_error(path: Path) -> ArtifactError:
    with pytest.raises(ArtifactError) as info:
        artifact.load(path)
    err = info.value
    assert isinstance(err, InputError)                     # entry points print it as a user error
    assert err.where == str(path)
    assert "\n" not in str(err) and str(err).startswith(f"{path}: ")
    return err


# ---------------------------------------------------------------- what the loader rejects


def test_loader_rejects_a_missing_file(tmp_path) -> None:
    assert "not found" in str(_load_error(tmp_path / "nope.sqz"))


def test_loader_rejects_a_directory(tmp_path) -> None:
    assert "not found" in str(_load_error(tmp_path))


@pytest.mark.parametrize("keep", [0, 10, PREAMBLE, -1, -100])
def test_loader_rejects_a_truncated_file(saved, keep: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    assert "truncated" in str(_load_error(saved))


def test_loader_rejects_trailing_garbage(saved) -> None:
    saved.write_bytes(saved.read_bytes() + b"\0")
    assert "padded" in str(_load_error(saved))


@pytest.mark.parametrize("where", [PREAMBLE, PREAMBLE + 100, -1])
def test_loader_rejects_a_flipped_payload_byte_by_checksum(saved, where: int) -> None:
    data = bytearray(saved.read_bytes())
    data[where] ^= 0x01
    saved.write_bytes(bytes(data))
    assert "checksum mismatch" in str(_load_error(saved))


def test_loader_rejects_a_wrong_magic(saved) -> None:
    saved.write_bytes(b"PK\x03\x04" + saved.read_bytes()[4:])
    assert "not a squeeze artifact" in str(_load_error(saved))


def test_loader_rejects_a_newer_format_version(saved) -> None:
    data = bytearray(saved.read_bytes())
    assert struct.unpack_from("<H", data, 4)[0] in READS_VERSIONS
    struct.pack_into("<H", data, 4, FORMAT_VERSION + 1)
    saved.write_bytes(bytes(data))
    msg = str(_load_error(saved))
    assert f"format version {FORMAT_VERSION + 1}" in msg and "upgrade" in msg


def test_loader_rejects_an_unknown_codec(saved) -> None:
    data = bytearray(saved.read_bytes())
    data[6] = 9
    saved.write_bytes(bytes(data))
    assert "codec" in str(_load_error(saved))


def test_read_header_rejects_like_load(saved) -> None:
    saved.write_bytes(saved.read_bytes()[:-1])
    with pytest.raises(ArtifactError, match="truncated") as info:
        artifact.read_header(saved)
    assert info.value.where == str(saved)


def test_unpack_of_bytes_names_the_given_source() -> None:
    with pytest.raises(ArtifactError) as info:
        artifact.unpack(b"SQZ", where="upload #3")
    assert info.value.where == "upload #3"


# ---------------------------------------------------------------- preamble and codecs


def test_preamble_fields_describe_the_payload(saved) -> None:
    data = saved.read_bytes()
    magic, version, codec, reserved, length, crc = struct.unpack_from("<4sHBBQI", data)
    assert (magic, version, codec, reserved) == (b"SQZM", FORMAT_VERSION, 2, 0)
    assert FORMAT_VERSION == 4 and READS_VERSIONS == (1, 2, 3, 4)        # every new file: version 4
    assert length == len(data) - PREAMBLE
    assert crc == zlib.crc32(data[PREAMBLE:])


@pytest.mark.parametrize("codec", ["none", "zlib", "lzma"])
def test_every_codec_round_trips_exactly(model, digits, codec: str) -> None:
    data = artifact.pack(model, codec=codec)
    assert data[6] == {"none": 0, "zlib": 1, "lzma": 2}[codec]
    X = torch.from_numpy(digits[0])
    with torch.no_grad():
        assert torch.equal(artifact.unpack(data)(X), model(X))


def test_uncompressed_payload_is_header_length_then_json_then_blobs(model) -> None:
    data = artifact.pack(model, codec="none", meta={"k": "v"})
    (header_len,) = struct.unpack_from("<I", data, PREAMBLE)
    header = json.loads(data[PREAMBLE + 4:PREAMBLE + 4 + header_len])
    assert set(header) == {"arch", "meta", "tensors"} and header["meta"] == {"k": "v"}
    assert sorted(t[0] for t in header["tensors"]) == sorted(model.state_dict())   # one array per tensor, name first
    blob_area = len(data) - PREAMBLE - 4 - header_len
    end = max(start + length for e in _header(data)["tensors"] for start, length in e["blobs"].values())
    assert end == blob_area


def test_unknown_codec_name_is_an_input_error(model) -> None:
    with pytest.raises(InputError, match=r"^compress\.codec: "):
        artifact.pack(model, codec="zstd")


# ---------------------------------------------------------------- the file stands alone


LOAD_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from trainers.artifact import load
    X = torch.from_numpy(np.load(sys.argv[1]))
    for path in sys.argv[2:]:
        with torch.no_grad():
            np.save(path + ".npy", load(path)(X).numpy())
""")


def test_load_needs_the_file_alone_in_a_fresh_process(digits, tmp_path) -> None:
    X, y = digits
    torch.manual_seed(0)
    models = {
        "mlp.sqz": _model(X, y, MLP(64, [16], 10),
                          {"finetune_epochs": 0, "neurons": {"ratio": 0.25}, "quant": {"scheme": "ternary"}}),
        "cnn.sqz": _model(X, y, CNN([1, 8, 8], [4, 6], [8], 10),
                          {"finetune_epochs": 1, "prune": {"ratio": 0.3, "scope": "global"},
                           "quant": {"scheme": "fixed_point", "bits": 6}}),
    }
    inputs = tmp_path / "x.npy"
    np.save(inputs, X)
    for name, model in models.items():
        artifact.save(model, tmp_path / name)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(inputs), *(str(tmp_path / n) for n in models)],
                   check=True, cwd=tmp_path, env=env, timeout=120)
    for name, model in models.items():
        theirs = np.load(tmp_path / f"{name}.npy")
        with torch.no_grad():
            mine = model(torch.from_numpy(X)).numpy()
        np.testing.assert_array_equal(theirs.argmax(1), mine.argmax(1))
        np.testing.assert_allclose(theirs, mine, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- no pickle


@pytest.mark.parametrize("codec", ["none", "lzma"])
def test_file_contains_no_pickle_stream(model, tmp_path, codec: str) -> None:
    path = tmp_path / "m.sqz"
    artifact.save(model, path, codec=codec)
    data = path.read_bytes()
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):        # every pickle stream starts b"\x80" + protocol
        assert pickle.dumps({"a": 1}, protocol=protocol)[:2] == bytes([0x80, protocol])
    assert b"\x80\x04\x95" not in data and b"\x80\x05\x95" not in data
    assert b"torch._utils" not in data and b"collections\nOrderedDict" not in data


def test_load_works_with_pickle_and_torch_load_disabled(saved, digits, model, monkeypatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("artifact.load used pickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = artifact.load(saved)
    X = torch.from_numpy(digits[0])
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))
    assert loaded.meta == {"trial": 7}


# ---------------------------------------------------------------- float16 side information


def _header(data: bytes) -> dict:
    return artifact._split(data, "<bytes>")[0]


@pytest.fixture(scope="module")
def side_models(digits) -> dict[int, Pipeline]:
    """The ``model`` fixture's setting compressed with ``compress.side_bits`` 32 and 16."""
    out = {}
    for side_bits in (32, 16):
        torch.manual_seed(0)
        cfg = {"finetune_epochs": 1, "prune": {"ratio": 0.5}, "quant": {"scheme": "uniform", "bits": 4},
               "side_bits": side_bits}
        out[side_bits] = _model(*digits, MLP(64, [24, 12], 10), cfg)
    return out


def test_16_bit_side_information_is_stored_as_float16_and_loads_bit_exactly(side_models, digits) -> None:
    model = side_models[16]
    data = artifact.pack(model)
    entries = {e["name"]: e for e in _header(data)["tensors"]}
    for i in range(3):
        weight, bias = entries[f"net.layers.{i}.weight"], entries[f"net.layers.{i}.bias"]
        assert weight["floats"] == "f16"
        assert weight["blobs"]["scale"][1] == weight["blobs"]["offset"][1] == 2 * weight["shape"][0]
        assert bias["floats"] == "f16" and bias["blobs"]["codes"][1] == 2 * bias["shape"][0]
    assert entries["preprocess.mean"]["floats"] == "f16"          # rounded when built (see PREPROCESS)
    loaded = artifact.unpack(data)
    X = torch.from_numpy(digits[0])
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert artifact.pack(loaded) == data
    assert all(e["layout"] in ("dense", "bitmap") for e in _header(data)["tensors"])   # 50 % kept: bitmaps
    plain = artifact.pack(side_models[32])           # side_bits=32: float32 network tensors, preprocessing f16
    assert {e["name"] for e in _header(plain)["tensors"] if "floats" in e} <= PREPROCESS


def test_16_bit_side_information_makes_the_file_smaller(side_models) -> None:
    sizes = {bits: len(artifact.pack(m)) for bits, m in side_models.items()}
    per_channel = sum(3 * 2 * n for n in (24, 12, 10))             # scale + offset + bias, 2 bytes saved each
    assert sizes[16] < sizes[32] - per_channel // 2, sizes
    assert all("floats" not in e for e in _header(artifact.pack(side_models[32]))["tensors"]
               if e["name"] not in PREPROCESS)


def _as_float32_file(data: bytes) -> bytes:
    """``data`` rewritten as a writer without float16 blobs wrote it: every ``floats`` key dropped, the float
    blobs it named widened to float32, the blob offsets and the preamble recomputed (codec none)."""
    header, blob = artifact._split(data, "<bytes>")
    area = bytearray()
    for entry in header["tensors"]:
        half = entry.pop("floats", "f32") == "f16"
        for key, (start, length) in entry["blobs"].items():
            raw = bytes(blob[start:start + length])
            if half and (key in ("scale", "offset") or (key == "codes" and entry["scheme"] == "fp32")):
                raw = np.frombuffer(raw, dtype="<f2").astype("<f4").tobytes()
            entry["blobs"][key] = [len(area), len(raw)]
            area.extend(raw)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    payload = struct.pack("<I", len(text)) + text + bytes(area)
    return struct.pack("<4sHBBQI", b"SQZM", 1, 0, 0, len(payload), zlib.crc32(payload)) + payload   # version 1


def test_an_entry_without_floats_loads_as_float32(side_models, digits) -> None:
    model = side_models[16]
    old_style = _as_float32_file(artifact.pack(model, codec="none"))
    assert all("floats" not in e for e in _header(old_style)["tensors"])
    loaded = artifact.unpack(old_style)
    X = torch.from_numpy(digits[0])
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))
    assert len(artifact.pack(loaded, codec="none")) < len(old_style)   # written again: float16 where lossless


@pytest.mark.parametrize("values, dtype", [
    ([0.5, -2.0, 0.0, 65504.0, 2.0**-24], "f16"),                   # every value exact in float16
    ([0.5, -2.0, 0.0, 65504.0, 7e4], "f32"),                        # 7e4 > float16's largest
    ([0.5, -2.0, 0.0, 65504.0, 0.1], "f32"),                        # 0.1 is not exact in float16
    ([0.5, -2.0, 0.0, 65504.0, 2.0**-25], "f32"),                   # underflows to 0 in float16
    ([0.5, -2.0, 0.0, 65504.0, math.inf], "f32"),
])
def test_a_float_tensor_is_stored_float16_only_when_that_is_lossless(model, digits, values, dtype) -> None:
    model = copy.deepcopy(model)
    bias = torch.tensor(values * 2, dtype=torch.float32)           # the last layer's 10 biases
    with torch.no_grad():
        model.net.layers[2].bias.copy_(bias)
    data = artifact.pack(model)
    entry = next(e for e in _header(data)["tensors"] if e["name"] == "net.layers.2.bias")
    assert entry.get("floats", "f32") == dtype
    assert entry["blobs"]["codes"][1] == (2 if dtype == "f16" else 4) * 10
    assert torch.equal(artifact.unpack(data).net.layers[2].bias, bias)


# ---------------------------------------------------------------- the gaps mask layout (version 3)


def _old_encode_mask(mask: np.ndarray) -> tuple[str, bytes]:
    """The mask writer of format version 2: ``indices`` when strictly smaller than the bitmap, else bitmap."""
    mask = np.asarray(mask, dtype=bool).ravel()
    bitmap = np.packbits(mask, bitorder="little").tobytes()
    positions = np.flatnonzero(mask)
    if math.ceil(positions.size * index_bits(mask.size) / 8) < len(bitmap):
        return "indices", pack_bits(positions, index_bits(mask.size))
    return "bitmap", bitmap


@pytest.fixture(scope="module")
def sparse_model(digits) -> Pipeline:
    """90 % of the weights pruned, 2-bit codes: every mask is small enough for the gaps layout."""
    torch.manual_seed(0)
    cfg = {"finetune_epochs": 1, "prune": {"ratio": 0.9}, "quant": {"scheme": "uniform", "bits": 2}}
    return _model(*digits, MLP(64, [24, 12], 10), cfg)


def test_a_file_with_gaps_masks_loads_bit_exactly(sparse_model, digits) -> None:
    data = artifact.pack(sparse_model)
    weights = [e for e in _header(data)["tensors"] if e["name"].endswith("weight")]
    assert [e["layout"] for e in weights] == ["gaps"] * 3
    loaded = artifact.unpack(data)
    X = torch.from_numpy(digits[0])
    with torch.no_grad():
        assert torch.equal(loaded(X), sparse_model(X))
    for name, tensor in sparse_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    for name, enc in sparse_model.encodings.items():
        assert torch.equal(loaded.encodings[name].mask, enc.mask), name
    assert artifact.pack(loaded) == data                             # packing a loaded model: the same bytes


def test_gaps_masks_make_the_file_smaller_than_the_version_2_writer(sparse_model, monkeypatch) -> None:
    data = artifact.pack(sparse_model)
    monkeypatch.setattr(artifact, "encode_mask", _old_encode_mask)
    old = artifact.pack(sparse_model)
    assert all(e["layout"] != "gaps" for e in _header(old)["tensors"])
    assert len(data) < len(old), (len(data), len(old))


def test_masks_that_gaps_does_not_beat_are_stored_as_the_version_2_writer_stored_them(model, monkeypatch) -> None:
    data = artifact.pack(model)                                      # 50 % pruned: bitmaps win
    assert all(e["layout"] != "gaps" for e in _header(data)["tensors"])
    monkeypatch.setattr(artifact, "encode_mask", _old_encode_mask)
    assert artifact.pack(model) == data


# ---------------------------------------------------------------- the compact tensor table (version 4)

FIXTURES = REPO / "tests" / "fixtures" / "artifact"
#: files written by the version-1..3 writer (trainers/artifact.py at e56c998, before version 4) -> (their version,
#: SHA-256 over (name, float32 bytes) of every tensor of the state dict that writer's reader decoded). The models:
#: a digits MLP(64, [12], 10) without preprocessing, 50 % pruned, 6-bit fixed point, side_bits 32 (version 1); a
#: seqrec on a 60-item ecommerce shop, every table factored at rank 3, 50 % pruned, 3-bit uniform, side_bits 16
#: (version 2: lowrank, float16); a CNN([1, 8, 8], [4, 6], [8], 10) 90 % pruned, ternary, first and last
#: layer fp32 (version 3: gaps and indices masks, pruned fp32 weights); tests/user_models GatedNet(hidden=8)
#: 90 % pruned, 2-bit uniform, ``out`` excluded (version 3, a user's model with uncompressed_modules)
OLD_FILES = {
    "v1-mlp.sqz": (1, "85d089486d11d22da788df35ac6fc86f34bc0b0e802f490a874020836df408bc"),
    "v2-seqrec-lowrank.sqz": (2, "c9685be7c638c6f8bd68599855d125a018113b01221d53bb5cc569542abb14eb"),
    "v3-cnn.sqz": (3, "5596769ebd50b7ad10e0e1b814c820b0f500d823793f83bee127bd9b3d8a21be"),
    "v3-custom-gated.sqz": (3, "b447deb26fd31d282cf6fb07432167a90856355aa64a2c07445161cf48a713e2"),
}
USER_MODELS = ["tests.user_models"]


def _digest(model: Pipeline) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _as_dict_header_file(data: bytes, version: int = 3, codec: str = "lzma") -> bytes:
    """``data`` laid out as the version-1..3 writer laid it out: the expanded header (``read_header``'s form, one
    object per tensor with its blob offsets) as sorted compact JSON, the blob area unchanged."""
    header, blob = artifact._split(data, "<bytes>")
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    payload = artifact._compress(struct.pack("<I", len(text)) + text + bytes(blob), codec)
    codec_id = {"none": 0, "zlib": 1, "lzma": 2}[codec]
    return struct.pack("<4sHBBQI", b"SQZM", version, codec_id, 0, len(payload), zlib.crc32(payload)) + payload


def _same_encoding(x, y) -> bool:
    if isinstance(x, Factored) or isinstance(y, Factored):
        return isinstance(x, Factored) and isinstance(y, Factored) and all(map(_same_encoding, x.parts, y.parts))
    tensors = [(getattr(x, k), getattr(y, k)) for k in ("mask", "codes", "scale", "offset")]
    return ((x.scheme, tuple(x.shape), x.bits, x.frac_bits) == (y.scheme, tuple(y.shape), y.bits, y.frac_bits)
            and all((a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
                    for a, b in tensors))


def _round_trips_at_version_4(model: Pipeline, meta: dict) -> bytes:
    """Pack ``model``: version 4, it loads with the same tensors and encodings, and packing that gives the same
    bytes. Returns the bytes."""
    data = artifact.pack(model, meta=meta)
    assert struct.unpack_from("<H", data, 4)[0] == 4
    loaded = artifact.unpack(data, allow=USER_MODELS)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.encodings.keys() == model.encodings.keys()
    assert all(_same_encoding(loaded.encodings[k], enc) for k, enc in model.encodings.items())
    assert loaded.meta == meta
    assert artifact.pack(loaded, meta=loaded.meta) == data
    return data


@pytest.mark.parametrize("name", list(OLD_FILES))
def test_files_of_versions_1_to_3_still_load_bit_exactly(name) -> None:
    version, digest = OLD_FILES[name]
    data = (FIXTURES / name).read_bytes()
    assert struct.unpack_from("<H", data, 4)[0] == version
    model = artifact.load(FIXTURES / name, allow=USER_MODELS)
    assert _digest(model) == digest
    assert sorted(e["name"] for e in artifact.read_header(FIXTURES / name)["tensors"]) == sorted(model.state_dict())


@pytest.mark.parametrize("name", list(OLD_FILES))
def test_an_old_file_packed_again_is_version_4_with_the_same_expanded_header_and_blobs(name) -> None:
    """mlp, seqrec with factored tables, cnn and a user's model: the version-4 file decodes to the same tensors, and
    ``read_header`` says exactly what the version-1..3 file said (names, shapes, layouts, n_kept, blob slices)."""
    old = (FIXTURES / name).read_bytes()
    model = artifact.unpack(old, allow=USER_MODELS)
    data = _round_trips_at_version_4(model, model.meta)
    assert _digest(artifact.unpack(data, allow=USER_MODELS)) == OLD_FILES[name][1]
    (old_header, old_blob), (header, blob) = artifact._split(old, name), artifact._split(data, name)
    assert bytes(blob) == bytes(old_blob)
    if "uncompressed_modules" in old_header:
        # a loaded model's encodings hold every weight, so packing it again cannot tell which layers squeeze
        # left fp32 and omits the key (a gap of unpack, not of the header format; see the test below)
        header.setdefault("uncompressed_modules", old_header["uncompressed_modules"])
    else:                                           # the old writer's bytes, from the version-4 file alone
        assert _as_dict_header_file(data, OLD_FILES[name][0]) == old
    assert header == old_header
    assert len(data) < len(old), (len(data), len(old))


def test_a_fresh_model_round_trips_at_version_4(sparse_model, side_models) -> None:
    for model in (sparse_model, side_models[32]):
        _round_trips_at_version_4(model, {"trial": 3})


def test_a_users_model_file_keeps_uncompressed_modules_at_version_4(digits) -> None:
    from trainers.pipeline import fit_and_compress

    X, y = digits
    cfg = {"model": {"name": "custom", "_target_": "tests.user_models.nets.GatedNet", "kwargs": {"hidden": 8},
                     "width": 1.0, "widen": []},
           "data": {"standardize": True, "pca": None}, "train": {**TRAIN_CFG, "epochs": 1}, "device": "cpu",
           "compress": {"finetune_epochs": 0, "prune": {"ratio": 0.9}, "neurons": {"ratio": 0.0}, "exclude": ["out"],
                        "quant": {"scheme": "uniform", "bits": 2}}}
    model = fit_and_compress(cfg, X, y, seed=0).model
    data = artifact.pack(model)
    assert struct.unpack_from("<H", data, 4)[0] == 4
    assert _header(data)["uncompressed_modules"] == ["bn", "gate", "norm", "out"]
    loaded = artifact.unpack(data, allow=USER_MODELS)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_version_4_blob_slices_hold_each_tensors_mask_codes_and_side_values(sparse_model, side_models) -> None:
    """The offsets and lengths the reader derives, against the model's own encodings: the blobs lie back to back in
    table order and each slice decodes to that tensor's mask, codes, scale and offset."""
    for model in (sparse_model, side_models[16]):
        header, blob = artifact._split(artifact.pack(model), "<bytes>")
        end = 0
        for entry in header["tensors"]:
            enc = model.encodings.get(entry["name"]) or artifact._raw(model.state_dict()[entry["name"]])
            dtype = "<f2" if entry.get("floats") == "f16" else "<f4"
            assert (entry["layout"] == "dense") == (enc.mask is None) and entry["n_kept"] == enc.n_kept
            for key, (start, length) in entry["blobs"].items():        # mask, codes, scale, offset: in this order
                assert start == end, (entry["name"], key)
                end += length
                raw = bytes(blob[start:start + length])
                if key == "mask":
                    got = torch.from_numpy(decode_mask(entry["layout"], raw, enc.numel, enc.n_kept))
                    assert torch.equal(got, enc.mask)
                elif key == "codes" and entry["scheme"] != "fp32":
                    assert torch.equal(torch.from_numpy(unpack_bits(raw, entry["bits"], enc.n_kept)), enc.codes)
                else:
                    values = enc.codes if key == "codes" else getattr(enc, key)
                    assert np.array_equal(np.frombuffer(raw, dtype=dtype).astype(np.float32), values.numpy())
        assert end == len(blob)


def test_the_version_4_header_makes_a_small_model_file_smaller(sparse_model) -> None:
    data = artifact.pack(sparse_model, meta={"trial": 7})
    old = _as_dict_header_file(data)                                   # the same file as version 3 wrote it
    header_bytes = [struct.unpack_from("<I", artifact._decompress(d[PREAMBLE:], 2, ""))[0] for d in (data, old)]
    assert header_bytes[0] < header_bytes[1] / 2, header_bytes
    assert len(data) < len(old) - 100, (len(data), len(old))
    assert _header(old) == _header(data)                               # the same information


def test_a_version_3_reader_refuses_a_version_4_file(saved, monkeypatch) -> None:
    monkeypatch.setattr(artifact, "READS_VERSIONS", (1, 2, 3))
    msg = str(_load_error(saved))
    assert "format version 4 is not supported" in msg and "(reads versions 1, 2, 3)" in msg
    with pytest.raises(ArtifactError, match="format version 4"):
        artifact.read_header(saved)


def _rewritten(data: bytes, edit=None, blob_edit=None, text: bytes | None = None,
               header_len: int | None = None) -> bytes:
    """``data`` (codec none) with its raw JSON header changed by ``edit`` (or replaced by ``text``), its blob area
    by ``blob_edit``, and a valid preamble: only the contents are wrong, as a buggy writer would make them."""
    (length,) = struct.unpack_from("<I", data, PREAMBLE)
    raw = json.loads(data[PREAMBLE + 4:PREAMBLE + 4 + length])
    blob = data[PREAMBLE + 4 + length:]
    if edit is not None:
        edit(raw)
    if text is None:
        text = json.dumps(raw, separators=(",", ":")).encode()
    if blob_edit is not None:
        blob = blob_edit(blob)
    payload = struct.pack("<I", len(text) if header_len is None else header_len) + text + blob
    return struct.pack("<4sHBBQI", b"SQZM", 4, 0, 0, len(payload), zlib.crc32(payload)) + payload


def _set(index: int, field: int, value):
    def edit(raw):
        raw["tensors"][index][field] = value
    return edit


def _set_entry(index: int, value):
    def edit(raw):
        raw["tensors"][index] = value
    return edit


# sparse_model's table: 0 preprocess.mean, 1 preprocess.scale, then per layer i: 2 + 2i weight
# ["net.layers.i.weight", "uniform", shape, 2, float width, "gaps", n_kept, mask bytes] and 3 + 2i bias
# ["net.layers.i.bias", "fp32", shape, float width]
@pytest.mark.parametrize("edit, blob_edit, problem", [
    (lambda raw: raw["tensors"][2].pop(), None, "tensor 2 (net.layers.0.weight): after its name, a uniform entry"),
    (_set(2, 1, "int3"), None, "unknown scheme 'int3'"),
    (_set(2, 5, "zip"), None, "unknown layout 'zip'"),
    (_set(2, 5, "dense"), None, "unknown layout 'dense'"),
    (_set(2, 6, 24 * 64 + 1), None, "n_kept must be an integer in 0..1536, got 1537"),
    (_set(2, 6, -1), None, "n_kept must be an integer in 0..1536, got -1"),
    (_set(2, 3, 0), None, "bits must be an integer in 1..32, got 0"),
    (_set(2, 3, True), None, "bits must be an integer in 1..32, got True"),
    (_set(3, 2, 24), None, "shape must be a non-empty list, got 24"),
    (_set(3, 2, [-24]), None, "a dimension must be an integer in 0.., got -24"),
    (_set(3, 3, 8), None, "tensor 3 (net.layers.0.bias): the float width must be an integer in 16..32, got 8"),
    (_set(3, 3, 24), None, "tensor 3 (net.layers.0.bias): the float width must be 16 or 32, got 24"),
    (_set(3, 3, 16.0), None, "the float width must be an integer in 16..32, got 16.0"),
    (_set_entry(3, {"name": "net.layers.0.bias"}), None, "tensor 3 must be [name, scheme"),
    (lambda raw: raw.__setitem__("tensors", {}), None, "'tensors' must be a list, got dict"),
    (lambda raw: raw["tensors"][2].__setitem__(6, raw["tensors"][2][6] + 4), None, "its blobs take"),
    (lambda raw: raw["tensors"].pop(), None, "its blobs take"),
    (None, lambda blob: blob[:-1], "its blobs take"),
    (None, lambda blob: blob + b"\0", "its blobs take"),
])
def test_a_corrupt_version_4_tensor_table_is_refused_naming_the_problem(sparse_model, tmp_path, edit, blob_edit,
                                                                         problem) -> None:
    path = tmp_path / "bad.sqz"
    path.write_bytes(_rewritten(artifact.pack(sparse_model, codec="none"), edit, blob_edit))
    msg = str(_load_error(path))
    assert msg.startswith(f"{path}: tensor table is corrupt (") and msg.endswith("): the file is corrupt"), msg
    assert problem in msg, msg
    with pytest.raises(ArtifactError, match="tensor table is corrupt"):
        artifact.read_header(path)


def test_blob_area_length_mismatches_say_both_lengths(sparse_model, tmp_path) -> None:
    data = artifact.pack(sparse_model, codec="none")
    area = len(artifact._split(data, "")[1])
    path = tmp_path / "short.sqz"
    path.write_bytes(_rewritten(data, blob_edit=lambda blob: blob[:-3]))
    assert f"its blobs take {area} bytes, the blob area has {area - 3}" in str(_load_error(path))


@pytest.mark.parametrize("kwargs, problem", [
    ({"header_len": 10 ** 6}, "header length 1000000 does not fit the"),
    ({"text": b'{"arch": {"net": '}, "header is not JSON ("),
    ({"text": b"\xff\xfe\x00"}, "header is not JSON ("),
    ({"text": b"[1, 2]"}, "header is not an object with 'arch' and 'tensors'"),
    ({"edit": lambda raw: raw.pop("arch")}, "header is not an object with 'arch' and 'tensors'"),
    ({"edit": _set(3, 0, "net.layers.0.beta")}, "tensor table does not match the architecture "
                                                 "(net.layers.0.bias is missing; net.layers.0.beta is not in the model)"),
])
def test_a_truncated_or_corrupt_header_is_an_artifact_error(sparse_model, tmp_path, kwargs, problem) -> None:
    path = tmp_path / "bad.sqz"
    path.write_bytes(_rewritten(artifact.pack(sparse_model, codec="none"), **kwargs))
    msg = str(_load_error(path))
    assert problem in msg and msg.endswith(": the file is corrupt"), msg


def test_a_payload_too_short_for_its_header_length_is_an_artifact_error(tmp_path) -> None:
    path = tmp_path / "bad.sqz"
    path.write_bytes(struct.pack("<4sHBBQI", b"SQZM", 4, 0, 0, 2, zlib.crc32(b"{}")) + b"{}")
    assert str(_load_error(path)).endswith(": payload of 2 bytes has no header length: the file is corrupt")


def test_a_lowrank_entry_must_hold_two_factors_that_multiply(tmp_path) -> None:
    model = artifact.load(FIXTURES / "v2-seqrec-lowrank.sqz")
    data = artifact.pack(model, codec="none")
    table = json.loads(data[PREAMBLE + 4:PREAMBLE + 4 + struct.unpack_from("<I", data, PREAMBLE)[0]])["tensors"]
    assert table[0][:2] == ["net.item_emb.weight", "lowrank"] and table[0][2][:2] == ["uniform", [61, 3]]
    path = tmp_path / "bad.sqz"
    def nested(raw):                                   # factor a: itself a lowrank entry
        raw["tensors"][0][2] = raw["tensors"][0][1:]

    for edit, problem in [(lambda raw: raw["tensors"][0][2].__setitem__(1, [61, 4]), "do not multiply"),
                          (lambda raw: raw["tensors"][0].pop(), "must be [name, 'lowrank', a, b]"),
                          (nested, "two stored factors")]:
        path.write_bytes(_rewritten(data, edit))
        msg = str(_load_error(path))
        assert "tensor 0 (net.item_emb.weight): " in msg and problem in msg, msg


def test_the_writer_sizes_the_lzma_dictionary_to_the_payload_and_the_stream_is_unchanged(model) -> None:
    import lzma

    assert artifact._lzma_filters(100)[0]["dict_size"] == 4096
    assert artifact._lzma_filters(5000)[0]["dict_size"] == 8192
    assert artifact._lzma_filters(8192)[0]["dict_size"] == 8192
    payload = artifact.pack(model, codec="none")[20:]           # a real payload: header + blobs
    small = artifact._compress(payload, "lzma")
    assert lzma.decompress(small, format=lzma.FORMAT_RAW, filters=artifact._LZMA_FILTERS) == payload
    assert small == lzma.compress(payload, format=lzma.FORMAT_RAW, filters=artifact._LZMA_FILTERS)
