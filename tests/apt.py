"""Test helper: install a Debian package a test needs (a browser, docker-compose) where this runs as root."""

from __future__ import annotations

import os
import shutil
import subprocess


def apt_install(package: str) -> tuple[bool, str]:
    """(installed, apt's last words). A fresh machine may have empty package lists: update once and retry."""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return False, f"apt-get install {package} needs root here"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = None
    for update in (False, True):
        if update:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600, env=env)
        r = subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True, text=True,
                           timeout=600, env=env)
        if r.returncode == 0:
            return True, ""
    return False, r.stderr[-300:]
