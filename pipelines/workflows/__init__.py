"""The seam between stages and the cores: typed data objects and the workflows every caller
(stages, tuning, learning curves, sweeps, benchmarks) shares."""
