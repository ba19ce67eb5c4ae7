"""Phone-side clients (MediaPipe Tasks, the TFLite Support metadata reader) in virtual environments of
their own: their pins conflict with gram_tf's (MediaPipe needs absl-py 2, TF-MOT pins 1; tflite-support
pins protobuf < 4), and a phone app is a separate program with its own dependencies anyway.

Each environment is built once and cached under the user cache directory ($GRAM_TF_CLIENT_CACHE, else
$XDG_CACHE_HOME/gram_tf/clients, else ~/.cache/gram_tf/clients), keyed by its pins and the Python
version, built in a temporary folder and renamed into place when complete, under a file lock (two test
workers never build the same one). `python -m tests.clients.venvs` builds them all (.ci/run does).
A client runs as `python SCRIPT` in its environment, with a JSON request on stdin and JSON on stdout.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# pinned: the versions the phone apps of today ship (MediaPipe Tasks 1.2, Task Library 0.4.4)
CLIENTS = {
    "mediapipe": ["mediapipe==1.2.3"],
    "tflite_support": ["tflite-support==0.4.4"],
}
# a system library a client imports (Debian package name in the hint)
SYSTEM_LIBRARIES = {"tflite_support": ("libusb-1.0.so.0", "libusb-1.0-0")}


class ClientUnavailable(RuntimeError):
    """The client's environment could not be built (pip's error) or cannot import its client."""


def cache_root() -> Path:
    if os.environ.get("GRAM_TF_CLIENT_CACHE"):
        return Path(os.environ["GRAM_TF_CLIENT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gram_tf" / "clients"


def env_dir(name: str) -> Path:
    key = json.dumps([CLIENTS[name], sys.version_info[:2]]).encode()
    return cache_root() / f"{name}-{hashlib.sha256(key).hexdigest()[:12]}"


def _check_system_library(name: str) -> None:
    if name not in SYSTEM_LIBRARIES:
        return
    lib, package = SYSTEM_LIBRARIES[name]
    found = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    if lib not in found:
        raise ClientUnavailable(f"{name} needs the system library {lib}: apt-get install {package}")


def client_python(name: str) -> Path:
    """The Python of `name`'s environment, built first if it is not cached."""
    target = env_dir(name)
    python = target / "bin" / "python"
    _check_system_library(name)
    if (target / ".complete").is_file():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").is_file():  # another worker built it while we waited
            return python
        partial = target.with_name(target.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _build(partial, CLIENTS[name])
        except ClientUnavailable:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        os.rename(partial, target)  # the venv's Python finds its prefix from pyvenv.cfg: a rename is safe
    return python


def _build(where: Path, pins: list) -> None:
    steps = {"python -m venv": [sys.executable, "-m", "venv", str(where)],
             f"pip install {' '.join(pins)}": [str(where / "bin" / "python"), "-m", "pip", "install",
                                                "--disable-pip-version-check", "-q", *pins]}
    for what, cmd in steps.items():
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise ClientUnavailable(f"{what} failed: " + " | ".join(tail))
    (where / ".complete").write_text(json.dumps(pins) + "\n")


def run_client(name: str, script: str, request: dict, timeout: int = 300) -> dict:
    """Run tests/clients/SCRIPT in `name`'s environment with `request` (JSON on stdin); its JSON answer."""
    python = client_python(name)
    done = subprocess.run([str(python), str(HERE / script)], input=json.dumps(request), capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": ""})
    if done.returncode != 0:
        raise RuntimeError(f"{script} in the {name} environment failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    for client in CLIENTS:
        print(f"{client}: {client_python(client)}")
