"""Data pipeline: readers (RecBole atomic, MovieLens raw, Amazon 2014/2018), filters,
per-user splits, negative sampling, dataset location, the parsed-dataset cache. Files are
parsed with pyarrow (exact line readers name bad lines); the rest is vectorized numpy.

Typical use: ``ds = load_dataset("ml-100k", config)`` -> ``Dataset`` with ``train``,
``valid``, ``test`` :class:`Interactions` over one dense id space.
"""

from . import filters
from .amazon import AmazonProtocol, load_amazon, read_amazon_meta, read_amazon_reviews
from .atomic import read_atomic, read_atomic_header, write_atomic
from .cache import Prepared, cached_prepare, dataset_cache_dir
from .dataset import (
                      Dataset,
                      dataset_from_interactions,
                      exclusion_pairs,
                      interactions_from_columns,
                      load_dataset,
                      prepare,
                      split_prepared,
                      truth,
)
from .errors import DataError
from .filters import FilterReport
from .interactions import Interactions, compact, remap_ids
from .locate import fetch_ml100k, find_dataset
from .movielens import load_movielens_raw, read_ml100k_items, read_ml100k_ratings, read_ml100k_users
from .movielens1m import convert_ml1m, fetch_ml1m
from .sampling import PositiveIndex, sample_negatives
from .split import SplitReport, leave_one_out, ratio_split
from .textio import Encoding, ReadReport, sniff_encoding

__all__ = [
    "DataError", "Interactions", "remap_ids", "compact",
    "Dataset", "load_dataset", "dataset_from_interactions", "interactions_from_columns",
    "exclusion_pairs", "truth", "prepare", "split_prepared",
    "Prepared", "cached_prepare", "dataset_cache_dir", "Encoding", "ReadReport", "sniff_encoding",
    "read_atomic", "read_atomic_header", "write_atomic",
    "filters", "FilterReport", "leave_one_out", "ratio_split", "SplitReport",
    "PositiveIndex", "sample_negatives",
    "find_dataset", "fetch_ml100k", "fetch_ml1m", "convert_ml1m",
    "load_amazon", "read_amazon_reviews", "read_amazon_meta", "AmazonProtocol",
    "load_movielens_raw", "read_ml100k_ratings", "read_ml100k_items", "read_ml100k_users",
]
