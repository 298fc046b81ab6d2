"""A-LLMRec's preprocessing of Amazon 2018 review data: the ``"allmrec"`` protocol of
``jaxrec.data.load_amazon`` (registered by ``jaxrec.methods.allmrec.register()``).

Source: ghdtjr/A-LLMRec ``pre_train/sasrec/data_preprocess.py``: one counting pass keeps a
review when its user and its item have >= 5 reviews (>= 4 for Beauty and Toys, where reviews
rated below 3 are not counted, but kept); no rating filter, no iterative core; sequences in
``unixReviewTime`` order (stable: ties keep file order, counted in the split report); item text
``Title: <title>, Description: <first description element>`` (``allmrec_item_text``); items
without metadata stay, with the reference's fallback text.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from jaxrec.config import Config
from jaxrec.data.amazon import AmazonProtocol, JsonTable

NO_TITLE, NO_DESCRIPTION, EMPTY_DESCRIPTION = "No Title", "No Description", "Empty description"


def allmrec_item_text(title: str | None, description: list[str] | None, has_meta: bool = True) -> str:
    """``"Title: <t>, Description: <d>"`` with A-LLMRec's fallbacks.

    Source: ghdtjr/A-LLMRec ``pre_train/sasrec/data_preprocess.py`` (``name_dict``: the
    first description element, ``'Empty description'`` for an empty list; an exception
    inside its ``try`` leaves the item out of ``name_dict``) and ``models/a_llmrec_model.py``
    ``find_item_text`` (``.get(i, 'No Title')``, ``.get(i, 'No Description')``). So: no
    metadata record -> No Title / No Description; no ``description`` key -> the reference's
    ``KeyError`` also skips the title -> No Title / No Description; a description but no
    ``title`` -> the description and No Title. The ``Title: ..., Description: ...`` form is
    the reference's ``pre_train/ctrl/model_ctrl.py`` template with a space after each colon.
    """
    t, d = NO_TITLE, NO_DESCRIPTION
    if has_meta and description is not None:
        d = description[0] if description else EMPTY_DESCRIPTION
        if title is not None:
            t = title
    return f"Title: {t}, Description: {d}"


def allmrec_threshold(name: str) -> tuple[int, float | None]:
    """(threshold, count_min_rating) of A-LLMRec's counting pass for a dataset name:
    (4, 3.0) when the name contains ``Beauty`` or ``Toys`` (as the reference tests
    ``'Beauty' in fname``), else (5, None)."""
    return (4, 3.0) if ("Beauty" in name or "Toys" in name) else (5, None)


def _allmrec_features(meta: JsonTable) -> tuple[dict, int]:
    """One row per asin, the LAST record of a repeated asin (the reference builds a dict),
    with columns title, description (first element, as the reference keeps), text."""
    tb = meta.table
    asins = tb.column("asin").to_pylist()
    last = {a: j for j, a in enumerate(asins)}
    rows = np.fromiter(last.values(), dtype=np.int64, count=len(last))
    titles = tb.column("title").take(pa.array(rows)).to_pylist()
    descs = tb.column("description").take(pa.array(rows)).to_pylist()
    ids = np.asarray(list(last), dtype=str) if last else np.array([], dtype=str)
    cols = {"item_id": ids,
            "title": [t if t is not None else "" for t in titles],
            "description": [(d[0] if d else "") if d is not None else "" for d in descs],
            "text": [allmrec_item_text(t, d) for t, d in zip(titles, descs)]}
    return cols, len(asins) - len(last)


#: The ``"allmrec"`` protocol of ``load_amazon`` (``Config(split="loo_time")`` by default).
ALLMREC_PROTOCOL = AmazonProtocol("allmrec", lambda: Config(split="loo_time"), missing_meta="empty",
                                  threshold=allmrec_threshold, features=_allmrec_features,
                                  fill_text=lambda: allmrec_item_text(None, None, has_meta=False))

__all__ = ["allmrec_item_text", "allmrec_threshold", "ALLMREC_PROTOCOL", "NO_TITLE", "NO_DESCRIPTION",
           "EMPTY_DESCRIPTION"]
