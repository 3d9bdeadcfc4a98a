"""Evaluation metrics for generated and decoded frames.

FD-EffNetLite0 is this project's own distribution distance (Fréchet distance on EfficientNet-Lite0 features). It is
not FID or FVD, and its values compare only with other FD-EffNetLite0 values from this project.
"""

from wm_video.metrics.feature_distance import (
    FEATURE_DIM,
    METRIC,
    EfficientNetLite0,
    FeatureDistance,
    clip_features,
    frame_features,
    frechet_distance,
    frechet_distance_from_stats,
    load_feature_network,
    preprocess,
)

__all__ = [
    "FEATURE_DIM",
    "METRIC",
    "EfficientNetLite0",
    "FeatureDistance",
    "clip_features",
    "frame_features",
    "frechet_distance",
    "frechet_distance_from_stats",
    "load_feature_network",
    "preprocess",
]
