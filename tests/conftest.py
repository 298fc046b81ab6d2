"""Shared test setup: 8 host CPU devices for the sharding tests (before jax is imported)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# 8 virtual devices on 2 cores can starve XLA:CPU collectives ("only 7 of 8 arrived") without this.
os.environ.setdefault("PJRT_NPROC", "32")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $JAXREC_DATA); skips the test when the real data is absent."""
    root = Path(os.environ.get("JAXREC_DATA", SHARED_DATA))
    if not (root / "ml-100k" / "ml-100k.inter").exists():
        pytest.skip(f"real data not found under {root}")
    return root
