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


def test_the_package_logger_stays_quiet_unless_the_application_configures_logging():
    # Library convention: without a NullHandler, Python's last-resort handler
    # prints the package's warnings to stderr (in a notebook: into whichever
    # cell is running), before and after %load_ext / %unload_ext alike.
    code = (
        "import logging, rtm_notebook\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "logging.getLogger('rtm_notebook.session').warning('before load_ext')\n"
        "shell = InteractiveShell.instance()\n"
        "shell.run_line_magic('load_ext', 'rtm_notebook')\n"
        "shell.run_line_magic('unload_ext', 'rtm_notebook')\n"
        "logging.getLogger('rtm_notebook.session').warning('after unload_ext')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "load_ext" not in result.stderr
