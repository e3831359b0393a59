import subprocess
import sys

import rtm_notebook


def test_lazy_exports_resolve():
    from rtm_notebook.errors import RTMConnectError

    err = RTMConnectError("not_allowed_token_type")
    assert "classic" in str(err) and "Socket Mode" in str(err)
    assert rtm_notebook.RTMConnectError is RTMConnectError


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "rtm_notebook.cli", "--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out and "sim" in out
