"""A trained run as one object: ``load_run(out_dir) -> Run`` (config, dataset, model, best params).

``load_run`` reads the run folder ``jaxrec train`` / ``jaxrec.fit(out_dir=...)`` wrote
(``run.json``, ``ckpt/best``, ``results.json``, ``init.json``): the config
(``Config.from_dict``; plugins imported), the backbone (``get_model``), the dataset (reloaded
from ``config.dataset`` with the run's config, or passed in) checked against the run's
fingerprint (``jaxrec.data.fingerprint.dataset_fingerprint``), and the best parameters
restored from Orbax onto the model's own structure (``jax.eval_shape`` of ``model.init``).

What a ``Run`` serves from (``Run.catalog``): the user and item representations
``model.embed(params, context)`` on the ``"serve"`` context of the model's registered context
kind (``jaxrec.models.contexts.serve_context``: everything known, i.e. train + valid + test
interactions), with the original ids and the items each user is known to have (all three
stages; ``exclude_seen`` masks them). No per-model branch: any registered backbone serves.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from jaxrec.config import Config
from jaxrec.data import DataError, Dataset, load_dataset
from jaxrec.errors import JaxrecError
from jaxrec.models import Model, Params, get_model
from jaxrec.train.runfolder import RunFolder, RunFolderError

log = logging.getLogger("jaxrec.serve")


class ServeError(JaxrecError, ValueError):
    """A run folder, id, or request cannot be served; the message names the folder, ids or argument."""


@dataclasses.dataclass(frozen=True)
class KnownItems:
    """The items each user is known to have, CSR by dense user id.

    ``indptr`` int64 [U + 1]; ``items`` int32 [nnz], sorted within each user, distinct.
    """

    indptr: np.ndarray
    items: np.ndarray

    @classmethod
    def from_pairs(cls, user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> "KnownItems":
        keys = np.unique(np.asarray(user, np.int64) * num_items + np.asarray(item, np.int64))
        counts = np.bincount(keys // num_items, minlength=num_users)
        return cls(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), (keys % num_items).astype(np.int32))

    @property
    def num_users(self) -> int:
        return self.indptr.shape[0] - 1

    def pairs(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions int64 [P] into ``users``, items int32 [P]): every known item of ``users[p]``."""
        users = np.asarray(users, np.int64)
        starts, counts = self.indptr[users], self.indptr[users + 1] - self.indptr[users]
        total = int(counts.sum())
        rows = np.repeat(np.arange(users.size, dtype=np.int64), counts)
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.items[np.repeat(starts, counts) + offsets]


@dataclasses.dataclass(frozen=True, eq=False)
class Catalog:
    """What ranking reads: ``user_emb`` float [U, d] (numpy), ``item_emb`` float [I, d] (a jax
    array, placed once), original ``user_ids`` [U] / ``item_ids`` [I] (str), and the known
    items per user (None: nothing to exclude)."""

    user_emb: np.ndarray
    item_emb: jax.Array
    user_ids: np.ndarray
    item_ids: np.ndarray
    known: KnownItems | None = None

    def __post_init__(self) -> None:
        u, i = self.user_emb, self.item_emb
        if u.ndim != 2 or i.ndim != 2 or u.shape[1] != i.shape[1]:
            raise ServeError(f"catalog: expected user [U, d] and item [I, d] embeddings, got {u.shape} and {i.shape}")
        if self.user_ids.shape != (u.shape[0],) or self.item_ids.shape != (i.shape[0],):
            raise ServeError(f"catalog: {self.user_ids.shape[0]} user ids for {u.shape[0]} rows, "
                             f"{self.item_ids.shape[0]} item ids for {i.shape[0]} rows")
        if self.known is not None and self.known.num_users != u.shape[0]:
            raise ServeError(f"catalog: known items for {self.known.num_users} users, embeddings for {u.shape[0]}")

    @classmethod
    def from_arrays(cls, user_emb, item_emb, user_ids=None, item_ids=None, known: KnownItems | None = None
                    ) -> "Catalog":
        """A catalog of plain arrays (ids default to ``"0", "1", ...``)."""
        user_emb = np.asarray(user_emb)
        item_emb = jax.device_put(np.asarray(item_emb))
        uid = np.arange(user_emb.shape[0]).astype(str) if user_ids is None else np.asarray(user_ids).astype(str)
        iid = np.arange(item_emb.shape[0]).astype(str) if item_ids is None else np.asarray(item_ids).astype(str)
        return cls(user_emb, item_emb, uid, iid, known)

    @property
    def num_users(self) -> int:
        return int(self.user_emb.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_emb.shape[0])

    @property
    def catalog(self) -> "Catalog":
        """Itself (a ``Run`` builds one; both serve ``recommend`` / ``score``)."""
        return self

    chunk_size = 1024  # users scored at once

    @functools.cached_property
    def _user_index(self) -> "IdIndex":
        return IdIndex(self.user_ids, "user")

    @functools.cached_property
    def _item_index(self) -> "IdIndex":
        return IdIndex(self.item_ids, "item")

    def user_index(self, users: Sequence[Any]) -> np.ndarray:
        """Dense ids int64 [M] of original user ids; ``ServeError`` naming unknown ones."""
        return self._user_index(users)

    def item_index(self, items: Sequence[Any]) -> np.ndarray:
        """Dense ids int64 [M] of original item ids; ``ServeError`` naming unknown ones."""
        return self._item_index(items)


class IdIndex:
    """Original id -> dense id lookup by binary search over the sorted ids."""

    def __init__(self, ids: np.ndarray, what: str):
        self.ids, self.what = ids, what
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]

    def __call__(self, query: Sequence[Any]) -> np.ndarray:
        q = np.asarray([str(x) for x in query] if not isinstance(query, np.ndarray) else query.astype(str), dtype=str)
        if q.ndim != 1:
            raise ServeError(f"{self.what} ids: expected a flat list, got shape {q.shape}")
        if q.size == 0 or self.ids.size == 0:
            return np.zeros(0, np.int64) if q.size == 0 else self._unknown(q)
        pos = np.minimum(np.searchsorted(self.sorted, q), self.sorted.size - 1)
        found = self.sorted[pos] == q
        if not found.all():
            self._unknown(q[~found])
        return self.order[pos].astype(np.int64)

    def _unknown(self, missing: np.ndarray):
        shown = ", ".join(repr(str(x)) for x in missing[:5]) + (", ..." if missing.size > 5 else "")
        raise ServeError(f"unknown {self.what} id(s) {shown} ({missing.size} not in the run's dataset of "
                         f"{self.ids.size:,} {self.what}s, e.g. {', '.join(map(repr, self.ids[:3].tolist()))})")


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    """A trained run: ``path``, ``config``, ``model``, best ``params``, ``dataset``, the
    dataset ``fingerprint`` it was trained on, ``results`` (results.json; None for an
    unfinished run) and ``init`` (init.json: how it was initialized; None if absent).

    ``catalog`` (built on first use) is what ``recommend`` / ``score`` / ``export`` read.
    ``folder``: the ``RunFolder`` read (its published version is held, so no writer removes
    it, while this ``Run`` lives; ``folder.path`` is that version folder).
    """

    path: Path
    config: Config
    model: Model
    params: Params
    dataset: Dataset
    fingerprint: dict
    results: dict | None = None
    init: dict | None = None
    folder: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def user_ids(self) -> np.ndarray:
        return self.dataset.user_ids

    @property
    def item_ids(self) -> np.ndarray:
        return self.dataset.item_ids

    @property
    def num_users(self) -> int:
        return int(self.dataset.num_users)

    @property
    def num_items(self) -> int:
        return int(self.dataset.num_items)

    @property
    def chunk_size(self) -> int:
        """Users scored at once: the run's ``eval_chunk``."""
        return int(self.config.eval_chunk)

    @property
    def parent(self) -> dict | None:
        """The run this one was updated from (``results.json`` "parent"), if any."""
        return (self.results or {}).get("parent")

    def context(self) -> Any:
        """The model's ``"serve"`` context (``jaxrec.models.contexts.serve_context``)."""
        from jaxrec.models.contexts import serve_context  # noqa: PLC0415

        return serve_context(self.model.context, self.dataset, self.config)

    def embed(self) -> tuple[np.ndarray, np.ndarray]:
        """(user_emb float [U, d], item_emb float [I, d]) = ``model.embed(params, serve context)``."""
        user_emb, item_emb = jax.jit(self.model.embed)(self.params, self.context())
        return np.asarray(user_emb), np.asarray(item_emb)

    @functools.cached_property
    def catalog(self) -> Catalog:
        user_emb, item_emb = self.embed()
        ds = self.dataset
        parts = (ds.train, ds.valid, ds.test)
        known = KnownItems.from_pairs(np.concatenate([p.user for p in parts]), np.concatenate([p.item for p in parts]),
                                      ds.num_users, ds.num_items)
        return Catalog(user_emb, jax.device_put(item_emb), np.asarray(ds.user_ids), np.asarray(ds.item_ids), known)

    @functools.cached_property
    def _ids(self) -> tuple[IdIndex, IdIndex]:
        return IdIndex(np.asarray(self.user_ids), "user"), IdIndex(np.asarray(self.item_ids), "item")

    def user_index(self, users: Sequence[Any]) -> np.ndarray:
        """Dense ids of original user ids (no compute); ``ServeError`` naming unknown ones."""
        return self._ids[0](users)

    def item_index(self, items: Sequence[Any]) -> np.ndarray:
        """Dense ids of original item ids (no compute); ``ServeError`` naming unknown ones."""
        return self._ids[1](items)

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, model={self.config.model!r}, init={self.config.init!r}, "
                f"{self.dataset!r})")


def run_dataset(path: Path, config: Config, published: Path | None = None) -> Dataset:
    """The run's dataset from its config. A dataset inside the run folder (``<run>/data/<name>``,
    written by ``jaxrec update``) is read from the version being read (``path``: a later
    publication cannot change it under the reader), and is found there too when the run folder
    moved."""
    local = path / "data" / Path(config.dataset).name
    if published is not None and local.is_dir():
        inside = Path(os.path.abspath(config.dataset)).parent == Path(os.path.abspath(published)) / "data"
        if inside:
            return load_dataset(local, config)
    try:
        return load_dataset(config.dataset, config)
    except DataError:
        if local.is_dir():
            log.info("dataset %s not found; using %s (moved with the run folder)", config.dataset, local)
            return load_dataset(local, config)
        raise


def load_run(out_dir: str | Path, dataset: Dataset | str | Path | None = None) -> Run:
    """The run in ``out_dir``: config, model, dataset (reloaded from the config unless given,
    then checked against the run's fingerprint) and best parameters.

    ``dataset``: a ``Dataset``, or a dataset name / folder loaded with the run's config
    (instead of the config's ``dataset``).

    The folder is read through ``jaxrec.train.runfolder.RunFolder.read`` (the one reader of run
    folders): only a published, finished run (results.json) is served; while a run is still
    being written the error says so. Its ``RunFolderError`` reaches the caller as ``ServeError``.

    Raises:
      ServeError: no such run folder, no run.json or no best checkpoint, a run still being
        written or never finished, or a dataset that is not the one the run was trained on
        (the differing fingerprint fields named).
        Also for a model whose outputs are not dot-product scores (``Encoder.dot_scores=False``:
        A-LLMRec stage 2, served through ``jaxrec.methods.allmrec``).
      ConfigError / DataError: the stored config is invalid here (e.g. a plugin that cannot be
        imported) or its dataset cannot be loaded.
      CheckpointMismatchError: the checkpoint does not fit the model the config builds.
      CheckpointDamagedError: the checkpoint's files cannot be read.
    """
    folder = None
    try:
        folder = RunFolder.read(out_dir)
        config = folder.config
        model = get_model(config)
        if not model.encoder.dot_scores:  # e.g. A-LLMRec stage 2: soft tokens ranked by its LM
            raise ServeError(f"run folder {folder.published}: model {config.model!r} does not score items by dot "
                             "product (its outputs feed another scorer); serve it through its method package "
                             "(A-LLMRec: jaxrec.methods.allmrec stage2.evaluate_lm / rerank.rerank), not jaxrec.serve")
        results = folder.finished_results()
        if dataset is None:
            dataset = run_dataset(folder.path, config, folder.published)
        elif isinstance(dataset, (str, Path)):
            dataset = load_dataset(dataset, config)
        fingerprint = folder.check_dataset(dataset)
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shapes = None
        if model.encoder.init_reads_context:  # parameter shapes from the (serve) context
            from jaxrec.models.base import abstract_context  # noqa: PLC0415
            from jaxrec.models.contexts import serve_context  # noqa: PLC0415

            shapes = abstract_context(serve_context(model.context, dataset, config))
        abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dataset.num_users, dataset.num_items,
                                                     shapes))
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract)
        params = folder.restore_params(abstract, "best")
        return Run(folder.published, config, model, params, dataset, fingerprint, results, folder.init_record,
                   folder)
    except BaseException as e:
        if folder is not None:
            folder.close()
        if isinstance(e, RunFolderError):
            raise ServeError(str(e)) from None
        raise


__all__ = ["Run", "Catalog", "KnownItems", "IdIndex", "ServeError", "load_run", "run_dataset"]
