"""Where the warehouse lives: the same S3 settings for pyiceberg (writes, maintenance) and DuckDB
(reads), and a filesystem for listing and deleting under a table's location.

The warehouse is a local directory (file://) or an S3 bucket (s3://): AWS S3, or an
S3-compatible server such as MinIO (`endpoint`, usually with path-style addressing).
pyiceberg takes them as FileIO properties (`s3.endpoint`, `s3.region`, ...), DuckDB as a
secret (`CREATE SECRET ... TYPE s3`) created on every connection that reads the tables
(httpfs extension, loaded from its PyPI wheel like avro and iceberg). Credentials are the
usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN; DuckDB has no access to
an instance profile or SSO chain here, so on AWS they must be set too.

Plain Python, no Django import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

S3_SCHEMES = ("s3", "s3a", "s3n")
DEFAULT_REGION = "us-east-1"
SECRET_NAME = "k2_s3"


def is_s3(location: str) -> bool:
    return location.split("://", 1)[0].lower() in S3_SCHEMES if "://" in location else False


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class S3Options:
    """How to reach the warehouse bucket. `endpoint` is an http(s):// URL (unset: AWS S3);
    `path_style` addresses buckets as endpoint/bucket/key (MinIO) instead of bucket.endpoint/key."""

    endpoint: str | None = None
    region: str = DEFAULT_REGION
    path_style: bool = False
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def fileio_properties(self) -> dict[str, str]:
        """pyiceberg FileIO properties (given to the catalog, so every table's FileIO has them).
        The region is always given: without one pyiceberg asks AWS where the bucket is."""
        props = {"s3.region": self.region,
                 "s3.force-virtual-addressing": "false" if self.path_style else "true"}
        if self.endpoint:
            props["s3.endpoint"] = self.endpoint
        if self.access_key_id:
            props["s3.access-key-id"] = self.access_key_id
        if self.secret_access_key:
            props["s3.secret-access-key"] = self.secret_access_key
        if self.session_token:
            props["s3.session-token"] = self.session_token
        return props

    @classmethod
    def from_properties(cls, props: Mapping[str, Any]) -> S3Options | None:
        """The options a catalog (or FileIO) was configured with; None when it has no S3 settings
        and its warehouse is not on S3. (A REST catalog's server may supply them in its config.)"""
        if not any(str(k).startswith("s3.") for k in props) and not is_s3(str(props.get("warehouse", ""))):
            return None
        virtual = str(props.get("s3.force-virtual-addressing", "")).strip().lower()
        endpoint = props.get("s3.endpoint")
        return cls(endpoint=str(endpoint) if endpoint else None,
                   region=str(props.get("s3.region") or props.get("client.region") or DEFAULT_REGION),
                   path_style=virtual in ("false", "0", "no") if virtual else bool(endpoint),
                   access_key_id=props.get("s3.access-key-id") or props.get("client.access-key-id"),
                   secret_access_key=props.get("s3.secret-access-key") or props.get("client.secret-access-key"),
                   session_token=props.get("s3.session-token") or props.get("client.session-token"))

    def duckdb_secret_sql(self, name: str = SECRET_NAME) -> str:
        """`CREATE OR REPLACE SECRET` for DuckDB's httpfs: endpoint as host[:port] with USE_SSL from
        its scheme, URL_STYLE path or vhost, region, and the credentials when set."""
        parts = ["TYPE s3", f"REGION {_quote(self.region)}",
                 f"URL_STYLE {_quote('path' if self.path_style else 'vhost')}"]
        if self.endpoint:
            parsed = urlparse(self.endpoint if "://" in self.endpoint else f"https://{self.endpoint}")
            parts.append(f"ENDPOINT {_quote(parsed.netloc)}")
            parts.append(f"USE_SSL {'true' if parsed.scheme == 'https' else 'false'}")
        if self.access_key_id:
            parts.append(f"KEY_ID {_quote(self.access_key_id)}")
        if self.secret_access_key:
            parts.append(f"SECRET {_quote(self.secret_access_key)}")
        if self.session_token:
            parts.append(f"SESSION_TOKEN {_quote(self.session_token)}")
        return f"CREATE OR REPLACE SECRET {name} ({', '.join(parts)})"


def s3_options_of(catalog: Any) -> S3Options | None:
    """The S3 options a pyiceberg catalog carries (see `S3Options.from_properties`)."""
    return S3Options.from_properties(getattr(catalog, "properties", None) or {})


def filesystem(location: str, io: Any = None) -> tuple[Any, str]:
    """A pyarrow filesystem and the path inside it for `location` (file:// or s3://), configured
    like the table's FileIO when `io` is pyiceberg's PyArrowFileIO (endpoint, region, path style,
    credentials): `pyarrow.fs.FileSystem.from_uri` alone knows none of them."""
    from pyarrow import fs as pafs

    if io is not None and hasattr(io, "fs_by_scheme") and hasattr(io, "parse_location"):
        scheme, netloc, path = io.parse_location(location)
        return io.fs_by_scheme(scheme, netloc), path
    return pafs.FileSystem.from_uri(location)
