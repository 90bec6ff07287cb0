"""Every command in README.md works as printed, in a plain shell: no activated venv, a fresh
`bash --noprofile --norc`, PATH without the venv.

The commands are read from the README itself (every line of a ```bash/sh/shell/console block, and
the lines of an untagged block that start like a command: `make `, `.venv/bin/`, `epiflow `,
`dvc `, ...), so a section added later is covered without touching this file.

Fast checks (default suite, in-process): each command's program is found in a plain shell (a
`make` target of the Makefile, an existing `.venv/bin/` program, a system program, or a venv
program after `. .venv/bin/activate` in the same block), and each `epiflow` command line parses
with epiflow's own argument parser (so a renamed or mistyped flag fails here).

Slow check (`--runslow`): every block runs verbatim, in README order, in a copy of this checkout
whose params.yaml is shrunk to a tiny cohort (200 samples x 100 genes, 4 models, 2 x 3 folds), so
`make demo` and the pipeline reruns take minutes, not an hour. Long-running servers (`make ui`,
`make dashboard`, `mlflow ui`, `optuna-dashboard`, `epiflow view`, `dask scheduler|worker`) are
started in the background, probed on their port over HTTP and stopped at the end of their block.
`make test` / `make test-all` are this suite itself: running them from inside it would recurse, so
they are reported as not run (CI runs them: `.ci/run`).
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_BIN = REPO / ".venv" / "bin"
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
# in an untagged block, the lines that are commands (the rest is a diagram or an example file)
COMMAND_START = re.compile(r"^(\$ )?(make\b|\.venv/bin/|\. \.venv/bin/activate|source \.venv/bin/activate|"
                           r"epiflow |dvc |mlflow |optuna-dashboard|pip |python3? |plink|bcftools |dask )")
VENV_PROGRAMS = {"epiflow", "dvc", "mlflow", "optuna-dashboard", "pip", "pip3", "python", "pytest", "dask"}
BUILTINS = {"cd", "export", "echo", "set", "unset", "true", "false", "test", "[", "wait", "sleep", "exit"}
SERVER = re.compile(r"^(make (ui|dashboard)\b|(\S*/)?mlflow (ui|server)\b|(\S*/)?optuna-dashboard\b|"
                    r"(\S*/)?epiflow view\b|(\S*/)?dask (scheduler|worker)\b)")
RECURSIVE = re.compile(r"^make (test|test-all)\b")
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
# a command whose trailing comment names the GPU (`... # needs a CUDA GPU`, `# ... (GPU)`) runs only
# where nvidia-smi lists a device: on a CPU machine the full-size GPU benchmarks would run for hours
GPU_ONLY = re.compile(r"#[^\n]*\bGPU\b")
# a command that names a PostgreSQL server on this machine runs only where one listens there
# (tests/test_mlflow_server.py starts its own and runs the same workflow)
NEEDS_SERVER = re.compile(r"postgresql(?:\+psycopg2)?://[^\s@]*@127\.0\.0\.1:(\d+)")


def _has_cuda() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Command:
    line: int            # README line of the command's first line
    text: str            # verbatim (continuation lines joined with their backslashes)
    expect_error: str = ""   # README shows it failing: a `# prog ...: error: ...` comment right below


@dataclass
class Block:
    line: int
    lang: str
    commands: list[Command] = field(default_factory=list)


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of README that hold commands, with their commands."""
    blocks, cur, pending = [], None, None
    for i, raw in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w-]*)\s*$", raw)
        if fence:
            if cur is None:
                cur = Block(i, fence.group(1).lower())
            else:
                if cur.commands:
                    blocks.append(cur)
                cur, pending = None, None
            continue
        if cur is None:
            continue
        line = raw.rstrip()
        if pending is not None:                      # a continued command
            pending.text += "\n" + line
            if not line.endswith("\\"):
                pending = None
            continue
        body = line.strip()
        shown_error = re.match(r"^#\s*(\S+(?: \S+)?): error: (.*)", body)
        if shown_error and cur.commands and not cur.commands[-1].expect_error and \
                cur.commands[-1].line + cur.commands[-1].text.count("\n") == i - 1:
            cur.commands[-1].expect_error = shown_error.group(0)
            continue
        if cur.lang in SHELL_LANGS:
            if not body or body.startswith("#"):
                continue
        elif cur.lang == "" and COMMAND_START.match(body):
            pass
        else:
            continue
        body = body[2:] if body.startswith("$ ") else body
        cmd = Command(i, body)
        cur.commands.append(cmd)
        if body.endswith("\\"):
            pending = cmd
    return blocks


def simple_commands(text: str) -> list[list[str]]:
    """The simple commands of a command line (split at &&, ||, ;, |), as shell words, comments off."""
    words = shlex.split(text.replace("\\\n", " "), comments=True)
    out, cur = [], []
    for w in words:
        if w in ("&&", "||", ";", "|", "&"):
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(w)
    if cur:
        out.append(cur)
    return [[w for w in c if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)] or c for c in out]


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M)}


def _program_problem(words: list[str], activated: bool, targets: set[str]) -> str | None:
    prog = words[0]
    if prog in (".", "source"):
        return None if len(words) > 1 and words[1] == ".venv/bin/activate" else f"sources {words[1:]}"
    if prog == "make":
        missing = [t for t in words[1:] if not t.startswith("-") and "=" not in t and t not in targets]
        return f"no Makefile target {missing}" if missing else None
    if prog.startswith(".venv/bin/"):
        return None if (REPO / prog).exists() else f"{prog} is not installed by `make setup`"
    if prog in VENV_PROGRAMS:
        if activated:
            return None if (VENV_BIN / prog).exists() else f"{prog} is not in the venv"
        return f"`{prog}` needs the venv: write .venv/bin/{prog} or activate it first (. .venv/bin/activate)"
    if prog in BUILTINS:
        return None
    if shutil.which(prog, path=CLEAN_PATH) is None:
        return f"`{prog}` is not found on a plain PATH ({CLEAN_PATH})"
    return None


def _all_commands():
    for block in readme_blocks(README.read_text()):
        activated = False
        for cmd in block.commands:
            simple = simple_commands(cmd.text)
            yield block, cmd, simple, activated
            activated = activated or any(w[0] in (".", "source") and w[1:2] == [".venv/bin/activate"]
                                         for w in simple)


def test_readme_has_commands_and_the_parser_finds_them():
    blocks = readme_blocks(README.read_text())
    texts = [c.text for b in blocks for c in b.commands]
    assert "make demo" in " ".join(texts) and "make ui" in " ".join(texts)
    assert len(texts) >= 20
    # a continued command is one command, its backslashes and line breaks kept verbatim
    scan = [t for t in texts if "epiflow scan --bfile" in t]
    assert scan and all(t.count("\n") == t.count("\\\n") for t in scan)


def test_readme_commands_run_in_a_plain_shell():
    """No README command relies on an activated venv it did not activate itself."""
    targets = makefile_targets()
    problems = []
    for block, cmd, simple, activated in _all_commands():
        for words in simple:
            why = _program_problem(words, activated, targets)
            if why:
                problems.append(f"README.md:{cmd.line}: {cmd.text.splitlines()[0]}  -> {why}")
            if words[0] in (".", "source") and words[1:2] == [".venv/bin/activate"]:
                activated = True
    assert not problems, "\n".join(problems)


def test_readme_epiflow_commands_parse():
    """Every `epiflow ...` line of README is accepted by epiflow's argument parser as written."""
    from pipelines import cli

    bad = []
    for _, cmd, simple, _ in _all_commands():
        for words in simple:
            if Path(words[0]).name != "epiflow":
                continue
            args = words[1:]
            sub = next((a for a in args if not a.startswith("-")), None)
            try:
                cli.build_parser(only=sub).parse_args(args)
            except SystemExit as exc:
                if exc.code:
                    bad.append(f"README.md:{cmd.line}: {' '.join(words)}")
    assert not bad, "epiflow rejects these README commands:\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------------
# slow: run them all


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_of(text: str, env: dict) -> int | None:
    text = " ".join(shlex.split(text.replace("\\\n", " "), comments=True))      # not from a comment
    m = re.search(r"--port[ =](\d+)", text)
    if m:
        return int(m.group(1))
    m = re.search(r"\bPORT=(\d+)", text)
    if text.startswith("make ui"):
        return int(m.group(1)) if m else int(env["PORT"])
    if text.startswith("make dashboard"):
        return int(env["DASHBOARD_PORT"])
    if re.search(r"mlflow (ui|server)", text):
        return 5000
    if "optuna-dashboard" in text:
        return 8080
    if "dask scheduler" in text:
        return 8786
    return None


URL_IN_LOG = re.compile(r"https?://(?:127\.0\.0\.1|localhost):(\d+)")


def _tcp_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            return True
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as r:
            return r.status < 500
    except OSError as exc:
        code = getattr(exc, "code", None)
        return code is not None and code < 500


def _copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not rel.startswith(("metrics/", "plots/")) and rel not in ("dvc.lock", "data.dvc"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # the checkout's venv, seen through links, with its own install stamp: `make` in the copy finds
    # it installed (scripts/setup.sh would otherwise reinstall epiflow, editable, from the copy)
    venv = dest / ".venv"
    venv.mkdir()
    for item in (REPO / ".venv").iterdir():
        if item.name != ".epiflow-installed":
            (venv / item.name).symlink_to(item)
    stamp = hashlib.sha256((dest / "pyproject.toml").read_bytes() + (dest / "scripts" / "setup.sh").read_bytes())
    (venv / ".epiflow-installed").write_text(stamp.hexdigest()[:16] + "\n")
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["simulate"].update(n_samples=200, n_genes=100)
    params["splits"].update(repeats=2, folds=3)
    params["train"].update(max_epochs=3)
    keep = ("logreg", "biosparse", "sgd_l2", "dense")
    params["models"] = {k: params["models"][k] for k in keep}
    params["learning_curve"].update(models=["logreg", "sgd_l2", "biosparse"], fractions=[0.5, 1.0], repeats=1)
    params["sweep"].update(sparsity=[0.5, 1.0], repeats=1)
    params["interpret"]["models"] = [m for m in params["interpret"]["models"] if m in keep]
    params["ngg"]["top_2d"] = 100
    params["ngg"]["heritability"].update(n_snps=5, n_pairs=5, random_draws=2)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _clean_env(home: Path, project: Path | None = None) -> dict:
    env = {"PATH": CLEAN_PATH, "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PORT": str(_free_port()), "DASHBOARD_PORT": str(_free_port()),
           "GIT_AUTHOR_NAME": "t", "GIT_COMMITTER_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_EMAIL": "t@example.org"}
    if project is not None:
        # the copy's own code, as its own editable install would give (the venv's install points at
        # this checkout, whose files may change while the copy runs)
        env["PYTHONPATH"] = str(project)
    if os.environ.get("EPIFLOW_SHARED_DATA"):
        env["EPIFLOW_SHARED_DATA"] = os.environ["EPIFLOW_SHARED_DATA"]
    return env


def _run_block(block: Block, project: Path, env: dict, logs: Path) -> list[str]:
    """Run a block verbatim in one fresh shell; servers in the background until the block ends.
    Returns the failures, one line each."""
    failures = []
    script = ["set -o pipefail", "trap 'echo \"@@FAILED $LINENO $?\" >&2' ERR"]
    lines: dict[int, Command] = {}
    servers: list[tuple[Command, int | None, str]] = []
    for k, cmd in enumerate(block.commands):
        if RECURSIVE.match(cmd.text):
            print(f"README.md:{cmd.line}: `{cmd.text}` not run: it is this test suite (CI runs it)")
            continue
        pg = NEEDS_SERVER.search(cmd.text)
        if pg and not _tcp_ok(int(pg.group(1))):
            print(f"README.md:{cmd.line}: `{cmd.text.splitlines()[0]}` not run: needs the PostgreSQL server it "
                  f"names (127.0.0.1:{pg.group(1)}), none listens here")
            continue
        if GPU_ONLY.search(cmd.text) and not _has_cuda():
            print(f"README.md:{cmd.line}: `{cmd.text.splitlines()[0]}` not run: marked as a GPU command, no CUDA here")
            continue
        if SERVER.match(cmd.text):
            log = logs / f"server-{block.line}-{k}.log"
            port = _port_of(cmd.text, env)
            servers.append((cmd, port, str(log)))
            script.append(f"setsid bash -c {shlex.quote(cmd.text)} > {shlex.quote(str(log))} 2>&1 &")
            script.append(f"echo $! >> {shlex.quote(str(logs / 'pids'))}")
            if port:
                script.append(f"for i in $(seq 240); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; "
                              "sleep 0.5; done")
            else:      # a server that names its address when up (epiflow view), or none (dask worker)
                script.append(f"for i in $(seq 60); do grep -qE 'https?://(127\\.0\\.0\\.1|localhost):[0-9]+' "
                              f"{shlex.quote(str(log))} && break; sleep 0.5; done")
            continue
        if cmd.expect_error:     # shown failing on purpose: it must fail (its stderr is kept)
            script.append(f"if {{ {cmd.text}\n}} 2> >(tee -a {shlex.quote(str(logs / 'expected.err'))} >&2); "
                          f"then echo \"@@UNEXPECTED_OK {cmd.line}\" >&2; fi")
            script.extend([""] * (cmd.text.count("\n") + 1))
            continue
        lines[len(script) + 1] = cmd
        script.append(cmd.text)
        script.extend([""] * cmd.text.count("\n"))       # keep $LINENO on the command's first line
    (logs / "pids").write_text("")
    try:
        r = subprocess.run(["bash", "--noprofile", "--norc", "-c", "\n".join(script)], cwd=project, env=env,
                           capture_output=True, text=True, timeout=3600)
        (logs / f"block-{block.line}.log").write_text(r.stdout + "\n---- stderr\n" + r.stderr)
        for m in re.finditer(r"^@@UNEXPECTED_OK (\d+)$", r.stderr, re.M):
            failures.append(f"README.md:{m.group(1)}: shown failing in README, but exited 0")
        for m in re.finditer(r"^@@FAILED (\d+) (\d+)$", r.stderr, re.M):
            lineno = int(m.group(1))
            cmd = lines.get(lineno) or next((c for n, c in sorted(lines.items()) if n <= lineno), None)
            where = f"README.md:{cmd.line}: {cmd.text.splitlines()[0]}" if cmd else f"script line {lineno}"
            tail = " | ".join(x for x in r.stderr.splitlines() if not x.startswith("@@"))[-300:]
            failures.append(f"{where}  (exit {m.group(2)}; stderr: {tail})")
        pgids = [int(p) for p in (logs / "pids").read_text().split()]
        for (cmd, port, log), pgid in zip(servers, pgids):
            text = Path(log).read_text() if Path(log).exists() else ""
            if port is None and URL_IN_LOG.search(text):
                port = int(URL_IN_LOG.search(text).group(1))
            if re.search(r"dask (scheduler|worker)", cmd.text):    # dask's own protocol, not HTTP
                up = _tcp_ok(port) if port else _group_alive(pgid)
            else:
                up = port is not None and _http_ok(port)
            if not up:
                failures.append(f"README.md:{cmd.line}: {cmd.text}  (server not answering on port {port}; "
                                f"log: {Path(log).read_text()[-300:] if Path(log).exists() else ''})")
    finally:
        for pid in filter(None, (logs / "pids").read_text().split()):
            try:
                os.killpg(int(pid), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(1)
    return failures


@pytest.mark.slow
def test_readme_commands_run_verbatim(tmp_path):
    project = tmp_path / "main"           # beside it, `shared` as in the checkout's ../shared
    project.mkdir()
    _copy_checkout(project)
    if (REPO.parent / "shared").is_dir():
        (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    logs = tmp_path / "logs"
    logs.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = _clean_env(home, project)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=project, env=env, check=True, capture_output=True)
    failures = []
    for block in readme_blocks((project / "README.md").read_text()):
        t0 = time.perf_counter()
        failures += _run_block(block, project, env, logs)
        print(f"README.md:{block.line}: {len(block.commands)} command(s), {time.perf_counter() - t0:.0f} s")
    (REPO / ".pytest_cache").mkdir(exist_ok=True)
    report = REPO / ".pytest_cache" / "readme_failures.txt"
    report.write_text("\n".join(failures) + "\n")
    assert not failures, f"{len(failures)} README command(s) failed (logs in {logs}):\n" + "\n".join(failures)
