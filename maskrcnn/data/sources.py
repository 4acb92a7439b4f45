"""Where dataset archives come from: an HTTP(S) base URL, an ``s3://bucket/prefix`` or a local folder.

A source streams one named archive from a byte offset (HTTP ``Range``, ranged S3 ``GetObject``,
``seek``), so an interrupted transfer continues where it stopped. A source that cannot honour the
offset says so (``Stream.start == 0``) and the caller starts the file again. Failures worth
retrying (connection lost, timeout, HTTP 5xx, S3 throttling) raise ``TransientError``; mistakes
the user must fix (404, no S3 credentials, bad scheme) raise ``UserError`` at once.

``requests`` and ``boto3`` are imported only when a source of their kind is opened.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from maskrcnn.errors import UserError


# Small enough that a dropped connection loses little (a short read discards its chunk).
CHUNK_BYTES = 1 << 16
# (connect, read) seconds: a dead connection fails in a minute, a slow one keeps going.
HTTP_TIMEOUT_S = (10.0, 60.0)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class TransientError(Exception):
    """A failure worth retrying after a pause (connection lost, timeout, server busy)."""


@dataclass
class Stream:
    """One open transfer: ``chunks`` yields the object's bytes from offset ``start``.

    ``start`` is the offset asked for, or 0 when the source ignored it; ``total`` is the whole
    object's size when the source reports it (``None`` otherwise).
    """

    start: int
    total: int | None
    chunks: Iterator[bytes]


class Source(abc.ABC):
    """A place holding archives by name."""

    @abc.abstractmethod
    def location(self, name: str) -> str:
        """Where ``name`` is read from (URL, ``s3://`` URI or path), for messages."""

    @abc.abstractmethod
    def open(self, name: str, offset: int) -> contextlib.AbstractContextManager[Stream]:
        """Stream ``name`` from byte ``offset``; raises ``UserError`` if it does not exist."""

    @abc.abstractmethod
    def read_optional(self, name: str) -> bytes | None:
        """The whole (small) file ``name``, or ``None`` when the source has no such file."""


class HttpSource(Source):
    """Files under an ``http(s)://`` base URL; ``paths`` maps names to other relative paths."""

    def __init__(self, base_url: str, paths: Mapping[str, str] | None = None):
        import requests

        self.base_url = base_url.rstrip("/")
        self._paths = dict(paths or {})
        self._session = requests.Session()
        # Identity encoding: byte ranges must count bytes of the file, not of a gzip stream.
        self._session.headers.update({"Accept-Encoding": "identity", "User-Agent": "maskrcnn-kubeflow"})

    def location(self, name: str) -> str:
        return f"{self.base_url}/{self._paths.get(name, name)}"

    @contextlib.contextmanager
    def open(self, name: str, offset: int) -> Iterator[Stream]:
        url = self.location(name)
        response = self._get(url, offset)
        if response.status_code == 416:  # offset past the end: the object is not what we hold
            response.close()
            response = self._get(url, 0)
        with response:
            self._raise_for_status(response, url)
            if response.status_code == 206:
                start, total = _parse_content_range(response.headers.get("Content-Range", ""), url)
                if start != offset:
                    raise UserError(f"{url}: the server answered a request for bytes {offset}- with bytes {start}-")
            else:  # 200: the server sent the whole file (it ignores Range, or we asked from 0)
                start, total = 0, _int_or_none(response.headers.get("Content-Length"))
            yield Stream(start=start, total=total, chunks=_http_chunks(response, url))

    def read_optional(self, name: str) -> bytes | None:
        url = self.location(name)
        with self._get(url, 0) as response:
            if response.status_code in (403, 404):  # S3-backed hosts answer 403 for a missing key
                return None
            self._raise_for_status(response, url)
            return b"".join(_http_chunks(response, url))

    def _get(self, url: str, offset: int):
        import requests

        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            return self._session.get(url, headers=headers, stream=True, timeout=HTTP_TIMEOUT_S)
        except requests.exceptions.InvalidURL as e:
            raise UserError(f"invalid source URL {url}: {e}") from e
        except requests.RequestException as e:
            # requests nests urllib3's retry error; its innermost reason is the readable part.
            reason = getattr(e.args[0], "reason", e) if e.args else e
            raise TransientError(f"{url}: {reason}") from e

    @staticmethod
    def _raise_for_status(response, url: str) -> None:
        status = response.status_code
        if status in (200, 206):
            return
        if status == 429 or status >= 500:
            raise TransientError(f"{url}: HTTP {status} {response.reason}")
        if status == 404:
            raise UserError(f"{url} does not exist (HTTP 404): check --source (a mirror holds the archives at its top level)")
        raise UserError(f"{url}: HTTP {status} {response.reason}: check --source and that it is readable without login")


def _http_chunks(response, url: str) -> Iterator[bytes]:
    import requests

    try:
        for chunk in response.iter_content(CHUNK_BYTES):
            if chunk:
                yield chunk
    except requests.RequestException as e:  # connection cut or stalled mid-body
        raise TransientError(f"{url}: transfer interrupted: {e}") from e


def _parse_content_range(value: str, where: str) -> tuple[int, int | None]:
    """``"bytes 100-199/1000"`` -> ``(100, 1000)``; the total is ``None`` for ``*``."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if not match:
        raise UserError(f"{where}: unreadable Content-Range {value!r} in a partial response")
    total = match.group(3)
    return int(match.group(1)), (None if total == "*" else int(total))


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


class S3Source(Source):
    """Objects under ``s3://bucket/prefix``, read with boto3's standard credential chain.

    ``endpoint_url`` (or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``) points at an
    S3-compatible store (MinIO, Ceph, moto); such stores get path-style addressing.
    """

    def __init__(self, uri: str, endpoint_url: str | None = None):
        import boto3
        from botocore.config import Config

        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise UserError(f"source {uri!r} names no bucket: use s3://BUCKET/PREFIX")
        if not re.fullmatch(r"[A-Za-z0-9.\-_]{1,255}", bucket):
            raise UserError(f"source {uri!r}: {bucket!r} is not a valid bucket name")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(
            connect_timeout=HTTP_TIMEOUT_S[0],
            read_timeout=HTTP_TIMEOUT_S[1],
            # One attempt per call: the download loop retries and resumes with its own back-off.
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        self._client = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    @contextlib.contextmanager
    def open(self, name: str, offset: int) -> Iterator[Stream]:
        try:
            response = self._client.get_object(**self._request(name, offset))
        except Exception as e:
            if not (offset and _s3_error_code(e) == "InvalidRange"):
                raise self._translate(e, name) from e
            response = self._get(name, 0)  # offset past the end: the object is not what we hold
        body = response["Body"]
        try:
            if "ContentRange" in response:
                start, total = _parse_content_range(response["ContentRange"], self.location(name))
            else:
                start, total = 0, response.get("ContentLength")
            yield Stream(start=start, total=total, chunks=self._chunks(body, name))
        finally:
            body.close()

    def read_optional(self, name: str) -> bytes | None:
        try:
            response = self._client.get_object(**self._request(name, 0))
        except Exception as e:
            if _s3_error_code(e) in ("NoSuchKey", "404", "AccessDenied", "403"):  # no s3:ListBucket: 403
                return None
            raise self._translate(e, name) from e
        with contextlib.closing(response["Body"]) as body:
            return b"".join(self._chunks(body, name))

    def _request(self, name: str, offset: int) -> dict:
        request = {"Bucket": self.bucket, "Key": self._key(name)}
        if offset:
            request["Range"] = f"bytes={offset}-"
        return request

    def _get(self, name: str, offset: int) -> dict:
        try:
            return self._client.get_object(**self._request(name, offset))
        except Exception as e:
            raise self._translate(e, name) from e

    def _chunks(self, body, name: str) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        except Exception as e:
            raise self._translate(e, name) from e

    def _translate(self, error: Exception, name: str) -> Exception:
        """A botocore error as ``UserError`` (fix something), ``TransientError`` (retry), or itself."""
        from botocore import exceptions as bx

        where = self.location(name)
        if isinstance(error, bx.NoCredentialsError):
            return UserError(
                f"no AWS credentials to read {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or run where an IAM role is attached"
            )
        if isinstance(error, bx.ParamValidationError):
            return UserError(f"invalid S3 location {where}: {' '.join(str(error).split())}")
        if isinstance(error, (bx.EndpointConnectionError, bx.ConnectionError, bx.HTTPClientError,
                              bx.ResponseStreamingError, bx.IncompleteReadError)):
            return TransientError(f"{where}: {error}")
        code = _s3_error_code(error)
        if code is None:
            return error
        if code in ("NoSuchKey", "404"):
            return UserError(f"{where} does not exist: check --source (a mirror holds the archives under its prefix)")
        if code == "NoSuchBucket":
            return UserError(f"bucket {self.bucket!r} does not exist: check --source (and --endpoint-url)")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
            return UserError(f"access to {where} denied ({code}): check the AWS credentials and the bucket policy")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("SlowDown", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable") or status >= 500:
            return TransientError(f"{where}: {code}")
        return UserError(f"{where}: {code}: {error}")


def _s3_error_code(error: BaseException) -> str | None:
    response = getattr(error, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


class LocalSource(Source):
    """Files in a local (or mounted network) folder."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"source folder {self.folder} does not exist: give a folder, an http(s):// URL or s3://BUCKET/PREFIX")

    def location(self, name: str) -> str:
        return str(self.folder / name)

    @contextlib.contextmanager
    def open(self, name: str, offset: int) -> Iterator[Stream]:
        path = self.folder / name
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise UserError(f"{path} does not exist: a mirror folder holds the archives at its top level "
                            "(see `maskrcnn data mirror`)") from None
        with f:
            total = os.fstat(f.fileno()).st_size
            f.seek(offset)
            yield Stream(start=offset, total=total, chunks=iter(lambda: f.read(CHUNK_BYTES), b""))

    def read_optional(self, name: str) -> bytes | None:
        path = self.folder / name
        return path.read_bytes() if path.is_file() else None


def open_source(spec: str | os.PathLike, *, endpoint_url: str | None = None) -> Source:
    """The source named by ``spec``: ``http(s)://...``, ``s3://bucket/prefix`` or a folder."""
    spec = str(spec)
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in ("http", "https"):
        return HttpSource(spec)
    if scheme == "s3":
        return S3Source(spec, endpoint_url=endpoint_url)
    if scheme:
        raise UserError(f"unsupported source {spec!r}: use an https:// or http:// URL, s3://BUCKET/PREFIX or a local folder")
    return LocalSource(spec)
