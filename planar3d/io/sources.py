"""The records a configuration names: its ``--data`` (any layout :func:`planar3d.io.datasets.find_dataset`
reads) or the built-in phantom, made on first use.
"""

from __future__ import annotations

from planar3d.config import Config
from planar3d.io.datasets import find_dataset
from planar3d.io.phantom import ensure_phantom
from planar3d.io.records import Record

__all__ = ["classification_records", "dataset_records"]


def dataset_records(config: Config) -> list[Record]:
    """The dataset's records: ``config.data``, or the built-in phantom (made on first use)."""
    if config.data is not None:
        return find_dataset(config.data, require_masks=True, bids=config.bids_options(), target=config.target)

    options = {"seed": config.phantom_seed, "n_per_centre": config.phantom_n_per_centre, "mode": config.phantom_mode}
    if config.phantom_scale is not None:
        options["scale"] = config.phantom_scale
    if config.phantom_lesion_load is not None:
        options["lesion_load"] = config.phantom_lesion_load
    return find_dataset(ensure_phantom(**options), require_masks=True, bids=config.bids_options())


def classification_records(config: Config) -> list[Record]:
    """The dataset's scans: ``config.data`` (masks not needed) or the built-in phantom."""

    if config.data is None:
        return dataset_records(config)
    return find_dataset(config.data, bids=config.bids_options(), target=config.target)  # classification does not need masks
