"""Blocks: configuration, secrets and filesystems saved by name in vivace's database.

    from vivace.blocks import S3Bucket, Secret

    Secret(value="hunter2").save("db-password")
    Secret.load("db-password").get()  # "hunter2"

    bucket = S3Bucket(bucket_name="results", aws_access_key_id="AKIA...",
                      aws_secret_access_key="...")
    bucket.save("results")
    S3Bucket.load("results").write_path("2024/report.csv", data)

Secret fields are encrypted at rest (``vivace.blocks.encryption``); filesystem blocks share
``read_path``, ``write_path``, ``put_directory`` and ``get_directory``
(``vivace.blocks.filesystems``); ``Webhook`` is where notification policies send
(``vivace.blocks.notifications``). ``vivace block ls | inspect NAME | delete NAME`` manage them.
Importing this package loads pydantic only: fsspec, cryptography and the cloud libraries are
imported when a block needs them.
"""

from __future__ import annotations

from vivace.blocks.cloud import AzureBlobStorage, GCSBucket, S3Bucket, SMBFileSystem
from vivace.blocks.core import Block, Secret
from vivace.blocks.filesystems import FileSystemBlock, LocalFileSystem, RemoteFileSystem
from vivace.blocks.git import GitHubRepository
from vivace.blocks.notifications import Webhook

__all__ = [
    "AzureBlobStorage",
    "Block",
    "FileSystemBlock",
    "GCSBucket",
    "GitHubRepository",
    "LocalFileSystem",
    "RemoteFileSystem",
    "S3Bucket",
    "SMBFileSystem",
    "Secret",
    "Webhook",
]
