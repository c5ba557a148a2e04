"""Features service settings (prefix MERIDIAN_FEATURES_)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meridian_common.features import FeatureSet, feature_set


class FeaturesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_FEATURES_", extra="forbid", frozen=True)

    feature_set: str = Field(
        "trend@2.0.0", pattern=r"^[a-z0-9_-]+@\d+\.\d+\.\d+$",
        description="Feature set to publish, name@version (its columns and parameters are "
                    "fixed by the version; models record the version they were trained on).")
    cross_asset: bool = Field(
        True, description="Join the reference symbol's return (the set's cross_symbol, e.g. "
                          "BTCUSDT) into other symbols' rows. A row then waits until the "
                          "reference's candle for the same hour has arrived; turn off for runs "
                          "that do not ingest the reference (its column is then NaN).")
    funding: bool = Field(
        False, description="Join the last settled funding rate (perpetuals). A row then waits "
                           "until md.funding.v1 has progressed to the candle's close (ingest "
                           "publishes funding watermarks); off: the column is NaN.")
    hold_warning_s: float = Field(
        120.0, gt=0, le=86_400,
        description="Log a warning when a symbol's oldest candle has waited this long (wall "
                    "clock) for a join input: the reference symbol or funding has stopped.")

    @field_validator("feature_set")
    @classmethod
    def _known(cls, value: str) -> str:
        name, version = value.split("@")
        try:
            feature_set(name, version)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None  # names the known sets
        return value

    @property
    def spec(self) -> FeatureSet:
        name, version = self.feature_set.split("@")
        return feature_set(name, version)
