"""A self-attentive sequential recommender (SASRec-style): scores every item as the user's next event.

    x (B, C, L) int64 events, left-padded with 0: channel 0 item ids, channels 1.. side features,
                the last channels user features (the same at every event of a row)
      -> keep the last max_len events                                         (B, C, T)
      -> item_emb(item) + sum_c side_emb[c](feature c) + pos_emb(position)   (B, T, D)   pads -> 0
      -> [x + Attention(LN(x)); x + FFN(LN(x))] * blocks, causal, pads -> 0   (B, T, D)
      -> LN -> last position h                                               (B, D)
      -> + u = sum_c user_emb[c](user feature c at the last position)        (B, D)
      -> scores = (h + u) @ item_emb.weight.T                                (B, n_items + 1)
         or, serving a table stored as factors A (n_items + 1, r), B (r, D): ((h + u) @ B.T) @ A.T

* The output embedding is **tied** to the input item embedding (one table of ``n_items + 1`` rows, the
  largest tensor of the model; column 0 of the scores is the padding id and is never recommended).
* Attention is written with explicit ``q``/``k``/``v``/``out`` :class:`~torch.nn.Linear` layers and the
  feed-forward network with two Linear layers (ReLU), so weight pruning and quantization reach every
  matrix; embeddings are quantized per row (one item per output channel).
* Position ``t`` attends to positions ``<= t`` that hold an event (and to itself, so a padding row never
  has an empty softmax); padding positions are zeroed after every block.
* Side features (category, brand, ...) are optional: ``side_vocab`` lists the size of each feature's id
  space; ids beyond it (unseen in training) map to 0 = unknown.
* User features (age band, interests, ...) are optional too: ``user_vocab`` lists their id-space sizes and
  they are read from the **last** ``len(user_vocab)`` channels at the last position. Their embeddings
  (zero at start, so training starts from the model without them) are added to the sequence state, a
  user-level preference ``u . e_item`` on every score; the tables compress like any other embedding.
* Training (:meth:`SeqRec.training_loss`, used by :func:`trainers.fit.train`) predicts the next item at **every**
  position, with a full softmax over all items (``train.loss=full``) or, for large catalogues, a sampled
  softmax over the target and ``train.negatives`` items drawn uniformly and shared by the batch
  (``train.loss=sampled``, :func:`sampled_softmax_loss`); inference scores the last position only, and
  evaluation always ranks every item.
* Serving (:meth:`SeqRec.forward`, the path of every runtime and of the ONNX export) computes what the scores
  read and nothing else: the last block attends from the last position only (keys and values of every
  position) and runs its FFN and LayerNorms on that position only, and the side (user) features are read in
  one lookup of their stacked tables. Same scores as the full computation up to float rounding (tests:
  tests/test_recommender_serving.py); measured at 5,000 items, one thread, batch 1
  (benchmarks/seqrec_latency.py breakdown): 135 -> 88 us in onnxruntime and 208 -> 166 us in torchscript
  for the fp32 table, 105 -> 61 us and 163 -> 128 us for a rank-4 factored table.
* Neuron pruning removes FFN hidden units (:meth:`SeqRec.unit_layers` / :meth:`SeqRec.keep_units`).
* Serving a low-rank item table (``compress.lowrank.rank``, :meth:`SeqRec.use_item_factors`): the scores are
  ``((h + u) @ Bᵀ) @ Aᵀ``, ``r·(n_items + 1 + D)`` multiply-adds a request instead of ``(n_items + 1)·D``;
  the input lookup keeps reading the dense table (at most ``max_len`` rows a request: measured 3 us against 5 us
  for ``A[items] @ B``, benchmarks/lowrank_serving.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from trainers.models._surgery import linear_from

__all__ = ["SeqRec", "draw_negatives", "sampled_softmax_loss"]


def sampled_softmax_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor, targets: torch.Tensor,
                         negatives: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Sampled softmax cross-entropy (Jean et al. 2015): each event's target against shared sampled negatives.

    For event ``n`` with target ``t_n`` and negatives ``j_1 .. j_S`` the candidates are ``[t_n, j_1 .. j_S]``
    with logits ``s - log q`` (the logQ correction: ``q`` = how likely the sampler is to pick the item; for
    the uniform sampler of :func:`draw_negatives` it is the same for every item and cancels, so ``log_q`` is
    ``None``); a negative equal to ``t_n`` (an accidental hit) gets ``-inf``, so the target is never pushed
    down against itself; the loss is the mean of ``-log softmax(candidates)[0]``.

    Args:
        pos_logits: ``(N,)`` score of each event's target.
        neg_logits: ``(N, S)`` score of every negative for every event.
        targets: ``(N,)`` target item ids.
        negatives: ``(S,)`` item ids of the negatives (shared by all events; repeats allowed).
        log_q: ``(n_items + 1,)`` log sampling probability of each item id, or ``None`` (uniform).

    Example:
        >>> pos, neg = torch.tensor([2.0]), torch.tensor([[1.0, 9.0]])     # negative 2 is the target itself
        >>> float(sampled_softmax_loss(pos, neg, torch.tensor([5]), torch.tensor([3, 5])))  # = log(1 + e^-1)
        0.31326165795326233
    """
    if log_q is not None:
        pos_logits, neg_logits = pos_logits - log_q[targets], neg_logits - log_q[negatives][None, :]
    hits = negatives[None, :] == targets[:, None]                                  # (N, S) accidental hits
    logits = torch.cat([pos_logits[:, None], neg_logits.masked_fill(hits, -math.inf)], dim=1)   # (N, 1 + S)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def draw_negatives(n_items: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``(count,)`` item ids drawn uniformly from ``1 .. n_items`` with replacement (never 0, the padding id).

    Uniform rather than by popularity: the draw needs nothing but the catalogue size (no item counts to
    carry from the data into the model or the cache key), costs ``O(count)`` per step, and its logQ
    correction is a constant, so the loss is the plain softmax over the target and the negatives.
    """
    return torch.randint(1, n_items + 1, (count,), generator=generator)


def _stacked(vocab: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(limit, offset)`` int64 ``(F,)`` of features with id spaces ``vocab``: feature ``f``'s largest known id
    and its first row in the tables ``(vocab_f + 1, D)`` stacked in order."""
    limit = torch.tensor(vocab, dtype=torch.long)
    return limit, torch.cumsum(limit + 1, 0) - (limit + 1)


def _summed_lookup(ids: torch.Tensor, tables: nn.ModuleList, limit: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``ids (B, F, ...)`` of ``F`` features -> ``(B, ..., D)``: the sum over features of each one's embedding (an id
    above its ``limit``, unseen in training, reads row 0 = unknown), as ONE lookup in the ``F`` tables stacked
    (``offset``: each one's first row; ``limit`` and ``offset`` broadcast against ``ids[0]``). The stack is of
    the tables as they read now (so a compression parametrization applies), and a frozen or ONNX-served model
    folds it into a constant; one lookup instead of ``F`` saves ~4 ops per feature per request."""
    ids = torch.where(ids <= limit, ids + offset, offset)                          # unseen -> the feature's row 0
    return F.embedding(ids, torch.cat([emb.weight for emb in tables])).sum(1)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        assert d_model % heads == 0, f"d_model={d_model} must be divisible by heads={heads}"
        self.heads, self.drop_p = heads, dropout
        self.scale = 1.0 / math.sqrt(d_model // heads)      # SDPA's default, given so no graph derives it from a shape
        self.q, self.k, self.v = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``x (B, T, D)``, ``allowed (B, T, T)`` -> ``(B, T, D)``: every position attends; with ``last_only``,
        ``allowed (B, 1, T)`` -> ``(B, D)``: the last position only (keys and values still of every position)."""
        q = self.q(x[:, -1:] if last_only else x)                                   # (B, Tq, D)
        k, v = self.k(x), self.v(x)                                                 # (B, T, D)
        if self.heads > 1:                                                          # (B, H, n, Dh); one head: as is
            q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
            allowed = allowed[:, None]                                              # (B, 1, Tq, T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scale,
                                           dropout_p=self.drop_p if self.training else 0.0)
        if self.heads > 1:
            y = y.transpose(1, 2).flatten(2)                                        # (B, Tq, D)
        return self.out(y[:, 0] if last_only else y)                                # (B, D) or (B, T, D)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, hidden), nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` rows or ``(B, T, D)`` positions -> the same shape."""
        if x.dim() == 2:                                     # (N, hidden): units on dim 1 for neuron pruning
            return self.fc2(self.dropout(torch.relu(self.fc1(x))))
        B, T, D = x.shape
        h = torch.relu(self.fc1(x.reshape(B * T, D)))        # (B*T, hidden)
        return self.fc2(self.dropout(h)).view(B, T, D)


class Block(nn.Module):
    """Pre-LN transformer block: ``x + Attention(LN(x))``, then ``x + FFN(LN(x))``."""

    def __init__(self, d_model: int, heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d_model), CausalSelfAttention(d_model, heads, dropout)
        self.ln2, self.ffn = nn.LayerNorm(d_model), FeedForward(d_model, hidden, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``, or ``(B, D)`` with ``last_only``: the last position's output alone, the
        same numbers as the last row of the full output (LayerNorm and the FFN act on each position on its own;
        attention reads every position's keys and values either way)."""
        y = x[:, -1] if last_only else x                                            # the positions computed
        y = y + self.dropout(self.attn(self.ln1(x), allowed, last_only))
        return y + self.dropout(self.ffn(self.ln2(y)))


class SeqRec(nn.Module):
    def __init__(
        self,
        n_items: int,
        d_model: int = 32,
        heads: int = 1,
        ffn_hidden: list[int] | None = None,
        max_len: int = 50,
        dropout: float = 0.2,
        side_vocab: list[int] | None = None,
        user_vocab: list[int] | None = None,
    ) -> None:
        super().__init__()
        ffn_hidden = [d_model] * 2 if ffn_hidden is None else list(ffn_hidden)   # one FFN width per block
        side_vocab, user_vocab = list(side_vocab or []), list(user_vocab or [])
        assert n_items >= 2 and max_len >= 1 and ffn_hidden, f"bad SeqRec shape {n_items=} {max_len=} {ffn_hidden=}"
        self.n_items, self.max_len, self.drop_p, self.side_vocab = n_items, max_len, dropout, side_vocab
        self.user_vocab = user_vocab
        self.item_emb = nn.Embedding(n_items + 1, d_model)                          # row 0 = padding
        self.side_emb = nn.ModuleList(nn.Embedding(v + 1, d_model) for v in side_vocab)
        self.user_emb = nn.ModuleList(nn.Embedding(v + 1, d_model) for v in user_vocab)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, h, dropout) for h in ffn_hidden)
        self.ln = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.item_emb.weight, std=d_model ** -0.5)
        for emb in self.user_emb:
            nn.init.zeros_(emb.weight)
        # serving only (:meth:`use_item_factors`): the item table's factors, stored transposed for the scores;
        # not persistent, so neither the state dict nor the artifact sees them
        self.register_buffer("item_bt", None, persistent=False)                    # (D, r)
        self.register_buffer("item_at", None, persistent=False)                    # (r, n_items + 1)
        # the side (user) feature tables are read as one stacked table, one lookup for all features
        # (:func:`_summed_lookup`): each feature's largest known id and first row there, derived from the vocab
        side_limit, side_offset = _stacked(side_vocab)
        user_limit, user_offset = _stacked(user_vocab)
        self.register_buffer("side_limit", side_limit[:, None], persistent=False)  # (S, 1): broadcast over T
        self.register_buffer("side_offset", side_offset[:, None], persistent=False)
        self.register_buffer("user_limit", user_limit, persistent=False)           # (U,)
        self.register_buffer("user_offset", user_offset, persistent=False)

    def encode(self, x: torch.Tensor, table: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Hidden state at every position: ``(B, C, L)`` events -> ``(B, T, D)``, ``T = min(L, max_len)``; with
        ``last_only`` the last position's alone, ``(B, D)``.

        ``table``: the item table ``item_emb.weight`` as the caller already read it (default: read it here).
        ``last_only`` (serving: only the last position's state scores the next item): the last block computes
        attention for the last query and its FFN and LayerNorms for the last position only; the earlier blocks
        still compute every position (the last block's keys and values). Same numbers as the last row of the
        full state up to float rounding (tests/test_recommender_serving.py), a ``T``-th of the last block's
        queries, FFN and LayerNorm work, and no ``(T, T)`` causal mask at all with one block.
        """
        x = x[:, :, -self.max_len:]                                                 # (B, C, T)
        items, T = x[:, 0], x.shape[-1]
        real = items > 0                                                           # (B, T)
        table = self.item_emb.weight if table is None else table                   # (n_items + 1, D)
        h = F.embedding(items, table) * math.sqrt(self.item_emb.embedding_dim)
        if self.side_vocab:                                                        # channels 1 .. S, unseen -> 0
            h = h + _summed_lookup(x[:, 1:1 + len(self.side_vocab)], self.side_emb, self.side_limit, self.side_offset)
        h = h + self.pos_emb.weight[self.max_len - T:]                             # positions max_len-T .. max_len-1
        keep = real.unsqueeze(-1).to(h.dtype)                                       # (B, T, 1)
        h = self.dropout(h) * keep
        n_full = len(self.blocks) - 1 if last_only else len(self.blocks)           # blocks computing every position
        if n_full:
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            allowed = (causal & real[:, None, :]) | torch.eye(T, dtype=torch.bool, device=x.device)   # (B, T, T)
            for block in self.blocks[:n_full]:
                h = block(h, allowed) * keep
        if last_only:
            # the last row of ``allowed``: every real position, and the last one itself (never an empty softmax)
            last_row = torch.cat([real[:, :-1], torch.ones_like(real[:, -1:])], dim=1)[:, None]   # (B, 1, T)
            h = self.blocks[-1](h, last_row, last_only=True) * keep[:, -1]         # (B, D)
        return self.ln(h)

    def user_state(self, x: torch.Tensor) -> torch.Tensor | None:
        """``(B, C, L)`` -> ``(B, D)``: the sum of the user-feature embeddings (None without user features)."""
        if not self.user_vocab:
            return None
        ids = x[:, -len(self.user_vocab):, -1]                                     # (B, U) at the last position
        return _summed_lookup(ids, self.user_emb, self.user_limit, self.user_offset)   # unseen -> 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, L)`` requests -> ``(B, n_items + 1)`` scores of every item as the next event."""
        h = self.encode(x, last_only=True)                                         # (B, D)
        u = self.user_state(x)
        q = h if u is None else h + u                                              # (B, D)
        if self.item_at is None:
            return q @ self.item_emb.weight.T                                      # (B, n_items + 1)
        return (q @ self.item_bt) @ self.item_at                                   # (B, r) -> (B, n_items + 1)

    @torch.no_grad()
    def use_item_factors(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Score every item from the item table's factors ``a (n_items + 1, r)`` and ``b (r, D)``: ``(q @ bᵀ) @ aᵀ``
        instead of ``q @ item_emb.weightᵀ`` (for serving a table the artifact stores factored; training and the
        input lookup keep reading ``item_emb``).

        The factors are kept transposed and contiguous, ``bᵀ (D, r)`` and ``aᵀ (r, n_items + 1)``: at batch 1 the
        product with ``aᵀ`` then streams the factor row by row (measured at 20,000 items, rank 8, one thread,
        benchmarks/lowrank_serving.py: 14 us against 46 us for the transposed view of ``a``, and 115 us for the
        dense table).
        The sums run in another order than the dense table's, so scores move by float rounding only.

        Example:
            >>> net = SeqRec(n_items=30, d_model=8).eval()
            >>> a, b = torch.randn(31, 2), torch.randn(2, 8)
            >>> with torch.no_grad():
            ...     _ = net.item_emb.weight.copy_(a @ b)
            >>> x = torch.randint(1, 31, (3, 1, 5))
            >>> dense = net(x)
            >>> net.use_item_factors(a, b)
            >>> bool(torch.allclose(net(x), dense, atol=1e-5))
            True
        """
        rows, dim = self.item_emb.weight.shape
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != rows or b.shape[1] != dim or a.shape[1] != b.shape[0]:
            raise ValueError(f"item factors must be ({rows}, r) and (r, {dim}), got {tuple(a.shape)} and {tuple(b.shape)}")
        device = self.item_emb.weight.device
        self.item_at = a.detach().to(device, torch.float32).T.contiguous()
        self.item_bt = b.detach().to(device, torch.float32).T.contiguous()

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, negatives: int | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Next-item cross-entropy at every position with an event; the last position's target is ``y``.

        ``negatives=None``: full softmax over every item id. ``negatives=S``: sampled softmax against ``S``
        items drawn (from ``generator``) once for the batch, :func:`sampled_softmax_loss`.
        """
        # the item table is read once and shared by the input embedding and the scores: during the compression
        # fine-tune ``item_emb.weight`` is a parametrization, ``Q(w * mask) * mask`` over the whole table, which
        # every read recomputes (the largest tensor of the model: reading it twice doubled the step's cost)
        table = self.item_emb.weight                                               # (n_items + 1, D)
        h = self.encode(x, table)                                                  # (B, T, D)
        u = self.user_state(x)
        if u is not None:
            h = h + u[:, None]
        items = x[:, 0, -h.shape[1]:]
        targets = torch.cat([items[:, 1:], y[:, None]], dim=1)                     # (B, T) next item per position
        real = items > 0                                                           # no loss on padding
        if negatives is None:
            logits = h[real] @ table.T                                             # (events, n_items + 1)
            return F.cross_entropy(logits, targets[real])
        h, targets = h[real], targets[real]                                        # (N, D), (N,)
        neg = draw_negatives(self.n_items, negatives, generator).to(h.device)      # (S,) shared by the batch
        pos_logits = (h * table[targets]).sum(-1)                                  # (N,)
        neg_logits = h @ table[neg].T                                              # (N, S)
        return sampled_softmax_loss(pos_logits, neg_logits, targets, neg)

    # --- what the artifact and the neuron pruner need -----------------------------------------------
    def spec(self) -> dict[str, Any]:
        """The architecture as plain JSON: enough to rebuild an empty model of the same shape."""
        return {
            "type": "seqrec",
            "n_items": self.n_items,
            "d_model": self.item_emb.embedding_dim,
            "heads": self.blocks[0].attn.heads,
            "ffn_hidden": [b.ffn.fc1.out_features for b in self.blocks],
            "max_len": self.max_len,
            "dropout": self.drop_p,
            "side_vocab": self.side_vocab,
            "user_vocab": self.user_vocab,
        }

    def unit_layers(self) -> list[nn.Module]:
        """The first FFN layer of every block: its ReLU outputs are the units neuron pruning may remove."""
        return [b.ffn.fc1 for b in self.blocks]

    @torch.no_grad()
    def keep_units(self, index: int, keep: torch.Tensor) -> None:
        """Keep only FFN hidden units ``keep`` (sorted indices) of block ``index``."""
        ffn = self.blocks[index].ffn
        ffn.fc1 = linear_from(ffn.fc1.weight[keep], ffn.fc1.bias[keep])
        ffn.fc2 = linear_from(ffn.fc2.weight[:, keep], ffn.fc2.bias)
