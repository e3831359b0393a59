"""Binder's build, replayed: install from ``binder/`` into a fresh venv, run a notebook there.

repo2docker copies the repository, picks the Python of
``binder/runtime.txt``, installs ``binder/requirements.txt`` with pip, then
runs ``binder/postBuild`` with bash from the repository root.
This test does the same in a new virtual environment (no system site
packages), then executes the notebook the Binder badge opens with a kernel
of that environment, so a missing dependency or a broken postBuild fails
here rather than on mybinder.org.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.parse
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
LAB_PATH = "notebooks/01-quickstart.ipynb"

pytestmark = pytest.mark.timeout(600)

# Only what the build uses: the package, its metadata and the notebooks.
COPY = ["pyproject.toml", "README.md", "rtm_notebook", "binder", "notebooks"]


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_binder_files_are_what_repo2docker_reads():
    post_build = (BINDER / "postBuild").read_text()
    assert post_build.startswith("#!/bin/bash\nset -e\n"), "postBuild must start with a bash shebang and `set -e`"
    assert re.search(r"^pip install (-e )?\.\s*$", post_build, re.M), "postBuild must install the package"
    assert os.access(BINDER / "postBuild", os.X_OK)
    assert (BINDER / "requirements.txt").exists()
    # repo2docker's default Python is older than the package needs: runtime.txt pins it.
    runtime = (BINDER / "runtime.txt").read_text().strip()
    m = re.fullmatch(r"python-(\d+)\.(\d+)", runtime)
    assert m, f"binder/runtime.txt must read like python-3.11, not {runtime!r}"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert (int(m[1]), int(m[2])) >= (int(minimum[1]), int(minimum[2])), (runtime, pyproject["project"]["requires-python"])
    # The badge opens the quickstart; the path must exist.
    readme = (ROOT / "README.md").read_text()
    badges = re.findall(r"https://mybinder\.org/v2/gh/[^\s)\"]+", readme)
    assert badges, "README.md has no Binder badge"
    for url in badges:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
        assert query.get("labpath") == [LAB_PATH], url
    assert (ROOT / LAB_PATH).exists()


def test_fresh_venv_from_binder_files_runs_quickstart(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "*.egg-info"))
        else:
            shutil.copy2(src, repo / name)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    bindir = venv / "bin"
    # Bytecode compilation is most of pip's time for pandas/pyarrow/matplotlib
    # and changes nothing the notebook sees.
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv), PIP_NO_COMPILE="1")
    env.pop("PYTHONPATH", None)
    _run([str(bindir / "pip"), "install", "-q", "-r", "binder/requirements.txt"], cwd=repo, env=env)
    _run(["bash", "binder/postBuild"], cwd=repo, env=env)

    where = _run([str(bindir / "python"), "-c", "import rtm_notebook, ipykernel, matplotlib, ipywidgets; print(rtm_notebook.__file__)"], cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(repo), where.stdout

    # A kernelspec whose argv is the venv's python (an absolute path, so
    # jupyter_client does not swap it for this interpreter).
    kernels = tmp_path / "jupyter" / "kernels" / "binder-venv"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(bindir / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "binder venv", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for var in ("SLACK_BOT_TOKEN", "SLACK_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)

    nb = nbformat.read(repo / LAB_PATH, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys, rtm_notebook; print(sys.prefix); print(rtm_notebook.__file__)"))
    workdir = repo / "notebooks"
    NotebookClient(nb, kernel_name="binder-venv", timeout=120, startup_timeout=120,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    prefix, package = nb.cells[-1].outputs[0]["text"].split()
    assert Path(prefix).resolve() == venv.resolve()
    assert Path(package).is_relative_to(repo)
