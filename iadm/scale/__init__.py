"""Bot-IoT scale: records datasets (Parquet partitioned by capture and hour), where Dask work runs,
and feature extraction from many captures at once (docs/scale.md)."""
