"""The compression benchmark's byte accounting (benchmarks/compression.py ``payload_breakdown``): every byte of
an artifact's uncompressed payload is counted once, a factored table (scheme ``lowrank``, whose blobs live in
its two factor entries) included.

Oracle: a file written with codec ``none`` holds its payload as is, after the 20-byte preamble
(docs/artifact-format.md section 1.1), so the payload's length is the file's length minus 20.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trainers import artifact
from trainers.compress.lowrank import Factored
from trainers.data import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compression  # noqa: E402  (benchmarks/compression.py)

PREAMBLE_BYTES = 20
SHOP = {"name": "ecommerce", "n_users": 40, "n_items": 80, "max_len": 8, "min_events": 5, "max_events": 10}
MODEL = {"name": "seqrec", "d_model": 16, "width": 1.0, "heads": 2, "blocks": 1, "ffn_mult": 1.0, "max_len": 8,
         "dropout": 0.0, "side_features": True}
TRAIN = {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "epochs": 1, "batch_size": 32, "threads": 1}
#: factored tables, with masks (pruned factors), codes and per-row scales in their factor entries
COMPRESS = {"finetune_epochs": 1, "side_bits": 16, "lowrank": {"rank": 4},
            "prune": {"ratio": 0.5, "schedule": "gradual"}, "quant": {"scheme": "uniform", "bits": 4}}


@pytest.fixture(scope="module")
def lowrank_file(tmp_path_factory) -> Path:
    from trainers.pipeline import fit_compressed

    ds = load_dataset(SHOP)
    cfg = {"data": SHOP, "model": MODEL, "train": TRAIN, "device": "cpu", "n_classes": ds.n_classes,
           "compress": COMPRESS}
    model = fit_compressed(cfg, ds.X, ds.y, seed=0)[0]
    assert isinstance(model.encodings["net.item_emb.weight"], Factored)
    path = tmp_path_factory.mktemp("bench") / "lowrank.sqz"
    artifact.save(model, path, codec="none")
    return path


def test_payload_breakdown_counts_every_payload_byte_of_a_factored_file(lowrank_file):
    out = compression.payload_breakdown(lowrank_file)
    assert out["file"] == lowrank_file.stat().st_size
    assert out["raw_payload"] == out["file"] - PREAMBLE_BYTES          # nothing missed, nothing counted twice
    assert out["codes"] and out["mask"] and out["per_channel"]


def test_a_factored_entrys_blobs_are_those_of_its_two_factors(lowrank_file):
    entries = {e["name"]: e for e in artifact.read_header(lowrank_file)["tensors"]}
    table = entries["net.item_emb.weight"]
    assert table["scheme"] == Factored.scheme and "blobs" not in table
    assert compression.stored_entries(table) == [table["factors"]["a"], table["factors"]["b"]]
    dense = entries["net.blocks.0.attn.q.weight"]
    assert compression.stored_entries(dense) == [dense]
