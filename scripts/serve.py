"""`make ui` / `make dashboard`: the MLflow UI or optuna-dashboard on this project's stores.

    .venv/bin/python scripts/serve.py mlflow [--port 5000] [--host 127.0.0.1]
    .venv/bin/python scripts/serve.py optuna [--port 8080] [--host 127.0.0.1]

Checks the store first (a missing or empty store is one line naming it and the command that
fills it, exit status 2, nothing created), prints the links to open (for MLflow: each
experiment's model runs, best mean AUC first), then replaces itself with the server. A store the
user chose (MLFLOW_TRACKING_URI; `--storage` for Optuna) is served instead.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _exec(argv: list[str]) -> int:
    exe = Path(sys.executable).parent / argv[0]
    if not exe.is_file():
        return _fail(f"{exe} is not installed; run `make setup` (installs epiflow[dashboard])")
    sys.stdout.flush()
    os.execv(str(exe), [str(exe), *argv[1:]])
    return 0  # not reached


def mlflow_links(uri: str, base: str) -> list[str]:
    """One line per experiment holding model runs: its name and the link to its model runs,
    best mean AUC first; the others by name only."""
    from mlflow import MlflowClient

    from pipelines import tracking

    client = MlflowClient(tracking_uri=uri)
    lines = []
    for exp in client.search_experiments():
        tracking.label_experiment_runs(client, exp)
        n_models = len(client.search_runs([exp.experiment_id], filter_string=tracking.MODEL_FILTER, max_results=200))
        if n_models:
            lines.append(f"  {exp.name} ({n_models} model runs, best mean AUC first):\n"
                         f"    {tracking.ui_url(exp.experiment_id, base)}")
        elif exp.name != "Default":
            lines.append(f"  {exp.name}: {base}/#/experiments/{exp.experiment_id}/runs")
    return lines


def serve_mlflow(args) -> int:
    from pipelines import tracking

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking.user_tracking_uri()
    if uri is None:
        db = tracking.store_root(ROOT) / "mlruns" / "mlflow.db"
        if not db.is_file() or db.stat().st_size == 0:
            return _fail(f"no MLflow store at {db}: nothing was logged yet (run `make demo` first)")
        uri = f"sqlite:///{db}"
    base = f"http://{args.host}:{args.port}"
    tracking.quiet_mlflow_logs()
    print(f"MLflow UI on {uri}\n  open {base}\n" + "\n".join(mlflow_links(uri, base)), flush=True)
    return _exec(["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port),
                  "--workers", str(args.workers)])


def serve_optuna(args) -> int:
    from pipelines import tracking

    url = args.storage or f"sqlite:///{tracking.store_root(ROOT) / 'mlruns' / 'optuna.db'}"
    target = url
    if url.startswith(("sqlite:///", "journal:")):
        path = Path(url.split(":///", 1)[1] if url.startswith("sqlite") else url[len("journal:"):])
        if not path.is_file() or path.stat().st_size == 0:
            return _fail(f"no Optuna studies at {path} (run `make demo`, or `.venv/bin/epiflow tune ...`)")
        if url.startswith("journal:"):
            target = str(path)
    try:
        import optuna

        from pipelines.tune import make_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        names = [s.study_name for s in optuna.get_all_study_summaries(make_storage(url)[0])]
    except Exception as exc:  # noqa: BLE001 - any storage failure is one line, not a traceback
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _fail(f"cannot read Optuna storage {url}: {text}")
    if not names:
        return _fail(f"no Optuna study in {url} (run `make demo`, or `.venv/bin/epiflow tune ...`)")
    print(f"optuna-dashboard on {url}: studies {', '.join(names)}\n  open http://{args.host}:{args.port}", flush=True)
    extra = ["--storage-class", "JournalFileStorage"] if url.startswith("journal:") else []
    return _exec(["optuna-dashboard", target, *extra, "--host", args.host, "--port", str(args.port)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("what", choices=["mlflow", "optuna"], help="which store to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=None, help="port (default: 5000 for MLflow, 8080 for Optuna)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: the project's mlruns/optuna.db)")
    p.add_argument("--workers", type=int, default=1,
                   help="MLflow UI worker processes (one starts fast and is enough for one person)")
    args = p.parse_args(argv)
    args.port = args.port or (5000 if args.what == "mlflow" else 8080)
    import pipelines  # noqa: F401,I001  (telemetry and analytics off)

    return serve_mlflow(args) if args.what == "mlflow" else serve_optuna(args)


if __name__ == "__main__":
    sys.exit(main())
