"""Download the public rain and snow archives: URL + checksum, resumable, unpacked with pooch.

Only archives with a stable direct URL are listed with one; the others are hosted on Google Drive or Baidu
Pan, which need a browser, and are listed with ``url=None`` and where to get them (``docs/datasets.md``). A
checksum that is not published is learnt on first download and written to ``DEST/SHA256SUMS``; every later
``fetch`` verifies against it.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pooch
from tqdm import tqdm

from smartassign.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """One public archive: where it is, its SHA-256 if published, and the layout it unpacks to."""

    name: str
    filename: str
    layout: str
    url: str | None
    sha256: str | None = None
    page: str = ""  # where a person gets it when there is no direct URL


_GH = "https://github.com"
ARCHIVES: dict[str, Archive] = {
    a.name: a
    for a in (
        Archive(
            "snow100k-train",
            "Snow100K-training.tar.gz",
            "snow100k",
            "https://desnownet.s3.amazonaws.com/dataset_synthetic/train/Snow100K-training.tar.gz",
            page="https://sites.google.com/view/yunfuliu/desnownet",
        ),
        Archive(
            "snow100k-test",
            "Snow100K-testset.tar.gz",
            "snow100k",
            "https://desnownet.s3.amazonaws.com/dataset_synthetic/test/Snow100K-testset.tar.gz",
            page="https://sites.google.com/view/yunfuliu/desnownet",
        ),
        Archive(
            "snow100k-realistic",
            "realistic.tar.gz",
            "snow100k",
            "https://desnownet.s3.amazonaws.com/realistic_image/realistic.tar.gz",
            page="https://sites.google.com/view/yunfuliu/desnownet",
        ),
        Archive("rain1200", "DID-MDN-datasets.zip", "rain1200", None, page=f"{_GH}/hezhangsprinter/DID-MDN"),
        Archive(
            "rain_streak", "rain_streak.zip", "rain_streak", None, page=f"{_GH}/lsy17096535/Single-Image-Deraining"
        ),
        Archive("spa", "SPA-Data.zip", "spa", None, page="https://stevewongv.github.io/derain-project.html"),
        Archive("srrs", "SRRS.zip", "srrs", None, page=f"{_GH}/weitingchen83/JSTASR-DesnowNet-ECCV-2020"),
        Archive("csd", "CSD.zip", "csd", None, page=f"{_GH}/weitingchen83/ICCV2021-Single-Image-Desnowing-HDCWNet"),
    )
}


class ResumableDownloader:
    """A pooch downloader that keeps a ``.part`` file beside the target and continues it with an HTTP Range request.

    Works for ``http(s)://`` and ``file://`` URLs; a server that ignores Range restarts the file from zero.
    """

    def __init__(self, progress: bool = True, chunk: int = 1 << 20, timeout: float = 60.0) -> None:
        self.progress, self.chunk, self.timeout = progress, chunk, timeout

    def __call__(self, url: str, output_file: str, pooch_obj: object) -> None:
        """Download ``url`` into ``output_file`` (a path pooch chose), resuming ``<dest>/<name>.part``."""
        out = Path(output_file)
        part = out.parent / (Path(urllib.request.urlparse(url).path).name + ".part")
        start = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                resumed = start > 0 and getattr(resp, "status", None) == 206
                if start and not resumed:
                    start = 0
                length = resp.headers.get("Content-Length")
                total = int(length) + start if length is not None and length.isdigit() else None
                with (
                    open(part, "ab" if resumed else "wb") as fh,
                    tqdm(total=total, initial=start, unit="B", unit_scale=True, disable=not self.progress) as bar,
                ):
                    while block := resp.read(self.chunk):
                        fh.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(f"{url}: download failed ({exc}); run the same command again to resume") from exc
        os.replace(part, out)


def _known_hashes(dest: Path) -> dict[str, str]:
    sums = dest / "SHA256SUMS"
    if not sums.is_file():
        return {}
    pairs = (line.split() for line in sums.read_text().splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def _remember_hash(dest: Path, filename: str, digest: str) -> None:
    known = _known_hashes(dest)
    known[filename] = digest
    tmp = dest / "SHA256SUMS.tmp"
    tmp.write_text("".join(f"{h}  {n}\n" for n, h in sorted(known.items())))
    os.replace(tmp, dest / "SHA256SUMS")


def fetch(
    name: str,
    dest: str | Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    unpack: bool = True,
    progress: bool = True,
    archives: dict[str, Archive] | None = None,
) -> Path:
    """Download archive ``name`` into ``dest`` (resuming), verify its SHA-256, unpack it; return the folder or file.

    ``url``/``sha256`` override the registry (e.g. a mirror, or a hash you trust); ``archives`` replaces it.
    """
    registry = ARCHIVES if archives is None else archives
    if name not in registry:
        raise DataError(f"unknown archive {name!r}; choose one of {', '.join(registry)}")
    archive = registry[name]
    source = url or archive.url
    if source is None:
        raise DataError(
            f"{name} has no direct download; get {archive.filename} from {archive.page}, then "
            f"`smartassign data download {name} --dest {dest} --url file:///path/to/{archive.filename}`"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    known = sha256 or archive.sha256 or _known_hashes(dest).get(archive.filename)
    if known is None and (dest / archive.filename).exists():
        # A finished file without a recorded hash cannot be trusted to be whole: fetch it again.
        (dest / archive.filename).unlink()
    processor = None
    if unpack:
        extract = archive.filename.split(".")[0]
        unpacker = pooch.Unzip if archive.filename.endswith(".zip") else pooch.Untar
        processor = unpacker(extract_dir=extract)
    try:
        result = pooch.retrieve(
            source,
            known_hash=f"sha256:{known}" if known else None,
            fname=archive.filename,
            path=dest,
            downloader=ResumableDownloader(progress=progress),
            processor=processor,
            progressbar=False,
        )
    except ValueError as exc:  # pooch's hash mismatch; it has already deleted the file
        raise DataError(
            f"{dest / archive.filename}: SHA-256 differs from {known}; download deleted (check --sha256 or --url)"
        ) from exc
    if known is None:
        digest = pooch.file_hash(str(dest / archive.filename))
        _remember_hash(dest, archive.filename, digest)
        log.info("%s: sha256 %s recorded in %s", archive.filename, digest, dest / "SHA256SUMS")
    if unpack:
        return dest / archive.filename.split(".")[0]
    return Path(result if isinstance(result, str) else dest / archive.filename)

