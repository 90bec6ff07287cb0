"""epiflow's pipelines: data in and out, stages, tracking, tuning.

Nothing leaves the machine at run time: cohorts are patient data. The telemetry of MLflow and
DVC is switched off here, before either is imported by any entry point (CLI, stages, tests,
benchmarks); a user's own setting to the contrary is overridden.
"""
import os

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["DVC_NO_ANALYTICS"] = "1"
