"""jaxrec: a JAX library for LLM-enhanced collaborative filtering."""

__version__ = "0.1.0"
