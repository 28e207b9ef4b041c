"""Local paths and object-store URIs behind one small interface (pyarrow filesystems).

A *location* is a plain local path (``artifacts/registry``, ``/data/prepared``) or a URI with a
scheme that ``pyarrow.fs.FileSystem.from_uri`` understands (``s3://bucket/prefix``, ``gs://...``,
``file:///abs/path``). Everything here takes and returns locations as strings; a plain path stays
a plain path, so local behaviour is exactly the stdlib's.

S3 is configured the standard AWS way, through the environment, which pyarrow reads itself when
it builds the filesystem from a URI: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and
``AWS_SESSION_TOKEN``), ``AWS_DEFAULT_REGION``, and for an S3-compatible server (MinIO, Ceph,
moto) ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` such as ``http://127.0.0.1:9000`` (the
scheme in the URL picks http or https). Ray workers inherit the environment of the process that
started the local Ray cluster; on a real cluster put these variables in the runtime env.
URIs carrying a query string (``s3://b/p?endpoint_override=...``) are refused: joining paths
onto them would misplace the query. Use the environment variables instead.

What an object store does not give (callers document what follows for them): no rename, so no
atomic directory publish; no append; no file locks; "directories" are key prefixes, so an empty
directory does not exist. A single PUT is atomic: a reader sees the whole old or the whole new
object. AWS S3 and MinIO list and read strongly consistently after a write.

No Ray imports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import pandas as pd
    from pyarrow import fs as pafs

__all__ = [
    "is_remote", "resolve", "join", "name_of", "absolute", "sibling", "read_bytes", "read_text", "write_bytes", "write_text",
    "fsync_dir",
    "exists", "is_file", "is_dir", "list_files", "list_dir", "makedirs", "delete", "file_size",
    "upload_file", "upload_dir", "download_dir", "copy_tree", "read_parquet", "write_parquet",
    "cache_root",
]

_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")


def is_remote(location: str | os.PathLike) -> bool:
    """True for a URI with a scheme other than ``file`` (``s3://...``); False for plain paths."""
    text = os.fspath(location)
    if "://" not in text:
        return False
    scheme = text.split("://", 1)[0].lower()
    return scheme != "file"


def _check_uri(uri: str) -> None:
    parts = urlsplit(uri)
    if parts.query or parts.fragment:
        raise ValueError(
            f"{uri!r}: query strings in storage URIs are not supported; configure the endpoint and "
            "credentials with AWS_ENDPOINT_URL_S3 / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY instead"
        )
    if not parts.netloc:
        raise ValueError(f"{uri!r}: a storage URI needs a bucket (scheme://bucket/path)")


@lru_cache(maxsize=32)
def _filesystem(scheme: str, netloc: str, env: tuple) -> "pafs.FileSystem":
    from pyarrow import fs as pafs

    return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")[0]


def resolve(location: str | os.PathLike) -> tuple["pafs.FileSystem", str]:
    """(pyarrow filesystem, path inside it). Plain paths -> LocalFileSystem and an absolute path.

    Filesystems are cached per scheme, bucket and AWS environment (building an S3 client costs a
    few milliseconds and a region look-up).
    """
    from pyarrow import fs as pafs

    text = os.fspath(location)
    if not is_remote(text):
        if text.startswith("file://"):
            text = text[len("file://"):]
        return pafs.LocalFileSystem(), os.path.abspath(text)
    _check_uri(text)
    parts = urlsplit(text)
    fs = _filesystem(parts.scheme.lower(), parts.netloc, tuple(os.environ.get(k) for k in _ENV_KEYS))
    return fs, f"{parts.netloc}{parts.path}".rstrip("/")


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/...`` for a path or a URI (URIs always join with "/")."""
    text = os.fspath(base)
    if not is_remote(text):
        return os.path.join(text, *parts)
    return "/".join([text.rstrip("/"), *(p.strip("/") for p in parts)])


def name_of(location: str | os.PathLike) -> str:
    """Last component of a path or URI."""
    return os.fspath(location).rstrip("/").rsplit("/", 1)[-1]


def absolute(location: str | os.PathLike) -> str:
    """A URI as it is (without a trailing "/"); a path made absolute (for processes with another cwd)."""
    text = os.fspath(location)
    return text.rstrip("/") if is_remote(text) else str(Path(text).resolve())


def sibling(location: str | os.PathLike, name: str) -> str:
    """``name`` beside ``location`` (same parent directory or prefix)."""
    text = os.fspath(location).rstrip("/")
    if not is_remote(text):
        return os.path.join(os.path.dirname(os.path.abspath(text)), name)
    return f"{text.rsplit('/', 1)[0]}/{name}"


def cache_root() -> Path:
    """Where remote objects are copied for local readers: ``$AISLE_CACHE_DIR`` or ``~/.cache/aisle``."""
    return Path(os.environ.get("AISLE_CACHE_DIR") or Path.home() / ".cache" / "aisle")


# --------------------------------------------------------------------------- single objects


def read_bytes(location: str | os.PathLike) -> bytes:
    """Whole content; FileNotFoundError if it does not exist (for URIs too)."""
    if not is_remote(location):
        return Path(location).read_bytes()
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        if not is_file(location):
            raise FileNotFoundError(f"{os.fspath(location)} does not exist") from exc
        raise


def read_text(location: str | os.PathLike) -> str:
    return read_bytes(location).decode("utf-8")


def write_bytes(location: str | os.PathLike, data: bytes) -> None:
    """Replace the object (one PUT: atomic on an object store) or the file (temp + fsync + rename)."""
    if not is_remote(location):
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)  # the rename itself durable
        return
    fs, path = resolve(location)
    with fs.open_output_stream(path) as f:
        f.write(data)


def write_text(location: str | os.PathLike, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new file in a local directory durable (the directory entry itself is fsynced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _info(location: str | os.PathLike):
    fs, path = resolve(location)
    return fs.get_file_info(path)


def exists(location: str | os.PathLike) -> bool:
    """A file, or a directory (on an object store: a prefix holding at least one object)."""
    from pyarrow import fs as pafs

    return _info(location).type != pafs.FileType.NotFound


def is_file(location: str | os.PathLike) -> bool:
    from pyarrow import fs as pafs

    return _info(location).type == pafs.FileType.File


def is_dir(location: str | os.PathLike) -> bool:
    from pyarrow import fs as pafs

    return _info(location).type == pafs.FileType.Directory


def file_size(location: str | os.PathLike) -> int | None:
    """Size in bytes, or None if there is no such file."""
    info = _info(location)
    return info.size if info.is_file else None


def list_files(location: str | os.PathLike, recursive: bool = True) -> dict[str, int]:
    """{relative posix path: size} of the files under a directory or prefix ({} if none)."""
    from pyarrow import fs as pafs

    fs, path = resolve(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    except NotADirectoryError:
        return {}
    prefix = path.rstrip("/") + "/"
    return {i.path[len(prefix):]: i.size for i in infos if i.is_file and i.path.startswith(prefix)}


def list_dir(location: str | os.PathLike) -> list[tuple[str, bool]]:
    """(name, is_directory) of the direct children of a directory or prefix, sorted by name."""
    from pyarrow import fs as pafs

    fs, path = resolve(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    except NotADirectoryError:
        return []
    return sorted((i.base_name, i.type == pafs.FileType.Directory) for i in infos)


def makedirs(location: str | os.PathLike) -> None:
    """mkdir -p locally; nothing on an object store (a prefix exists once an object is under it)."""
    if not is_remote(location):
        Path(location).mkdir(parents=True, exist_ok=True)


def delete(location: str | os.PathLike) -> None:
    """Remove a file or a whole directory/prefix; missing is fine."""
    from pyarrow import fs as pafs

    fs, path = resolve(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        fs.delete_file(path)
    elif info.type == pafs.FileType.Directory:
        if is_remote(location):
            fs.delete_dir(path)  # every object under the prefix, in batched requests
        else:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- trees


def upload_file(local: str | os.PathLike, location: str | os.PathLike) -> int:
    """Copy one local file to a location; returns the size now stored there.

    Remote: one streamed upload (the object appears whole or not at all). Local target: copied to a
    temp name beside it, fsynced, renamed.
    """
    from pyarrow import fs as pafs

    if not is_remote(location):
        target = Path(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{target.name}")
        try:
            shutil.copyfile(local, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return target.stat().st_size
    fs, path = resolve(location)
    pafs.copy_files(os.path.abspath(os.fspath(local)), path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    return fs.get_file_info(path).size


def upload_dir(local_dir: str | os.PathLike, location: str | os.PathLike,
               skip: tuple[str, ...] = ()) -> list[str]:
    """Copy every file under `local_dir` to `location/<relative path>`; returns the relative paths.

    Files whose relative path is in `skip` are left out (the caller writes them afterwards, e.g. a
    completion marker that must come last).
    """
    root = Path(local_dir)
    done = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in skip:
            continue
        upload_file(path, join(location, *rel.split("/")))
        done.append(rel)
    return done


def download_dir(location: str | os.PathLike, local_dir: str | os.PathLike,
                 exclude_prefix: str | None = None) -> list[str]:
    """Copy every file under `location` into `local_dir` (created); returns the relative paths.

    Files whose name starts with `exclude_prefix` are left out.
    """
    fs, path = resolve(location)
    out = Path(local_dir)
    done = []
    for rel in sorted(list_files(location)):
        if exclude_prefix and rel.rsplit("/", 1)[-1].startswith(exclude_prefix):
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(f"{path}/{rel}") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        done.append(rel)
    return done


def copy_tree(source: str | os.PathLike, target: str | os.PathLike, last: tuple[str, ...] = ()) -> list[str]:
    """Copy every file under `source` to `target` on the same store (server-side copies on S3).

    Files whose relative path is in `last` are copied after all the others (completion markers).
    """
    fs, src = resolve(source)
    _, dst = resolve(target)
    done = []
    for rel in sorted(list_files(source), key=lambda r: (r in last, r)):
        if not is_remote(target):
            Path(dst, rel).parent.mkdir(parents=True, exist_ok=True)
        fs.copy_file(f"{src}/{rel}", f"{dst}/{rel}")
        done.append(rel)
    return done


# --------------------------------------------------------------------------- Parquet


def read_parquet(location: str | os.PathLike, columns: list[str] | None = None) -> "pd.DataFrame":
    """A Parquet file or a directory of them as one DataFrame (pandas itself for plain paths)."""
    import pandas as pd

    if not is_remote(location):
        return pd.read_parquet(location, columns=columns)
    import pyarrow.parquet as pq

    fs, path = resolve(location)
    return pq.read_table(path, columns=columns, filesystem=fs).to_pandas()


def parquet_rows(location: str | os.PathLike) -> int:
    """Rows in a Parquet file or a directory of them, from the files' footers (no column is read)."""
    import pyarrow.dataset as ds

    if not is_remote(location):
        return ds.dataset(str(location), format="parquet").count_rows()
    fs, path = resolve(location)
    return ds.dataset(path, format="parquet", filesystem=fs).count_rows()


def write_parquet(frame: "pd.DataFrame", location: str | os.PathLike) -> None:
    """One Parquet file without the pandas index (pandas itself for plain paths)."""
    if not is_remote(location):
        frame.to_parquet(location, index=False)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = resolve(location)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, filesystem=fs)
