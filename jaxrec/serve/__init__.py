"""From a trained run to recommendations: load it, recommend, score, export, update it.

    run = jaxrec.load_run("checkpoints/ml-100k-lightgcn-none-s2020")
    recs = jaxrec.recommend(run, ["196", "186"], k=10)        # original ids in, original ids out
    jaxrec.score(run, ["196"], ["242", "302"])                 # [1, 2] dot-product scores
    jaxrec.serve.export(run, "exported/")                      # embeddings + id lists (.npy, .parquet)
    jaxrec.serve.update(run, "new.inter", out_dir="run2", items="new.item")   # long-short update

- ``run``: ``load_run`` / ``Run`` (config, dataset checked against its fingerprint, model, best
  params) and ``Catalog`` (the served embeddings: ``model.embed`` on the ``"serve"`` context);
- ``recommend``: ``recommend``, ``score``, ``write_recommendations`` (every user, in blocks,
  to parquet/csv);
- ``export``: embeddings with their original ids;
- ``item_rows`` (``jaxrec.init.record``): new item rows made as the run's LLM initialization made its own;
- ``update``: the long-short update (new interactions and items, cached text embeddings,
  rows carried over from the parent run, training continued through ``jaxrec.fit``).
"""

from jaxrec.init.record import InitRecordError, init_record, item_rows
from jaxrec.serve.export import export
from jaxrec.serve.recommend import (
                                    Recommendations,
                                    WriteReport,
                                    format_recommendations,
                                    recommend,
                                    score,
                                    title_field,
                                    write_recommendations,
)
from jaxrec.serve.run import Catalog, KnownItems, Run, ServeError, load_run
from jaxrec.serve.update import (
                                    CarryReport,
                                    EmbeddingUpdate,
                                    MergeReport,
                                    UpdateReport,
                                    UpdateResult,
                                    carry_params,
                                    update,
)

__all__ = [
    "Run", "Catalog", "KnownItems", "ServeError", "load_run",
    "Recommendations", "WriteReport", "recommend", "score", "write_recommendations", "format_recommendations",
    "title_field", "export",
    "InitRecordError", "init_record", "item_rows",
    "update", "UpdateResult", "UpdateReport", "MergeReport", "EmbeddingUpdate", "CarryReport", "carry_params",
]
