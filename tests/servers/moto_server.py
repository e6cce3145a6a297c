"""moto's AWS server on 127.0.0.1 (in-process thread); clients reach it only through AWS_ENDPOINT_URL."""

from __future__ import annotations

import contextlib

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer:
    def __init__(self) -> None:
        self._server = None
        self.url = ""

    def start(self) -> "MotoServer":
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.url, **DUMMY_ENV}

    def kms(self):
        import boto3

        return boto3.client("kms", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def create_key(self, alias: str | None = None) -> str:
        kms = self.kms()
        key_id = kms.create_key(Description="kms-cli test")["KeyMetadata"]["KeyId"]
        if alias:
            kms.create_alias(AliasName=alias, TargetKeyId=key_id)
        return key_id

    def _reset_auth(self, value: str) -> None:
        import requests

        requests.post(f"{self.url}/moto-api/reset-auth", data=value, timeout=5).raise_for_status()

    @contextlib.contextmanager
    def auth_enforced(self):
        """Inside: moto checks credentials (unknown access keys are refused with 403)."""
        self._reset_auth("0")
        try:
            yield
        finally:
            self._reset_auth("inf")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
