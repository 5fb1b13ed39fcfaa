"""Data: public paired datasets, the offline photo corpus, synthetic rain/snow, and mixed labelled loading."""

from smartassign.data.batches import SyntheticBatches
from smartassign.data.corpus import clean_photos, load_downscaled, load_rgb
from smartassign.data.datasets import LAYOUTS, LayoutReport, PairedDataset, check_layout
from smartassign.data.download import ARCHIVES, fetch
from smartassign.data.engine import degrade
from smartassign.data.mixed import (
    LABELS,
    PAPER_PAIRINGS,
    BalancedBatchSampler,
    MixedDataset,
    SyntheticPairs,
    mixed_loader,
)
from smartassign.data.synthset import heldout_photo, weathered

__all__ = [
    "ARCHIVES",
    "LABELS",
    "LAYOUTS",
    "PAPER_PAIRINGS",
    "BalancedBatchSampler",
    "LayoutReport",
    "MixedDataset",
    "PairedDataset",
    "SyntheticBatches",
    "SyntheticPairs",
    "check_layout",
    "degrade",
    "clean_photos",
    "fetch",
    "heldout_photo",
    "load_downscaled",
    "load_rgb",
    "mixed_loader",
    "weathered",
]
