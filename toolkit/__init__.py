"""darch: architecture and hyperparameter search on Dask, for HPC centres."""

from toolkit.space import SearchSpace

__version__ = "0.1.0"
__all__ = ["SearchSpace", "__version__"]
