"""Item text for the encoder: a per-dataset template filled with each item's metadata.

``item_texts(item_features, template) -> (texts [I] of str, TextReport)``.

Field values are rendered as: ``None``/NaN -> ``""``; a list/tuple/array (``token_seq``
fields, nested Amazon category lists) -> its non-empty elements joined by one space; an
integer-valued float (``1995.0``) -> ``"1995"``; anything else -> ``str(value).strip()``.

An item whose template fields are *all* empty gets the empty string ``""`` (never the
bare template ``"Title: , Year: , Genres: "``); such items are counted in the report and
logged as a warning on ``logging.getLogger("jaxrec.init")``. Items with only some fields
empty keep the template with those slots empty (this reproduces the reference ml-100k
embeddings, built exactly that way).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import string
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger("jaxrec.init")

ML100K_TEMPLATE = "Title: {movie_title}, Year: {release_year}, Genres: {class}"
AMAZON_TEMPLATE = "Title: {title}, Brand: {brand}, Categories: {categories}, Description: {description}"

#: Templates by dataset name (lower case).
TEMPLATES: dict[str, str] = {
    "ml-100k": ML100K_TEMPLATE,
    "ml-1m": ML100K_TEMPLATE,  # jaxrec.data.movielens1m writes the same fields
    "amazon": AMAZON_TEMPLATE,
}
_AMAZON_FIELDS = ("brand", "categories", "description")
_ID_FIELDS = ("item_id",)


@dataclasses.dataclass(frozen=True)
class TextReport:
    """What ``item_texts`` did: the template used (part of the cache key) and empty items."""

    template: str
    num_items: int
    num_empty: int  # items whose template fields were all empty (text = "")
    empty_items: tuple[int, ...]  # dense ids of the first (at most 10) empty items
    missing_fields: tuple[str, ...]  # template fields absent from item_features (rendered empty)

    def __str__(self) -> str:
        s = f"item texts: {self.num_items} items, template {self.template!r}"
        if self.num_empty:
            s += f"; {self.num_empty} items with all fields empty got '' (e.g. {list(self.empty_items)})"
        if self.missing_fields:
            s += f"; fields missing from item features: {list(self.missing_fields)}"
        return s


def template_fields(template: str) -> list[str]:
    """Field names used by ``template`` in order (``{class}`` -> ``"class"``)."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def generic_template(fields: Sequence[str]) -> str:
    """``"f1: {f1}, f2: {f2}, ..."`` over ``fields`` (``item_id`` left out)."""
    return ", ".join(f"{f}: {{{f}}}" for f in fields if f not in _ID_FIELDS)


def template_for(dataset_name: str, item_features: Mapping[str, Sequence[Any]] | None = None) -> str:
    """The template for a dataset.

    By name (``ml-100k``, ``ml-1m``, ``amazon``); else by fields: the ml-100k template when
    ``movie_title``, ``release_year`` and ``class`` all exist, the Amazon one when ``title``
    and one of ``brand``/``categories``/``description`` exist; else ``generic_template``.
    """
    name = (dataset_name or "").lower()
    if name in TEMPLATES:
        return TEMPLATES[name]
    fields = [f for f in (item_features or {}) if f not in _ID_FIELDS]
    if all(f in fields for f in template_fields(ML100K_TEMPLATE)):
        return ML100K_TEMPLATE
    if "title" in fields and any(f in fields for f in _AMAZON_FIELDS):
        return AMAZON_TEMPLATE
    if not fields:
        raise ValueError(f"dataset {dataset_name!r}: no known template and no item features to build one from")
    return generic_template(fields)


def render_value(value: Any) -> str:
    """One field value as text (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, np.ndarray)):
        parts = (render_value(v) for v in value)
        return " ".join(p for p in parts if p)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        if float(value).is_integer():
            return str(int(value))
        return repr(float(value))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def item_texts(item_features: Mapping[str, Sequence[Any]], template: str) -> tuple[list[str], TextReport]:
    """Render ``template`` for every item -> (texts [I], TextReport).

    ``item_features`` maps field -> list aligned with dense item ids (all the same length).
    Template fields not in ``item_features`` render empty and are reported; if *none* of
    the template's fields exist, that is an error (wrong template for this dataset).
    """
    fields = template_fields(template)
    if not fields:
        raise ValueError(f"template {template!r}: has no {{field}} slots")
    lengths = {k: len(v) for k, v in item_features.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"item_features: fields have different lengths {lengths}; expected one per item")
    missing = tuple(f for f in fields if f not in item_features)
    if len(missing) == len(fields):
        raise ValueError(
            f"template {template!r}: none of its fields {fields} is in item_features "
            f"(available: {sorted(item_features)})"
        )
    if missing:
        log.warning("item texts: template fields %s not in item features; rendered empty", list(missing))
    num_items = next(iter(lengths.values())) if lengths else 0
    columns = {f: item_features.get(f) for f in fields}
    formatter = string.Formatter()
    texts: list[str] = []
    empty: list[int] = []
    for i in range(num_items):
        values = {f: ("" if col is None else render_value(col[i])) for f, col in columns.items()}
        if not any(values.values()):
            empty.append(i)
            texts.append("")
        else:
            texts.append(formatter.vformat(template, (), values))
    report = TextReport(template, num_items, len(empty), tuple(empty[:10]), missing)
    if empty:
        log.warning(
            "item texts: %d of %d items have all template fields empty; they get '' (e.g. %s)",
            len(empty),
            num_items,
            empty[:10],
        )
    return texts, report
