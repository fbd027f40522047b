"""`make lab` serves JupyterLab with the notebooks, answering over HTTP on 127.0.0.1."""

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (ROOT / ".venv" / ".installed-lab").is_file(), reason="run through `make test` (needs the installed .venv)")
def test_make_lab_serves_the_notebooks(tmp_path):
    port, token = _free_port(), secrets.token_hex(8)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    proc = subprocess.Popen(
        ["make", "lab", f"PORT={port}", f"LAB_ARGS=--no-browser --ServerApp.token={token}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline, last_error = time.time() + 90, None
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"make lab exited with {proc.returncode}: {proc.stdout.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5) as r:
                    assert r.status == 200 and b"JupyterLab" in r.read()
                break
            except OSError as e:
                last_error = e
                time.sleep(1)
        else:
            pytest.fail(f"JupyterLab did not answer on 127.0.0.1:{port} within 90 s ({last_error})")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=10) as r:
            names = {item["name"] for item in json.load(r)["content"]}
        assert "00_start_here.ipynb" in names  # it serves notebooks/, not the repository root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
