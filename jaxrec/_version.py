"""The package version (one place: ``jaxrec.__version__`` and results files read it)."""

__version__ = "0.1.0"
