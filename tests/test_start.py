"""A quiet, portable start: no TensorFlow start-up lines on the console, no system-only imports,
and a missing extra named in one line."""
from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import pytest

from conftest import REPO, check_run_dir, run_cv, tiny_overrides

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)


def python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          env=env or ENV, timeout=300)


def test_help_prints_no_tensorflow_line():
    proc = subprocess.run([sys.executable, "-m", "src.cv", "--help"], cwd=REPO, capture_output=True, text=True,
                          env=ENV, timeout=300)
    assert proc.returncode == 0 and "groups (--help GROUP lists its options):" in proc.stdout
    assert proc.stderr == ""
    assert "cuInit" not in proc.stdout and "oneDNN" not in proc.stdout


def test_tensorflow_speaks_again_once_started():
    """Only the start-up window is filtered: what TensorFlow (or anyone) prints on stderr later,
    even a line that looks like start-up noise, reaches the user; so do the window's other lines."""
    code = ("import os, sys, src\n"
            "from src import quiet\n"
            "with quiet.filtered_stderr():\n"
            "    os.write(2, b'E0000 00:00:1 123 cuda_executor.cc:1] failed call to cuInit: CUDA error\\n')\n"
            "    os.write(2, b'a real problem during start-up\\n')\n"
            "    print('from Python', file=sys.stderr)\n"
            "import keras, tensorflow as tf\n"
            "os.write(2, b'W0000 00:00:1 123 some_op.cc:1] a warning while training\\n')\n")
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["a real problem during start-up", "from Python",
                                        "W0000 00:00:1 123 some_op.cc:1] a warning while training"]


SITE_WITHOUT_FCNTL = "import sys\nsys.modules['fcntl'] = None  # as on Windows\n"


def test_every_module_imports_without_fcntl(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_WITHOUT_FCNTL)
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    names = [m.name for m in pkgutil.walk_packages([str(REPO / "src")], "src.")]
    proc = python("import importlib, sys\n"
                  "for name in sys.argv[1:]:\n    importlib.import_module(name)\n"
                  "try:\n    import fcntl\nexcept ImportError:\n    print('no fcntl')\n", *names, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "no fcntl", proc.stderr[-3000:]


@pytest.mark.slow  # the suite's time: the locks' fallback in a whole run with fold jobs
def test_a_run_with_fold_jobs_trains_without_fcntl(tiny, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_WITHOUT_FCNTL)
    run_dir = tmp_path / "run"
    run_cv(tiny_overrides(tiny, tmp_path) + ["jobs=2", f"hydra.run.dir={run_dir}"], site=site)
    check_run_dir(run_dir, 2)


@pytest.mark.parametrize("extra, missing, argv", [
    ("serve", "fastapi", ["src.serve", "run_dir={tmp}/run"]),
    ("track", "mlflow", ["src.cv", "logger=mlflow", "data=sample", "hydra.run.dir={tmp}/run"]),
])
def test_a_missing_extra_is_one_line_naming_the_install(extra, missing, argv, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in argv]
    (tmp_path / "run").mkdir()  # src.serve refuses a run_dir= that is not a folder before anything else
    code = (f"import sys; sys.modules[{missing!r}] = None; import runpy; sys.argv = {argv!r}; "
            f"runpy.run_module({argv[0]!r}, run_name='__main__')")
    proc = python(code)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"pip install -e '.[{extra}]'" in last and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "fold_0").exists()  # refused before any training
