"""Small synthetic datasets written as RecBole atomic files, for training/CLI tests; dense references."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxrec.data import write_atomic


def clustered_interactions(seed: int = 0, users: int = 60, items: int = 40, per_user: int = 8, clusters: int = 4):
    """Users prefer items of their own cluster (so a model can learn something)."""
    rng = np.random.default_rng(seed)
    user_c = np.arange(users) % clusters
    item_c = np.arange(items) % clusters
    rows = []
    for u in range(users):
        own = np.flatnonzero(item_c == user_c[u])
        other = np.flatnonzero(item_c != user_c[u])
        picks = np.concatenate([rng.choice(own, per_user - 2, replace=False), rng.choice(other, 2, replace=False)])
        for t, i in enumerate(picks):
            rows.append((u, i, float(rng.integers(1, 6)), float(1000 * u + t)))
    return rows


def write_tiny_dataset(folder: Path, name: str = "tiny", seed: int = 0, **kw) -> Path:
    """Write ``<folder>/<name>/<name>.inter`` and ``.item``; returns the dataset folder."""
    rows = clustered_interactions(seed, **kw)
    ds = Path(folder) / name
    ds.mkdir(parents=True, exist_ok=True)
    write_atomic(
        ds / f"{name}.inter",
        {
            "user_id": np.array([f"u{r[0]}" for r in rows]),
            "item_id": np.array([f"i{r[1]}" for r in rows]),
            "rating": np.array([r[2] for r in rows]),
            "timestamp": np.array([r[3] for r in rows]),
        },
        {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"},
    )
    items = sorted({r[1] for r in rows})
    write_atomic(
        ds / f"{name}.item",
        {"item_id": np.array([f"i{i}" for i in items]), "movie_title": [["Movie", f"{i}"] for i in items],
         "release_year": np.array([str(1990 + i % 10) for i in items]),
         "class": [["Drama"] if i % 2 else ["Comedy", "Romance"] for i in items]},
        {"item_id": "token", "movie_title": "token_seq", "release_year": "token", "class": "token_seq"},
    )
    return ds


def explicit_cooccurrence(user, item, num_items: int) -> np.ndarray:
    """Dense [I, I] C_ij = distinct users with both i and j, zero diagonal (python sets; a reference)."""
    users: dict[int, set[int]] = {}
    for u, i in zip(user, item, strict=True):
        users.setdefault(int(u), set()).add(int(i))
    c = np.zeros((num_items, num_items))
    for its in users.values():
        for a in its:
            for b in its:
                if a != b:
                    c[a, b] += 1
    return c


def explicit_laplacian(c: np.ndarray) -> np.ndarray:
    """Dense I - D^-1/2 C D^-1/2 with L_ii = 0 for isolated items (d_i = 0)."""
    d = c.sum(1)
    inv = np.array([1 / np.sqrt(x) if x > 0 else 0.0 for x in d])
    return np.diag((d > 0).astype(float)) - inv[:, None] * c * inv[None, :]
