"""Dask on butte: `ButteCluster` runs Dask workers as butte tasks (docs/dask.md).

Needs the ``dask`` extra (``pip install butte[dask]``)."""

from butte.dask.cluster import ButteCluster

__all__ = ["ButteCluster"]
