"""Low-rank factorization of embedding tables: ``W (rows, dim) ~ A (rows, r) @ B (r, dim)``.

At a catalogue of 20,000 items the recommender's item table is nearly the whole model, and its rows are far
from independent: items of a category, a brand, a taste share directions. ``compress.lowrank.rank=r`` stores
such a table as two factors, ``r * (rows + dim)`` values instead of ``rows * dim``, and scoring every item
becomes ``(h @ Bᵀ) @ Aᵀ`` (``r * (rows + dim)`` multiply-adds a request instead of ``rows * dim``). This is the
factorized embedding of ALBERT (Lan et al., 2020) and the low-rank compression of embedding and softmax
layers (e.g. GroupReduce, Chen et al., 2018), applied after training with a fine-tune rather than from the
start.

* **initialisation** (:func:`factorize`): the truncated SVD of the trained table, ``A = U_r S_r``,
  ``B = V_rᵀ``: by Eckart-Young the best rank-``r`` approximation in the Frobenius (and spectral) norm, with
  error ``sqrt(sum_{i >= r} s_i^2)``. Computed in float64, then each factor pair's sign is fixed (the
  largest-magnitude entry of every row of ``B`` is positive), so the same table gives the same factors.
* **which tables** (:func:`factors_table`): every ``nn.Embedding`` among the compressible layers
  (``compress.include`` / ``compress.exclude`` apply) for which the factors store fewer values,
  ``r * (rows + dim) < rows * dim`` (which implies ``r < min(rows, dim)``); other tables stay dense.
* **with pruning and quantization**: ``A`` and ``B`` take the table's place in the list of compressed
  weights: each is pruned (``compress.prune.*``) and quantized per row (``A``: one row per item, ``B``:
  one row per rank component) with its own quantizer of the configured scheme, through the same
  parametrization ``Q(w * mask) * mask``; the table's weight is ``A_q @ B_q`` during the fine-tune, which
  trains ``A`` and ``B`` (straight-through gradients). Neuron pruning never touches embedding tables.
* **decoding** (:class:`Factored`): ``decode(A) @ decode(B)`` as an explicit sum over the ``r`` rank
  components in float32 (:func:`product`): one rounding per multiply and per add in a fixed order, so the
  compressor's in-memory weights, the loader's and any machine's are bit-identical (a BLAS GEMM may change
  its summation order with the thread count). The artifact stores the two encoded factors
  (docs/artifact-format.md, scheme ``lowrank``), never the dense table.

Not taken: product quantization of the table (RecJPQ, Petrov & Macdonald, WSDM 2024: each item id becomes a
few sub-item ids into shared codebooks). It compresses further at large catalogues, but it replaces the
model's embedding layer (codes assigned before training, codebooks trained from scratch) instead of
compressing a trained table; its stored form (integer code assignments + codebooks) needs a decoder, an
artifact entry and an ONNX scoring path of its own; and it does not compose with the per-row quantizers,
pruning and fine-tune that already exist. Two dense factors reuse all of those as they are.

Example:
    >>> w = torch.randn(50, 8)
    >>> a, b = factorize(w, 8)                  # full rank: the table itself (up to float rounding)
    >>> bool(torch.allclose(a @ b, w, atol=1e-5))
    True
    >>> factors_table(201, 64, 8), factors_table(11, 64, 16)
    (True, False)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainers.compress.quantize import Encoded
from trainers.errors import InputError

__all__ = ["Factored", "LowRank", "check_rank", "factorize", "factors_table", "product"]


def check_rank(rank: object) -> int:
    """``compress.lowrank.rank`` as an int (0 = off); :class:`~trainers.errors.InputError` naming the key otherwise."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise InputError("compress.lowrank.rank", f"must be an integer >= 0, got {rank!r}")
    return rank


def factors_table(rows: int, dim: int, rank: int) -> bool:
    """Whether a ``(rows, dim)`` table is factored at ``rank``: on (> 0) and fewer values stored."""
    return 0 < rank and rank * (rows + dim) < rows * dim


@torch.no_grad()
def factorize(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A (rows, rank), B (rank, dim))`` float32 from the truncated SVD of ``w``: ``A = U_r S_r``,
    ``B = V_rᵀ``, the best rank-``rank`` approximation ``A @ B`` of ``w`` (Eckart-Young). ``rank`` may be up
    to ``min(rows, dim)`` (then ``A @ B = w`` up to rounding). Deterministic: float64 SVD, and the sign of
    each component chosen so the largest-magnitude entry of its row of ``B`` is positive."""
    rows, dim = w.shape
    if not 1 <= rank <= min(rows, dim):
        raise ValueError(f"rank must be in 1..{min(rows, dim)} for a {rows}x{dim} table, got {rank}")
    u, s, vh = torch.linalg.svd(w.detach().cpu().to(torch.float64), full_matrices=False)
    u, s, vh = u[:, :rank], s[:rank], vh[:rank]
    peak = vh.gather(1, vh.abs().argmax(1, keepdim=True))              # (rank, 1) largest entry of each row
    sign = torch.where(peak < 0, -1.0, 1.0).to(torch.float64)
    a = (u * (s * sign[:, 0])).to(torch.float32).contiguous()
    b = (vh * sign).to(torch.float32).contiguous()
    return a, b


def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``a (rows, r)``, ``b (r, dim)`` as ``sum_k a[:, k] b[k, :]`` in float32, ``k = 0, 1, ...``:
    separate multiply and add kernels (no fused multiply-add), so the bits depend on the values only."""
    a, b = a.to(torch.float32), b.to(torch.float32)
    out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.float32)
    for k in range(a.shape[1]):
        out = out + a[:, k:k + 1] * b[k:k + 1, :]
    return out


@dataclass
class Factored:
    """A table stored as two encoded factors; ``decode()`` = :func:`product` of the decoded factors.

    Attributes:
        a: the encoded ``(rows, rank)`` factor (quantized per row = per item).
        b: the encoded ``(rank, dim)`` factor (quantized per row = per rank component).
    """

    a: Encoded
    b: Encoded
    scheme = "lowrank"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.a.shape[0], self.b.shape[1])

    @property
    def rank(self) -> int:
        return self.a.shape[1]

    @property
    def bits(self) -> int:
        """The widest code of the two factors (what the runtime choice asks of a quantized weight)."""
        return max(self.a.bits, self.b.bits)

    @property
    def parts(self) -> tuple[Encoded, Encoded]:
        return (self.a, self.b)

    def decode(self) -> torch.Tensor:
        return product(self.a.decode(), self.b.decode())


class LowRank(nn.Module):
    """Parametrization of a table's weight during the fine-tune: ``W = A @ B`` from the trainable factors
    (the original weight is ignored; ``A`` and ``B`` carry their own pruning/quantization parametrizations).

    Example:
        >>> from torch.nn.utils import parametrize
        >>> emb = nn.Embedding(30, 8)
        >>> _ = parametrize.register_parametrization(emb, "weight", LowRank(*factorize(emb.weight, 2)))
        >>> emb.weight.shape, [n for n, _ in emb.named_parameters()][1:]
        (torch.Size([30, 8]), ['parametrizations.weight.0.a', 'parametrizations.weight.0.b'])
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b = nn.Parameter(a.clone()), nn.Parameter(b.clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.a @ self.b                                         # (rows, r) @ (r, dim) -> (rows, dim)
