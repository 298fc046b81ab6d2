"""jaxrec: a JAX library for LLM-enhanced collaborative filtering.

The pieces compose as plain function calls::

    config = jaxrec.Config.for_model("lightgcn", init="variance", embeddings="items.npy")
    dataset = jaxrec.load_dataset("ml-100k", config)
    model = jaxrec.get_model(config)
    params = jaxrec.initial_params(model, dataset, config)
    result = jaxrec.fit(model, dataset, config, out_dir="checkpoints/run", params=params)
"""

__version__ = "0.1.0"

from jaxrec.config import Config, ConfigError, load_config_file  # noqa: E402
from jaxrec.data import DataError, Dataset, load_dataset  # noqa: E402
from jaxrec.graph import build_graph, light_propagate, propagate  # noqa: E402
from jaxrec.models import Model, get_model  # noqa: E402
from jaxrec.pipeline import initial_params, train_run  # noqa: E402
from jaxrec.train import RunResult, fit  # noqa: E402

__all__ = [
    "Config", "ConfigError", "load_config_file",
    "DataError", "Dataset", "load_dataset",
    "build_graph", "propagate", "light_propagate",
    "Model", "get_model",
    "initial_params", "train_run",
    "RunResult", "fit",
]
