"""Feature sets: named, versioned columns computed identically by the streaming service
(`FeatureState`, per symbol, O(1) per candle) and by research and training (`feature_matrix`
over arrays), and one `build_matrix` for training data from either source."""

from meridian_common.features.batch import aligned_returns, feature_matrix, funding_asof
from meridian_common.features.matrix import (
    FeatureRow,
    Matrix,
    build_matrix,
    rows_from_history,
    rows_from_messages,
)
from meridian_common.features.spec import FEATURE_SETS, TREND_V2, FeatureSet, feature_set
from meridian_common.features.streaming import FeatureState

__all__ = ["FEATURE_SETS", "TREND_V2", "FeatureRow", "FeatureSet", "FeatureState", "Matrix",
           "aligned_returns", "build_matrix", "feature_matrix", "feature_set", "funding_asof",
           "rows_from_history", "rows_from_messages"]
