"""jaxrec: a JAX library for LLM-enhanced collaborative filtering.

The pieces compose as plain function calls::

    config = jaxrec.Config.for_model("lightgcn", init="variance", embeddings="items.npy")
    dataset = jaxrec.load_dataset("ml-100k", config)
    model = jaxrec.get_model(config)
    params = jaxrec.initial_params(model, dataset, config)
    result = jaxrec.fit(model, dataset, config, out_dir="checkpoints/run", params=params)
    run = jaxrec.load_run("checkpoints/run")              # a trained run: config, dataset, best params
    recs = jaxrec.recommend(run, ["196", "186"], k=10)    # original ids in and out (jaxrec.serve)
"""

from jaxrec import registry  # noqa: E402
from jaxrec._version import __version__  # noqa: F401
from jaxrec.config import Config, ConfigError, build_config, load_config_file  # noqa: E402
from jaxrec.data import DataError, Dataset, load_dataset  # noqa: E402
from jaxrec.graph import build_graph, light_propagate, propagate  # noqa: E402
from jaxrec.models import Encoder, Model, TableSpec, get_model, register_model  # noqa: E402
from jaxrec.objectives import Term, term, weighted_sum  # noqa: E402
from jaxrec.pipeline import initial_params, train_run  # noqa: E402
from jaxrec.serve import load_run, recommend, score  # noqa: E402
from jaxrec.train import RunResult, TrainState, fit, make_partitioner, prepare  # noqa: E402

__all__ = [
    "registry", "Config", "ConfigError", "build_config", "load_config_file",
    "DataError", "Dataset", "load_dataset",
    "build_graph", "propagate", "light_propagate",
    "Model", "Encoder", "TableSpec", "get_model", "register_model",
    "Term", "term", "weighted_sum",
    "initial_params", "train_run",
    "RunResult", "TrainState", "fit", "make_partitioner", "prepare",
    "load_run", "recommend", "score",
]
