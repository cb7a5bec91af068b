"""The layers of src/ hold: import-linter's contracts (pyproject.toml) pass, a broken layer fails
them, and reading a finished run imports neither TensorFlow nor Keras."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    proc = lint(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "broken" in proc.stdout and "0 broken" in proc.stdout


def test_a_stage_importing_upwards_breaks_the_contracts(tmp_path):
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    ensemble = tmp_path / "src" / "results" / "ensemble.py"
    ensemble.write_text(ensemble.read_text() + "\nfrom src.training import fold  # noqa: E402,F401\n")
    proc = lint(tmp_path)
    assert proc.returncode != 0
    assert "src.results.ensemble -> src.training.fold" in proc.stdout
    assert "never imports TensorFlow or Keras BROKEN" in proc.stdout


def test_reading_a_finished_run_does_not_import_tensorflow(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "metrics.json").unlink()
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from src import rundir\nfrom src.results import blend, ensemble, report\n"
        f"run_dir = Path({str(run_dir)!r})\n"
        "config = rundir.finished_config(run_dir)\n"
        "record = rundir.read_record(run_dir)\n"
        "ens, written = ensemble.build(run_dir, int(config['fold']), record['rows']['train'])\n"
        "assert written and rundir.read_metrics(run_dir)['complete']\n"
        "blend.load_run(run_dir)\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
