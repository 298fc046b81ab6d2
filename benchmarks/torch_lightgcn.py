"""A PyTorch LightGCN written like RecBole 1.2.1's (``recbole/model/general_recommender/lightgcn.py``).

The reference implementation the epoch benchmark races against. Kept close to RecBole:

- two ``nn.Embedding`` tables (users, items) initialized with ``xavier_uniform_``;
- the normalized adjacency ``D^-1/2 A D^-1/2`` of the user+item graph (degrees + 1e-7, as
  RecBole) held as an uncoalesced ``torch.sparse_coo_tensor`` built from a scipy COO, and
  propagated with ``torch.sparse.mm`` (RecBole's kernel); ``adjacency="csr"`` holds the
  same matrix as ``torch.sparse_csr_tensor`` instead (a faster torch variant);
- ``forward`` = mean of the layer outputs 0..L (``torch.stack(...).mean(dim=1)``);
- loss = BPR (``-log(1e-10 + sigmoid(pos - neg)).mean()``) + ``reg_weight`` * EmbLoss on
  the batch's ego embeddings (``require_pow=False``: sum of Frobenius norms / batch size);
- Adam, lr 1e-3, a trainer step of ``zero_grad / backward / step`` and ``loss.item()``
  accumulated per batch as RecBole's trainer does.

Differences from RecBole, on purpose: ids are jaxrec's dense ids (no [PAD] row 0), and
``train_epoch`` consumes the exact batches jaxrec uses (numpy dicts of ``user``, ``pos``,
``neg``) instead of RecBole's DataLoader, so both libraries do the same arithmetic.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)


def recbole_norm_adj(user: np.ndarray, item: np.ndarray, num_users: int, num_items: int,
                     layout: str = "coo") -> torch.Tensor:
    """RecBole's ``get_norm_adj_mat``: symmetric-normalized (U+I) x (U+I) adjacency.

    Repeated (user, item) pairs count once (RecBole's dok_matrix assignment does the same).
    ``layout="coo"``: uncoalesced ``torch.sparse_coo_tensor`` as in RecBole; ``"csr"``:
    ``torch.sparse_csr_tensor`` with the same entries.
    """
    n = num_users + num_items
    inter = sp.coo_matrix((np.ones(len(user), np.float32), (user, item)), shape=(num_users, num_items)).tocsr()
    inter.data[:] = 1.0  # duplicates summed by tocsr -> back to 0/1
    inter = inter.tocoo()
    row = np.concatenate([inter.row, inter.col + num_users])
    col = np.concatenate([inter.col + num_users, inter.row])
    a = sp.coo_matrix((np.ones(row.size, np.float32), (row, col)), shape=(n, n)).tocsr()
    deg = np.asarray((a > 0).sum(axis=1)).ravel() + 1e-7
    d = sp.diags(np.power(deg, -0.5))
    lap = sp.coo_matrix(d * a * d)
    if layout == "coo":
        idx = torch.from_numpy(np.array([lap.row, lap.col], dtype=np.int64))
        return torch.sparse_coo_tensor(idx, torch.from_numpy(lap.data.astype(np.float32)), torch.Size(lap.shape))
    if layout == "csr":
        c = lap.tocsr()
        c.sort_indices()
        return torch.sparse_csr_tensor(torch.from_numpy(c.indptr.astype(np.int64)),
                                       torch.from_numpy(c.indices.astype(np.int64)),
                                       torch.from_numpy(c.data.astype(np.float32)), torch.Size(c.shape))
    raise ValueError(f"layout: expected 'coo' or 'csr', got {layout!r}")


class BPRLoss(nn.Module):
    """RecBole's BPRLoss (gamma 1e-10)."""

    def __init__(self, gamma: float = 1e-10):
        super().__init__()
        self.gamma = gamma

    def forward(self, pos_score, neg_score):
        return -torch.log(self.gamma + torch.sigmoid(pos_score - neg_score)).mean()


class EmbLoss(nn.Module):
    """RecBole's EmbLoss (norm 2)."""

    def __init__(self, norm: int = 2):
        super().__init__()
        self.norm = norm

    def forward(self, *embeddings, require_pow: bool = False):
        emb_loss = torch.zeros(1, device=embeddings[-1].device)
        for e in embeddings:
            if require_pow:
                emb_loss = emb_loss + torch.pow(torch.norm(e, p=self.norm), self.norm)
            else:
                emb_loss = emb_loss + torch.norm(e, p=self.norm)
        emb_loss = emb_loss / embeddings[-1].shape[0]
        if require_pow:
            emb_loss = emb_loss / self.norm
        return emb_loss


class TorchLightGCN(nn.Module):
    """RecBole-style LightGCN over jaxrec's dense ids (users 0..U-1, items 0..I-1)."""

    def __init__(self, user: np.ndarray, item: np.ndarray, num_users: int, num_items: int,
                 embedding_size: int = 128, n_layers: int = 2, reg_weight: float = 1e-5,
                 require_pow: bool = False, adjacency: str = "coo", seed: int = 2020):
        super().__init__()
        self.n_users, self.n_items = int(num_users), int(num_items)
        self.latent_dim, self.n_layers = embedding_size, n_layers
        self.reg_weight, self.require_pow = reg_weight, require_pow
        self.user_embedding = nn.Embedding(self.n_users, embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, embedding_size)
        self.mf_loss = BPRLoss()
        self.reg_loss = EmbLoss()
        self.norm_adj_matrix = recbole_norm_adj(user, item, num_users, num_items, adjacency)
        gen = torch.Generator().manual_seed(seed)
        for emb in (self.user_embedding, self.item_embedding):
            nn.init.xavier_uniform_(emb.weight.data, generator=gen)

    def load_tables(self, user_table: np.ndarray, item_table: np.ndarray) -> None:
        """Overwrite the embedding tables (to start from the same parameters as jaxrec)."""
        with torch.no_grad():
            self.user_embedding.weight.copy_(torch.from_numpy(np.array(user_table, np.float32)))
            self.item_embedding.weight.copy_(torch.from_numpy(np.array(item_table, np.float32)))

    def get_ego_embeddings(self):
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight], dim=0)

    def forward(self):
        all_embeddings = self.get_ego_embeddings()
        embeddings_list = [all_embeddings]
        for _ in range(self.n_layers):
            all_embeddings = torch.sparse.mm(self.norm_adj_matrix, all_embeddings)
            embeddings_list.append(all_embeddings)
        out = torch.stack(embeddings_list, dim=1).mean(dim=1)
        return torch.split(out, [self.n_users, self.n_items])

    def calculate_loss(self, user, pos_item, neg_item):
        user_all, item_all = self.forward()
        u_e, p_e, n_e = user_all[user], item_all[pos_item], item_all[neg_item]
        pos_scores = torch.mul(u_e, p_e).sum(dim=1)
        neg_scores = torch.mul(u_e, n_e).sum(dim=1)
        mf_loss = self.mf_loss(pos_scores, neg_scores)
        reg_loss = self.reg_loss(self.user_embedding(user), self.item_embedding(pos_item),
                                 self.item_embedding(neg_item), require_pow=self.require_pow)
        return mf_loss + self.reg_weight * reg_loss


class TorchTrainer:
    """RecBole's training loop reduced to its per-batch work (Adam, no grad clipping)."""

    def __init__(self, model: TorchLightGCN, learning_rate: float = 1e-3):
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)

    def train_epoch(self, batches: Iterable[dict]) -> float:
        """One pass over ``batches`` (numpy int arrays ``user``, ``pos``, ``neg``); mean loss."""
        self.model.train()
        total, count = 0.0, 0
        for b in batches:
            user = torch.from_numpy(np.asarray(b["user"])).long()
            pos = torch.from_numpy(np.asarray(b["pos"])).long()
            neg = torch.from_numpy(np.asarray(b["neg"])).long()
            self.optimizer.zero_grad()
            loss = self.model.calculate_loss(user, pos, neg)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            count += 1
        return total / max(count, 1)
