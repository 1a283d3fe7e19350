"""Resumable, verified HTTP downloads (standard library only).

The bytes go to ``<dest>.part``; an interrupted transfer keeps it, and the next attempt asks the
server for the rest with an HTTP ``Range`` request (a server that ignores ``Range`` answers 200
and the download starts over). Only a file whose size and sha256 match what the caller expects
is renamed to ``dest``; a file that does not match is deleted, never left where a later run would
take it for a good one.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from iln_jax.pretrained.errors import DownloadError, VerificationError

CHUNK_BYTES = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str | Path, *, size: Optional[int] = None, sha256: Optional[str] = None,
           what: Optional[str] = None) -> str:
    """Check ``path`` against the expected size / sha256 (each when given); return its sha256."""
    what = what or str(path)
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:
        raise VerificationError(f"{what} is {actual_size} bytes; the registry expects {size}")
    digest = sha256_of(path)
    if sha256 is not None and digest != sha256.lower():
        raise VerificationError(f"{what} has sha256 {digest}; the registry expects {sha256.lower()}")
    return digest


def _total_size(response, offset: int) -> Optional[int]:
    """The full file size from a 206's Content-Range or a 200's Content-Length."""
    if response.status == 206:
        m = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if m is None or int(m.group(1)) != offset:
            raise DownloadError(f"{response.url}: the server answered Range bytes={offset}- with Content-Range "
                                f"{response.headers.get('Content-Range')!r}")
        return None if m.group(3) == "*" else int(m.group(3))
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def _transfer(url: str, part: Path, *, progress: bool, timeout: float, desc: str) -> None:
    """One attempt: append the rest of ``url`` to ``part`` (or rewrite it if the server restarts)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "iln_jax", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the partial file is already complete (or longer than the file)
            return
        if e.code >= 500:
            raise  # the server's trouble: worth another attempt
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    with response:
        if offset and response.status != 206:
            offset = 0  # Range ignored: the body is the whole file
        total = _total_size(response, offset)
        with open(part, "ab" if offset else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                     disable=not progress, dynamic_ncols=True) as bar:
            while True:
                block = response.read(CHUNK_BYTES)
                if not block:
                    break
                f.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size < total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)


def download(url: str, dest: str | Path, *, size: Optional[int] = None, sha256: Optional[str] = None,
             attempts: int = 3, progress: bool = True, timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, and return its sha256.

    Up to ``attempts`` transfers, each continuing where the previous one stopped. On failure the
    partial file stays for the next call to resume; a complete file that fails verification is deleted.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if size is not None and part.exists() and part.stat().st_size > size:
        part.unlink()  # longer than the real file: not a prefix of it
    last_error = None
    for _ in range(max(1, attempts)):
        try:
            _transfer(url, part, progress=progress, timeout=timeout, desc=dest.name)
            break
        except DownloadError:
            raise
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, IncompleteRead
            last_error = e
    else:
        have = part.stat().st_size if part.exists() else 0
        why = f"{type(last_error).__name__}: {last_error}"
        if not have:
            raise DownloadError(f"{url}: download failed ({why})")
        raise DownloadError(f"{url}: download interrupted after {have} bytes ({why}); run again to resume "
                            f"from {part}")
    try:
        digest = verify(part, size=size, sha256=sha256, what=f"the download of {url}")
    except VerificationError as e:
        part.unlink()
        raise VerificationError(f"{e} (the file was deleted; run again to download it afresh)") from None
    os.replace(part, dest)
    return digest
