"""MLflow wiring: one store under <repo>/mlruns, experiment per study, parent run per model,
child run per CV fold; every run tagged with the git commit and the DVC hash of each input.

The tracking URI is absolute and resolved from the repository root, so runs launched by
``dvc exp run`` from a temporary copy of the repo (``<root>/.dvc/tmp/exps/...``) land in the same
store. ``MLFLOW_TRACKING_URI`` overrides it (e.g. a shared tracking server).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
from pathlib import Path

import yaml

from pipelines.atomic import pid_alive
from pipelines.params import repo_root

TAG_PREFIX = "epiflow."


def store_root(start: Path | None = None) -> Path:
    """The repository whose mlruns/ receives runs, seen through dvc experiment temp dirs."""
    root = repo_root(start)
    parts = root.parts
    if ".dvc" in parts:  # <root>/.dvc/tmp/exps/<run>/...: the real repo is above .dvc
        root = Path(*parts[: parts.index(".dvc")])
    return root


# MLflow exports the URI given to ``mlflow.set_tracking_uri`` as MLFLOW_TRACKING_URI, to this
# process and to every child (a stage started by ``dvc repro`` from ``epiflow demo``, say). The
# project store's URI is therefore also recorded here, so that only a URI the user chose counts
# as "set by the user": ours is re-derived from the project root every time.
OWN_URI_ENV = "EPIFLOW_OWN_TRACKING_URI"


def user_tracking_uri() -> str | None:
    """MLFLOW_TRACKING_URI when the user set it (a tracking server, another store), else None."""
    value = os.environ.get("MLFLOW_TRACKING_URI")
    if value and value != os.environ.get(OWN_URI_ENV):
        return value
    return None


def tracking_uri(start: Path | None = None) -> str:
    user = user_tracking_uri()
    if user:
        return user
    store = store_root(start) / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def quiet_mlflow_logs() -> None:
    """MLflow's and alembic's INFO lines (``Creating initial MLflow database tables...``) are no
    news to a user of epiflow: warnings and errors only."""
    import logging

    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store"):
        logging.getLogger(name).setLevel(logging.WARNING)


def connect_existing(what: str, start: Path | None = None) -> str:
    """Point MLflow at the project store (or the user's URI) to READ it, creating nothing: a
    project store that does not exist yet is a one-line error naming ``what`` was looked for."""
    from pipelines.errors import EpiflowError

    if not user_tracking_uri():
        db = store_root(start) / "mlruns" / "mlflow.db"
        if not db.is_file():
            raise EpiflowError(f"{what}: no MLflow store at {db} (nothing was logged in this project; "
                               "run the stages without --no-mlflow, or set MLFLOW_TRACKING_URI)")
    return use_tracking_uri(start)


def use_tracking_uri(start: Path | None = None) -> str:
    """``mlflow.set_tracking_uri`` on the project store (or the user's URI); returns the URI."""
    import mlflow

    quiet_mlflow_logs()
    uri = tracking_uri(start)
    if not user_tracking_uri():
        os.environ[OWN_URI_ENV] = uri
    mlflow.set_tracking_uri(uri)
    return uri


def artifact_root(start: Path | None = None) -> str:
    return (store_root(start) / "mlruns" / "artifacts").as_uri()


# MLflow 3 opens an experiment without a kind on its GenAI (traces) page; this tag makes the UI
# treat it as classic model development (runs table first). Values: the UI's ExperimentKind enum.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"       # the experiment's description, shown above its runs
LEVEL_TAG = f"{TAG_PREFIX}level"       # model (a model's CV: one parent run), fold, report, ...
MODEL_FILTER = f"tags.`{LEVEL_TAG}` = 'model'"
MODEL_ORDER = "metrics.`auc_mean`"


def describe(experiment: str) -> str:
    """The description (markdown) of an epiflow experiment: what is in it and how to see the
    comparison first."""
    return (f"**{experiment}**: runs of the epiflow project, tagged with the git commit "
            f"(`{TAG_PREFIX}git_commit`) and the DVC hash of every input (`{TAG_PREFIX}dvc.<path>`).\n\n"
            f"- one parent run per model (`{LEVEL_TAG} = model`): mean and sd of the ROC AUC over the "
            "shared cross-validation folds, parameter count, training time; artifacts `roc.png`, "
            "`fold_auc.png`, `folds.tsv`;\n"
            f"- one child run per CV fold (`{LEVEL_TAG} = fold`) with its AUC and training time;\n"
            "- the other stages' runs (report, learning curve, sparsity sweep, scans, interpretation).\n\n"
            f"To compare the models: filter `{MODEL_FILTER}` and sort by `auc_mean`, descending "
            "(`make ui` prints that link).")


def _label_experiment(client, exp_id: str, experiment: str, tags: dict) -> None:
    """Set the kind and description of an experiment that lacks them (one made by an older
    epiflow, or by hand); a description the user wrote is kept."""
    for key, value in ((EXPERIMENT_KIND_TAG, EXPERIMENT_KIND), (NOTE_TAG, describe(experiment))):
        if key not in tags:
            try:
                client.set_experiment_tag(exp_id, key, value)
            except Exception:      # a read-only server: the runs matter, the label does not
                pass


def setup(experiment: str, start: Path | None = None) -> str:
    """Point MLflow at the project store and select (creating if needed) the study's experiment,
    labelled as a model-development experiment with a description of its runs."""
    import logging

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    use_tracking_uri(start)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        location = None
        if not user_tracking_uri():
            location = f"{artifact_root(start)}/{experiment}"
        try:
            exp_id = mlflow.create_experiment(experiment, artifact_location=location, tags={
                EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, NOTE_TAG: describe(experiment)})
        except Exception:  # created concurrently by another stage
            exp_id = mlflow.get_experiment_by_name(experiment).experiment_id
    else:
        exp_id = exp.experiment_id
        _label_experiment(mlflow.MlflowClient(), exp_id, experiment, exp.tags or {})
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def label_experiment_runs(client, exp) -> int:
    """An experiment logged by an older epiflow, seen by `make ui`: give it its kind and
    description, and its model runs (top-level `train` runs) the `epiflow.level = model` tag the
    UI link filters on. Experiments without epiflow runs are left alone. Returns runs tagged."""
    train = f"tags.`{TAG_PREFIX}stage` = 'train'"
    runs = client.search_runs([exp.experiment_id], filter_string=train, max_results=5000)
    if not runs:
        return 0
    _label_experiment(client, exp.experiment_id, exp.name, exp.tags or {})
    n = 0
    for r in runs:
        if LEVEL_TAG not in r.data.tags and "mlflow.parentRunId" not in r.data.tags:
            client.set_tag(r.info.run_id, LEVEL_TAG, "model")
            n += 1
    return n


def ui_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI's runs table of ``experiment_id`` showing the model runs only, best mean AUC
    first (the UI reads ``searchFilter``, ``orderByKey`` and ``orderByAsc`` from the URL, and
    ``workflowType=machine_learning`` selects its "Model training" view rather than GenAI)."""
    from urllib.parse import quote

    return (f"{base}/#/experiments/{experiment_id}/runs?searchFilter={quote(MODEL_FILTER, safe='')}"
            f"&orderByKey={quote(MODEL_ORDER, safe='')}&orderByAsc=false&workflowType=machine_learning")


def git_commit(root: Path | None = None) -> str:
    root = store_root(root)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _dvc_recorded_hashes(root: Path) -> dict[str, str]:
    """path -> md5 as recorded by DVC in dvc.lock (stage outs) and *.dvc files."""
    found: dict[str, str] = {}
    lock = root / "dvc.lock"
    if lock.is_file():
        data = yaml.safe_load(lock.read_text()) or {}
        for stage in (data.get("stages") or {}).values():
            for out in stage.get("outs", []) or []:
                if "md5" in out:
                    found[os.path.normpath(out["path"])] = out["md5"]
    for dvcfile in (p for p in root.glob("*.dvc") if p.is_file()):
        data = yaml.safe_load(dvcfile.read_text()) or {}
        for out in data.get("outs", []) or []:
            if "md5" in out:
                found[os.path.normpath(str(Path(dvcfile.parent, out["path"]).relative_to(root)))] = out["md5"]
    return found


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _tag_path(p: Path, root: Path) -> tuple[str, Path]:
    """(name in the tags, file): relative to the project root when inside it, else absolute
    (a cohort kept outside the project)."""
    if not p.is_absolute():
        return os.path.normpath(str(p)), root / p
    try:
        rel = os.path.normpath(str(p.resolve().relative_to(root.resolve())))
        return rel, root / rel
    except ValueError:
        return str(p.resolve()), p.resolve()


def data_hashes(paths, root: Path | None = None) -> dict[str, str]:
    """DVC content hash of each input path (relative to the repo root).

    A path DVC tracks (an out in dvc.lock or a *.dvc file) gets DVC's recorded md5 — the data
    version. A file inside a tracked directory, or an untracked file, gets the md5 of its bytes
    (what DVC 3 records for a file). A directory without a record gets a digest of its files.
    """
    root = store_root(root) if root is None else Path(root)
    recorded = _dvc_recorded_hashes(root)
    out = {}
    for p in paths:
        p = Path(p)
        rel, full = _tag_path(p, root)
        if rel in recorded and full.is_dir():
            out[rel] = recorded[rel]
        elif full.is_file():
            out[rel] = file_md5(full)
        elif full.is_dir():
            h = hashlib.md5()
            for f in sorted(x for x in full.rglob("*") if x.is_file()):
                h.update(f"{f.relative_to(full)}:{file_md5(f)}\n".encode())
            out[rel] = h.hexdigest() + ".dir"
        elif rel in recorded:
            out[rel] = recorded[rel]
    return out


def run_tags(inputs, params_text: str | None = None, extra: dict | None = None) -> dict[str, str]:
    """Tags for a run: git commit, DVC hash per input, optional params fingerprint."""
    commit = git_commit()
    tags = {f"{TAG_PREFIX}git_commit": commit, "mlflow.source.git.commit": commit.removesuffix("-dirty")}
    for path, md5 in data_hashes(inputs).items():
        tags[f"{TAG_PREFIX}dvc.{path}"] = md5
    if params_text is not None:
        tags[f"{TAG_PREFIX}params_md5"] = hashlib.md5(params_text.encode()).hexdigest()
    for k, v in (extra or {}).items():
        tags[f"{TAG_PREFIX}{k}"] = str(v)
    return tags


def flatten_params(d: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_params(v, prefix=f"{key}."))
        else:
            flat[key] = str(v)[:500]
    return flat


@contextlib.contextmanager
def parent_run(name: str, tags: dict, params: dict):
    """A parent run tagged with this process (host, pid); runs of the experiment that a dead
    process of this machine left RUNNING (a killed train, say) are marked FAILED first."""
    import mlflow

    owner = {f"{TAG_PREFIX}host": socket.gethostname(), f"{TAG_PREFIX}pid": str(os.getpid())}
    with mlflow.start_run(run_name=name, tags={**tags, **owner}) as run:
        fail_dead_runs(run.info.experiment_id, keep=run.info.run_id)
        if params:
            mlflow.log_params(params)
        yield run


def fail_dead_runs(experiment_id: str, keep: str | None = None) -> list[str]:
    """Mark FAILED the RUNNING runs of ``experiment_id`` started by a process of this machine that
    is gone (tags host/pid), and their RUNNING child runs (a fold killed mid-write). Returns the
    run ids changed."""
    from mlflow import MlflowClient

    client = MlflowClient()
    host = socket.gethostname()
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                 max_results=5000)
    dead = set()
    for r in running:
        t = r.data.tags
        pid = t.get(f"{TAG_PREFIX}pid", "")
        if r.info.run_id != keep and t.get(f"{TAG_PREFIX}host") == host and pid.isdigit() \
                and not pid_alive(int(pid)):
            dead.add(r.info.run_id)
    changed = []
    for r in running:
        if r.info.run_id in dead or r.data.tags.get("mlflow.parentRunId") in dead:
            client.set_tag(r.info.run_id, f"{TAG_PREFIX}ended", "process died")
            client.set_terminated(r.info.run_id, status="FAILED")
            changed.append(r.info.run_id)
    return changed


def log_child(parent_run_id: str, experiment_id: str, name: str, *, tags: dict, params: dict, metrics: dict,
              seconds: float | None = None):
    """A finished child run (one CV fold) under ``parent_run_id``, written in one batch. With
    ``seconds`` (how long the fold's work took, ending now) the run's start and end times span
    that work, so the UI's duration column shows the fold's real time, not the logging's."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param
    import time

    client = MlflowClient()
    all_tags = {**tags, "mlflow.parentRunId": parent_run_id}
    now = int(time.time() * 1000)
    start = now - int(round(1000 * seconds)) if seconds is not None and seconds >= 0 else None
    run = client.create_run(experiment_id, run_name=name, tags=all_tags, start_time=start)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    client.set_terminated(run.info.run_id, end_time=now if start is not None else None)
    return run.info.run_id


def ui_hint(experiment: str | None = None, start: Path | None = None) -> str:
    """How to look at the runs, as a command that works in a plain shell (no activated venv):
    ``make ui`` in the project, else the venv's own ``mlflow ui`` by its path; then the link to the
    experiment's model runs (best mean AUC first) when it has an id already."""
    import sys

    link = "http://127.0.0.1:5000"
    exp_id = None
    if experiment:
        try:
            import mlflow

            exp = mlflow.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else None
        except Exception:       # no store, a server that is down: the command alone still helps
            exp_id = None
    if exp_id is not None:
        link = ui_url(exp_id)
    user = user_tracking_uri()
    if user and not user.startswith(("sqlite:", "file:")) and "://" in user:
        return f"MLflow: runs on {user}" + (f" (experiment {experiment})" if experiment else "")
    root = store_root(start)
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    try:
        shown = f"./{mlflow_bin.relative_to(Path.cwd())}"
    except ValueError:
        shown = str(mlflow_bin)
    direct = f"{shown} ui --backend-store-uri {tracking_uri(start)}"
    if (root / "Makefile").is_file() and (root / "scripts" / "serve.py").is_file():
        cd = "" if root.resolve() == Path.cwd().resolve() else f"cd {root} && "
        return f"MLflow: {cd}make ui\n  (or {direct})\n  then open {link}"
    return f"MLflow: {direct}\n  then open {link}"
