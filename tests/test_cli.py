import subprocess
import sys
import os

import signgd
from signgd.__main__ import main

SRC = os.path.join(os.path.dirname(__file__), "..", "src")


def test_python_dash_m_signgd_version():
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "signgd", "--version"], capture_output=True, text=True,
                         env=env, check=True)
    assert out.stdout.strip() == f"signgd {signgd.__version__}"


def test_help_lists_the_demo(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out
