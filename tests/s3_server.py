"""A throwaway S3-compatible server (moto's server mode) on 127.0.0.1 for storage tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class LocalS3:
    endpoint_url: str
    bucket: str

    @property
    def storage_options(self) -> dict[str, str]:
        return {"endpoint_url": self.endpoint_url}

    def env(self) -> dict[str, str]:
        """Environment for a process (a Dagster step, a killed writer) to reach this server."""
        return {**S3_ENV, "AWS_ENDPOINT_URL": self.endpoint_url}

    def keys(self, prefix: str) -> list[str]:
        """The keys of the objects under ``prefix`` (no bodies: cheap enough to poll)."""
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint_url)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def objects(self, prefix: str) -> dict[str, bytes]:
        """Every object under ``prefix`` with its bytes."""
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint_url)
        return {key: s3.get_object(Bucket=self.bucket, Key=key)["Body"].read() for key in self.keys(prefix)}


@contextmanager
def local_s3(monkeypatch, bucket: str = "imaging") -> Iterator[LocalS3]:
    """Start moto's S3 server on a free loopback port with ``bucket`` created; the AWS_* variables of this
    process point at it (``AWS_ENDPOINT_URL``, which botocore and s3fs honour) for the duration."""
    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = LocalS3(f"http://{host}:{port}", bucket)
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()  # cached filesystems still point at an earlier server
        boto3.client("s3", endpoint_url=s3.endpoint_url).create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()
