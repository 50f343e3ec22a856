"""Typed filesystem blocks for cloud storage and SMB shares, over their fsspec implementations.

Each one works like a ``RemoteFileSystem`` with named fields instead of a URL and a settings
dict: it builds the fsspec URL from its bucket (or container, or share) and ``basepath``, and the
storage options from its credentials, which are ``SecretStr`` fields and so encrypted at rest. The
fsspec package of each is an optional extra, imported only when the block is used:

====================== ========== ================================
block                  protocol   extra
====================== ========== ================================
``S3Bucket``           ``s3``     ``pip install 'vivace[s3]'``
``GCSBucket``          ``gs``     ``pip install 'vivace[gcs]'``
``AzureBlobStorage``   ``az``     ``pip install 'vivace[azure]'``
``SMBFileSystem``      ``smb``    ``pip install 'vivace[smb]'``
====================== ========== ================================

Credentials left unset fall back to the library's own defaults (environment variables, instance
roles, ``gcloud`` credentials...).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator

from vivace.blocks.filesystems import FsspecFileSystemBlock, open_filesystem

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


class CloudFileSystemBlock(FsspecFileSystemBlock):
    """A filesystem block whose fsspec URL and options are built from typed fields."""

    @abstractmethod
    def url(self) -> str:
        """The fsspec URL of the block's root folder."""

    @abstractmethod
    def storage_options(self) -> dict[str, Any]:
        """The keyword arguments of the fsspec filesystem, secrets in plain text: never log it."""

    def _filesystem(self) -> tuple[AbstractFileSystem, str]:
        return open_filesystem(self.url(), self.storage_options())

    def _describe(self) -> str:
        return f"the {type(self).__name__} block's folder {self.url()}"


class S3Bucket(CloudFileSystemBlock):
    """A folder in an Amazon S3 bucket, or in any S3-compatible store (MinIO, Ceph, R2)."""

    bucket_name: str = Field(description="The bucket, without s3://.")
    basepath: str = Field(default="", description="Folder inside the bucket; default: its root.")
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    region_name: str | None = None
    endpoint_url: str | None = Field(
        default=None, description="URL of an S3-compatible service instead of AWS."
    )

    @field_validator("bucket_name")
    @classmethod
    def check_bucket_name(cls, value: str) -> str:
        return _bucket(value, "bucket_name", "s3://")

    def url(self) -> str:
        return _join_url("s3", self.bucket_name, self.basepath)

    def storage_options(self) -> dict[str, Any]:
        client_kwargs = _present(region_name=self.region_name, endpoint_url=self.endpoint_url)
        options = _present(
            key=_plain(self.aws_access_key_id),
            secret=_plain(self.aws_secret_access_key),
            token=_plain(self.aws_session_token),
        )
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
        return options


class GCSBucket(CloudFileSystemBlock):
    """A folder in a Google Cloud Storage bucket."""

    bucket: str = Field(description="The bucket, without gs://.")
    basepath: str = Field(default="", description="Folder inside the bucket; default: its root.")
    project: str | None = None
    service_account_info: SecretStr | None = Field(
        default=None, description="A service account key file's JSON content."
    )

    @field_validator("bucket")
    @classmethod
    def check_bucket(cls, value: str) -> str:
        return _bucket(value, "bucket", "gs://")

    @field_validator("service_account_info")
    @classmethod
    def check_service_account_info(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                parsed = json.loads(value.get_secret_value())
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):  # the message never quotes the secret
                raise ValueError(
                    "service_account_info is not a JSON object; expected the content of a "
                    "service account key file"
                )
        return value

    def url(self) -> str:
        return _join_url("gs", self.bucket, self.basepath)

    def storage_options(self) -> dict[str, Any]:
        token = None
        if self.service_account_info is not None:
            token = json.loads(self.service_account_info.get_secret_value())
        return _present(project=self.project, token=token)


class AzureBlobStorage(CloudFileSystemBlock):
    """A folder in an Azure Blob Storage container (also ADLS Gen2)."""

    container: str = Field(description="The container, without az://.")
    basepath: str = Field(default="", description="Folder inside the container.")
    account_name: str | None = None
    account_key: SecretStr | None = None
    connection_string: SecretStr | None = None
    sas_token: SecretStr | None = None

    @field_validator("container")
    @classmethod
    def check_container(cls, value: str) -> str:
        return _bucket(value, "container", "az://")

    def url(self) -> str:
        return _join_url("az", self.container, self.basepath)

    def storage_options(self) -> dict[str, Any]:
        return _present(
            account_name=self.account_name,
            account_key=_plain(self.account_key),
            connection_string=_plain(self.connection_string),
            sas_token=_plain(self.sas_token),
        )


class SMBFileSystem(CloudFileSystemBlock):
    """A folder on an SMB (Windows, Samba) share: ``share_path`` is ``/share/folder``."""

    host: str = Field(description="Server name or address.")
    port: int = Field(default=445, gt=0, lt=65536)
    share_path: str = Field(description="The share and the folder in it: /share/folder.")
    username: SecretStr | None = None
    password: SecretStr | None = None

    @field_validator("host")
    @classmethod
    def check_host(cls, value: str) -> str:
        if not value or "/" in value or ":" in value:
            raise ValueError(f"host {value!r} is not a server name; expected e.g. 'fileserver'")
        return value

    @field_validator("share_path")
    @classmethod
    def check_share_path(cls, value: str) -> str:
        if not value.strip("/"):
            raise ValueError(
                f"share_path {value!r} names no share; expected '/share' or '/share/folder'"
            )
        return "/" + value.strip("/")

    def url(self) -> str:
        return f"smb://{self.host}:{self.port}{self.share_path}"

    def storage_options(self) -> dict[str, Any]:
        return _present(username=_plain(self.username), password=_plain(self.password))


def _bucket(value: str, field: str, prefix: str) -> str:
    if not value or "/" in value or ":" in value:
        raise ValueError(
            f"{field} {value!r} is not a bare name; expected it without {prefix} or slashes"
        )
    return value


def _join_url(protocol: str, bucket: str, basepath: str) -> str:
    folder = basepath.strip("/")
    return f"{protocol}://{bucket}/{folder}" if folder else f"{protocol}://{bucket}"


def _plain(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def _present(**options: Any) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}
