"""LLM-based initialization of collaborative-filtering embeddings (LLMInit, TF-LLMER).

Pipeline: item metadata -> text (``text``) -> encoder (``encoders``, cached by ``cache``)
or a precomputed file (``precomputed``) -> item embeddings [I, N] -> K dims
(``selection``) -> item table [I, K]; user table = mean of training items (``pooling``);
optional rescaling (``scaling``); written into a backbone's params (``apply``).
``embeddings`` ties text, encoder, cache and precomputed files to a dataset.
TF-LLMER: ``normalize`` (``normalize_table``) and ``recpca`` (``rec_pca``, exact at 10^7
interactions without building the co-occurrence matrix).

The encoder modules import sentence-transformers lazily: ``import jaxrec.init`` stays light.
"""

from jaxrec.init.apply import InitReport, llm_init_params
from jaxrec.init.cache import CacheInfo, cached_item_embeddings, texts_sha256
from jaxrec.init.embeddings import dataset_item_embeddings, item_embeddings
from jaxrec.init.encoders import (
    Encoder,
    EncoderNotAvailableError,
    encode_texts,
    encoder_cache_id,
    load_encoder,
    minilm_path,
    mpnet_path,
)
from jaxrec.init.normalize import NormalizeError, NormalizeReport, normalize_items, normalize_table, typical_row_norm
from jaxrec.init.pooling import user_table_from_items
from jaxrec.init.precomputed import (
    EmbeddingFileError,
    PrecomputedReport,
    load_precomputed,
)
from jaxrec.init.recpca import (
    Cooccurrence,
    CooccurrenceFactors,
    RecPCAError,
    RecPCAReport,
    cooccurrence_degree,
    cooccurrence_factors,
    item_cooccurrence,
    laplacian_form,
    normalized_adjacency,
    normalized_laplacian,
    rec_pca,
)
from jaxrec.init.scaling import rescale, xavier_std
from jaxrec.init.selection import (
    initial_item_table,
    item_popularity,
    pca_project,
    select_dims,
    top_eigenvectors,
)
from jaxrec.init.sources import (
    REFERENCE_EMBEDDINGS,
    EmbeddingSource,
    find_reference_embeddings,
    resolve_embedding_source,
    save_precomputed,
)
from jaxrec.init.strategies import Initializer, InitInputs, get_initializer
from jaxrec.init.text import (
    AMAZON_TEMPLATE,
    ML100K_TEMPLATE,
    TextReport,
    generic_template,
    item_texts,
    template_for,
)

__all__ = [
    "REFERENCE_EMBEDDINGS",
    "EmbeddingSource",
    "find_reference_embeddings",
    "resolve_embedding_source",
    "save_precomputed",
    "AMAZON_TEMPLATE",
    "CacheInfo",
    "Cooccurrence",
    "CooccurrenceFactors",
    "EmbeddingFileError",
    "Encoder",
    "EncoderNotAvailableError",
    "InitReport",
    "Initializer",
    "InitInputs",
    "get_initializer",
    "ML100K_TEMPLATE",
    "NormalizeError",
    "NormalizeReport",
    "PrecomputedReport",
    "RecPCAError",
    "RecPCAReport",
    "TextReport",
    "cached_item_embeddings",
    "cooccurrence_degree",
    "cooccurrence_factors",
    "dataset_item_embeddings",
    "encode_texts",
    "encoder_cache_id",
    "generic_template",
    "initial_item_table",
    "item_cooccurrence",
    "item_embeddings",
    "item_popularity",
    "item_texts",
    "laplacian_form",
    "llm_init_params",
    "load_encoder",
    "load_precomputed",
    "minilm_path",
    "mpnet_path",
    "normalize_items",
    "normalize_table",
    "normalized_adjacency",
    "normalized_laplacian",
    "pca_project",
    "rec_pca",
    "rescale",
    "select_dims",
    "template_for",
    "texts_sha256",
    "top_eigenvectors",
    "typical_row_norm",
    "user_table_from_items",
    "xavier_std",
]
