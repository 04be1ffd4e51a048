"""Tests of trainers.artifact: what the loader rejects, that a file stands alone, and that no pickle is used."""

from __future__ import annotations

import copy
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
from trainers.bitpack import index_bits, pack_bits
from trainers.compress import compress
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
    tensors = artifact.read_header(saved)["tensors"]
    expected = (3 if any(e["layout"] == "gaps" for e in tensors)
                else 2 if any("floats" in e for e in tensors) else 1)
    assert (magic, version, codec, reserved) == (b"SQZM", expected, 2, 0)
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
    blob_area = len(data) - PREAMBLE - 4 - header_len
    end = max(start + length for e in header["tensors"] for start, length in e["blobs"].values())
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
    assert struct.unpack_from("<H", data, 4)[0] == 2              # a version-1 reader refuses it by version
    plain = artifact.pack(side_models[32])           # side_bits=32: float32 network tensors, preprocessing f16
    assert {e["name"] for e in _header(plain)["tensors"] if "floats" in e} <= PREPROCESS
    assert struct.unpack_from("<H", plain, 4)[0] == 2


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


def _pre_gaps_version(data: bytes) -> int:
    """The version the version-2 writer gave a file: 2 with float16 blobs or a factored table, else 1."""
    tensors = _header(data)["tensors"]
    return 2 if any("floats" in e or e["scheme"] == "lowrank" for e in tensors) else 1


@pytest.fixture(scope="module")
def sparse_model(digits) -> Pipeline:
    """90 % of the weights pruned, 2-bit codes: every mask is small enough for the gaps layout."""
    torch.manual_seed(0)
    cfg = {"finetune_epochs": 1, "prune": {"ratio": 0.9}, "quant": {"scheme": "uniform", "bits": 2}}
    return _model(*digits, MLP(64, [24, 12], 10), cfg)


def test_a_file_with_a_gaps_mask_is_version_3_and_loads_bit_exactly(sparse_model, digits) -> None:
    data = artifact.pack(sparse_model)
    weights = [e for e in _header(data)["tensors"] if e["name"].endswith("weight")]
    assert [e["layout"] for e in weights] == ["gaps"] * 3
    assert struct.unpack_from("<H", data, 4)[0] == FORMAT_VERSION == 3
    assert READS_VERSIONS == (1, 2, 3)
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
    assert struct.unpack_from("<H", old, 4)[0] == _pre_gaps_version(old)     # without gaps: version 1 or 2
    assert len(data) < len(old), (len(data), len(old))


def test_a_file_without_gaps_masks_is_written_byte_for_byte_as_before(model, monkeypatch) -> None:
    data = artifact.pack(model)                                      # 50 % pruned: bitmaps win
    assert all(e["layout"] != "gaps" for e in _header(data)["tensors"])
    assert struct.unpack_from("<H", data, 4)[0] == _pre_gaps_version(data)
    monkeypatch.setattr(artifact, "encode_mask", _old_encode_mask)
    assert artifact.pack(model) == data


def test_a_version_2_reader_refuses_a_version_3_file(sparse_model, tmp_path, monkeypatch) -> None:
    path = tmp_path / "gaps.sqz"
    artifact.save(sparse_model, path)
    monkeypatch.setattr(artifact, "READS_VERSIONS", (1, 2))
    msg = str(_load_error(path))
    assert "format version 3 is not supported" in msg and "(reads versions 1, 2)" in msg
    with pytest.raises(ArtifactError, match="format version 3"):
        artifact.read_header(path)


def test_gaps_in_a_factor_of_a_lowrank_table_makes_the_file_version_3() -> None:
    def entry(layout: str) -> dict:
        return {"scheme": "uniform", "layout": layout, "blobs": {}}

    lowrank = {"name": "net.item_emb.weight", "scheme": "lowrank",
               "factors": {"a": entry("bitmap"), "b": entry("gaps")}}
    assert artifact._version([{"name": "w", **entry("dense")}, lowrank]) == 3
    lowrank["factors"]["b"] = entry("indices")
    assert artifact._version([lowrank]) == 2                         # a factored table alone: version 2
    assert artifact._version([{"name": "w", **entry("gaps")}]) == 3
    assert artifact._version([{"name": "w", **entry("bitmap"), "floats": "f16"}]) == 2
    assert artifact._version([{"name": "w", **entry("indices")}]) == 1
