"""A PyTorch SASRec written as the reference A-LLMRec pretrains (pmixer/SASRec.pytorch lineage).

The competitor of ``benchmarks/sasrec_parity.py`` and the independent implementation the
tests compare ``jaxrec.models.sasrec`` against. Kept close to ghdtjr/A-LLMRec
``pre_train/sasrec/model.py`` and ``main.py``:

- ``nn.Embedding(I + 1, d, padding_idx=0)`` items scaled by sqrt(d), ``nn.Embedding(maxlen, d)``
  positions 0..L-1, embedding dropout, then the timeline mask (padding positions zeroed);
- per block, on time-major [L, B, d] tensors: ``Q = attention_layernorm(x)``,
  ``x = Q + nn.MultiheadAttention(Q, x, x, attn_mask=causal)``, ``h = forward_layernorm(x)``,
  ``x = h + Dropout(Conv1d(ReLU(Dropout(Conv1d(h)))))`` (1x1 convolutions), timeline mask;
  ``norm="prenorm"``: ``x = x + MHA(LN(x)); x = x + FFN(LN(x))`` (SASRec.pytorch
  ``--norm_first``); final LayerNorm; all LayerNorms eps 1e-8;
- ``reference_init``: ``xavier_normal_`` on every parameter it accepts (those with >= 2 dims),
  the rest left at torch's defaults, as ``main.py``'s try/except loop;
- ``bce_loss``: ``BCEWithLogitsLoss`` of positive and negative logits at ``pos != 0``, summed;
  Adam(lr 1e-3, betas (0.9, 0.98)).

Differences on purpose: ``forward`` takes torch tensors (no numpy round trip per call), and
``from_jaxrec`` loads jaxrec's parameter dict (same initial weights), so both sides start from
one model and train on the same batches (``jaxrec.data.sequences.window_batches``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class PointWiseFeedForward(nn.Module):
    """Two 1x1 Conv1d with ReLU and dropout; the residual is added by the block (as ``log2feats``)."""

    def __init__(self, d: int, rate: float):
        super().__init__()
        self.conv1 = nn.Conv1d(d, d, kernel_size=1)
        self.dropout1 = nn.Dropout(rate)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv1d(d, d, kernel_size=1)
        self.dropout2 = nn.Dropout(rate)

    def forward(self, x):  # [B, L, d]
        h = self.dropout2(self.conv2(self.relu(self.dropout1(self.conv1(x.transpose(-1, -2))))))
        return h.transpose(-1, -2)


class TorchSASRec(nn.Module):
    def __init__(self, num_items: int, hidden: int = 50, num_blocks: int = 2, num_heads: int = 1,
                 dropout: float = 0.5, max_len: int = 50, norm: str = "reference"):
        super().__init__()
        if norm not in ("reference", "prenorm"):
            raise ValueError(f"norm: expected 'reference' or 'prenorm', got {norm!r}")
        self.norm = norm
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_dropout = nn.Dropout(dropout)
        self.attention_layernorms = nn.ModuleList()
        self.attention_layers = nn.ModuleList()
        self.forward_layernorms = nn.ModuleList()
        self.forward_layers = nn.ModuleList()
        for _ in range(num_blocks):
            self.attention_layernorms.append(nn.LayerNorm(hidden, eps=1e-8))
            self.attention_layers.append(nn.MultiheadAttention(hidden, num_heads, dropout))
            self.forward_layernorms.append(nn.LayerNorm(hidden, eps=1e-8))
            self.forward_layers.append(PointWiseFeedForward(hidden, dropout))
        self.last_layernorm = nn.LayerNorm(hidden, eps=1e-8)

    def log2feats(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L, d] outputs for int64 ``seq`` [B, L] (ids + 1, 0 = padding)."""
        x = self.item_emb(seq) * self.item_emb.embedding_dim ** 0.5
        x = x + self.pos_emb(torch.arange(seq.shape[1], device=seq.device))[None]
        x = self.emb_dropout(x)
        keep = (seq != 0).unsqueeze(-1)
        x = x * keep
        length = seq.shape[1]
        causal = ~torch.tril(torch.ones((length, length), dtype=torch.bool, device=seq.device))
        for ln_a, mha, ln_f, ffn in zip(self.attention_layernorms, self.attention_layers,
                                        self.forward_layernorms, self.forward_layers):
            x = x.transpose(0, 1)  # [L, B, d]
            if self.norm == "reference":
                q = ln_a(x)
                out, _ = mha(q, x, x, attn_mask=causal, need_weights=False)
                x = (q + out).transpose(0, 1)
                h = ln_f(x)
                x = h + ffn(h)
            else:
                h = ln_a(x)
                out, _ = mha(h, h, h, attn_mask=causal, need_weights=False)
                x = (x + out).transpose(0, 1)
                x = x + ffn(ln_f(x))
            x = x * keep
        return self.last_layernorm(x)

    def forward(self, seq, pos, neg):
        """(pos_logits, neg_logits) [B, L] as the reference's ``forward``."""
        feats = self.log2feats(seq)
        return (feats * self.item_emb(pos)).sum(-1), (feats * self.item_emb(neg)).sum(-1)

    def predict(self, seq, items):
        """[B, C] scores of ``items`` (ids + 1) from the last position."""
        final = self.log2feats(seq)[:, -1, :]
        return (self.item_emb(items) * final[:, None, :]).sum(-1)


def reference_init(model: TorchSASRec, seed: int = 0) -> TorchSASRec:
    """A-LLMRec ``main.py``'s initialization: ``xavier_normal_`` where it applies."""
    torch.manual_seed(seed)
    for _, param in model.named_parameters():
        try:
            nn.init.xavier_normal_(param.data)
        except ValueError:  # 1-d parameters (biases, LayerNorm): torch's default init stays
            pass
    return model


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float32, copy=True))


@torch.no_grad()
def from_jaxrec(params: dict, num_items: int, hidden: int, num_blocks: int, num_heads: int, dropout: float,
                max_len: int, norm: str = "reference") -> TorchSASRec:
    """A ``TorchSASRec`` holding exactly the weights of a ``jaxrec.models.sasrec`` parameter dict.

    Layouts: flax Linear kernels are [in, out] (torch weights [out, in]); the attention's
    query/key/value kernels [d, d] (head h = columns h*head_dim..) stack transposed into
    ``in_proj_weight`` [3d, d] (head h = rows h*head_dim..), the output kernel [d, d] is
    ``out_proj.weight`` transposed; a 1x1 ``Conv1d.weight`` is [out, in, 1].
    """
    model = TorchSASRec(num_items, hidden, num_blocks, num_heads, dropout, max_len, norm)
    d = hidden
    model.item_emb.weight.copy_(_t(params["item_embedding"]))
    model.pos_emb.weight.copy_(_t(params["position_embedding"]))
    for b in range(num_blocks):
        blk = params[f"block_{b}"]
        att = blk["attention"]
        mha = model.attention_layers[b]
        mha.in_proj_weight.copy_(torch.cat([_t(att[k]["kernel"]).reshape(d, d).T for k in ("query", "key", "value")]))
        mha.in_proj_bias.copy_(torch.cat([_t(att[k]["bias"]).reshape(d) for k in ("query", "key", "value")]))
        mha.out_proj.weight.copy_(_t(att["out"]["kernel"]).reshape(d, d).T)
        mha.out_proj.bias.copy_(_t(att["out"]["bias"]))
        for ln, name in ((model.attention_layernorms[b], "attention_norm"), (model.forward_layernorms[b], "ffn_norm")):
            ln.weight.copy_(_t(blk[name]["scale"]))
            ln.bias.copy_(_t(blk[name]["bias"]))
        ffn = model.forward_layers[b]
        for conv, name in ((ffn.conv1, "conv1"), (ffn.conv2, "conv2")):
            conv.weight.copy_(_t(blk["ffn"][name]["kernel"]).T[:, :, None])
            conv.bias.copy_(_t(blk["ffn"][name]["bias"]))
    model.last_layernorm.weight.copy_(_t(params["final_norm"]["scale"]))
    model.last_layernorm.bias.copy_(_t(params["final_norm"]["bias"]))
    return model


def bce_loss(model: TorchSASRec, batch: dict) -> torch.Tensor:
    """The reference training loss of one batch (numpy int arrays ``seq``, ``pos``, ``neg``)."""
    seq, pos, neg = (torch.from_numpy(np.asarray(batch[k], dtype=np.int64)) for k in ("seq", "pos", "neg"))
    pos_logits, neg_logits = model(seq, pos, neg)
    where = pos != 0
    crit = nn.BCEWithLogitsLoss()
    return (crit(pos_logits[where], torch.ones_like(pos_logits[where]))
            + crit(neg_logits[where], torch.zeros_like(neg_logits[where])))


def make_optimizer(model: TorchSASRec, lr: float = 1e-3) -> torch.optim.Adam:
    """Adam(lr, betas (0.9, 0.98)) as the reference."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))


def train_step(model: TorchSASRec, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    """One reference step (``zero_grad / backward / step``); returns the loss."""
    model.train()
    optimizer.zero_grad()
    loss = bce_loss(model, batch)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def score(model: TorchSASRec, seq: np.ndarray, candidates: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """float32 [B, C] eval-mode scores of dense item ids ``candidates`` (shifted +1 inside)."""
    model.eval()
    out = []
    for s in range(0, len(seq), chunk):
        sq = torch.from_numpy(np.asarray(seq[s:s + chunk], dtype=np.int64))
        cd = torch.from_numpy(np.asarray(candidates[s:s + chunk], dtype=np.int64) + 1)
        out.append(model.predict(sq, cd).numpy())
    return np.concatenate(out) if out else np.zeros((0, candidates.shape[1]), np.float32)
