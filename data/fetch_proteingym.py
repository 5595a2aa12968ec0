#!/usr/bin/env python
"""Download ProteinGym's full DMS substitution benchmark (217 assays) and its reference file.

Default (writes ``data/proteingym/full/``)::

    python data/fetch_proteingym.py

    data/proteingym/full/DMS_ProteinGym_substitutions/<DMS_id>.csv   217 assay files (~1 GB unzipped)
    data/proteingym/full/DMS_substitutions.csv                        reference file (one row per assay)

then score a model on all of them::

    bitesm eval proteingym --model MODEL --assays data/proteingym/full/DMS_ProteinGym_substitutions \
        --reference data/proteingym/full/DMS_substitutions.csv

Each file is downloaded to ``<name>.part`` and renamed when complete; the zip is extracted into a
temporary folder that is renamed when complete, so an interrupted run leaves nothing that looks
finished. Files already present are skipped (rerun to finish an interrupted download).

Sources (OATML-Markslab/ProteinGym; Notin et al. 2023, "ProteinGym: Large-Scale Benchmarks for
Protein Design and Fitness Prediction"; MIT license): the v1.3 assay zip from the Marks lab server
(``https://marks.hms.harvard.edu/proteingym/ProteinGym_v1.3/``, the URL pattern of
``proteingym/utils/download.py``), and ``reference_files/DMS_substitutions.csv`` from the
repository. bitesm ships the v1.3 reference as ``data/proteingym/reference/DMS_substitutions.csv``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

RELEASE = "v1.3"
ZIP_URL = f"https://marks.hms.harvard.edu/proteingym/ProteinGym_{RELEASE}/DMS_ProteinGym_substitutions.zip"
REFERENCE_URL = (
    "https://raw.githubusercontent.com/OATML-Markslab/ProteinGym/main/reference_files/DMS_substitutions.csv"
)
#: ProteinGym's published zero-shot Spearman per assay (ESM2 (8M), ESM2 (35M), ...): bitesm reads it next to the
#: reference file and puts the published values beside its own.
PUBLISHED_URL = (
    "https://raw.githubusercontent.com/OATML-Markslab/ProteinGym/main/benchmarks/DMS_zero_shot/substitutions/"
    "Spearman/DMS_substitutions_Spearman_DMS_level.csv"
)
PUBLISHED_FILENAME = "DMS_substitutions_Spearman_DMS_level.csv"
ASSAYS_DIRNAME = "DMS_ProteinGym_substitutions"
REFERENCE_FILENAME = "DMS_substitutions.csv"
CHUNK = 1 << 20

Downloader = Callable[[str, str, float], None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            f"Download ProteinGym {RELEASE}'s DMS substitution assays (217 <DMS_id>.csv files) and "
            "its reference file DMS_substitutions.csv, for `bitesm eval proteingym`."
        ),
    )
    parser.add_argument(
        "--output", default="data/proteingym/full",
        help="output folder (default: %(default)s)",
    )
    parser.add_argument("--zip-url", default=ZIP_URL, help="assay zip URL (default: %(default)s)")
    parser.add_argument(
        "--reference-url", default=REFERENCE_URL, help="reference CSV URL (default: %(default)s)",
    )
    parser.add_argument(
        "--sha256", default=None, metavar="HEX",
        help="expected SHA-256 of the zip; checked before extracting (default: not checked, printed)",
    )
    parser.add_argument(
        "--keep-zip", action="store_true", help="keep the downloaded zip after extracting it",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout, s")
    args = parser.parse_args(argv)
    if args.sha256 is not None:
        args.sha256 = args.sha256.lower()
        if len(args.sha256) != 64 or any(c not in "0123456789abcdef" for c in args.sha256):
            parser.error(f"--sha256 must be 64 hexadecimal digits, got {args.sha256!r}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0, got {args.timeout}")
    return args


def download(url: str, out: str, timeout: float) -> None:
    """Download ``url`` to ``out`` atomically: write ``out + '.part'``, then rename it to ``out``."""
    from tqdm import tqdm

    part = out + ".part"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length is not None else None
        with open(part, "wb") as f, tqdm(
            total=total, unit="B", unit_scale=True, desc=os.path.basename(out)
        ) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and os.path.getsize(part) != total:
        raise OSError(f"Incomplete download of {url} ({os.path.getsize(part)} of {total} bytes); rerun.")
    os.replace(part, out)


def sha256sum(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def extract_assays(zip_path: str, assays_dir: str) -> int:
    """Extract the ``.csv`` files of ``zip_path`` flat into ``assays_dir`` (atomic); return their count."""
    parent = os.path.dirname(os.path.abspath(assays_dir))
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=parent)
    try:
        n = 0
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.infolist():
                name = os.path.basename(member.filename)
                if member.is_dir() or not name.endswith(".csv") or name.startswith("."):
                    continue  # folders, macOS "__MACOSX/._x.csv" resource forks
                if "__MACOSX" in member.filename.split("/"):
                    continue
                with archive.open(member) as src, open(os.path.join(tmp, name), "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                n += 1
        if n == 0:
            raise OSError(f"{zip_path} holds no .csv file; is it ProteinGym's assay zip?")
        os.replace(tmp, assays_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n


def _has_assays(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix == ".csv" for p in folder.iterdir())


def main(argv: list[str] | None = None, downloader: Downloader = download) -> int:
    args = parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    assays_dir = output / ASSAYS_DIRNAME
    reference = output / REFERENCE_FILENAME

    for url, path in ((args.reference_url, reference), (PUBLISHED_URL, output / PUBLISHED_FILENAME)):
        if path.is_file():
            print(f"Skipping {path.name}: {path} exists")
        else:
            downloader(url, str(path), args.timeout)
            print(f"Wrote {path}")

    if _has_assays(assays_dir):
        print(f"Skipping the assays: {assays_dir} exists")
    else:
        if assays_dir.exists():  # empty leftover folder
            assays_dir.rmdir()
        zip_path = output / os.path.basename(args.zip_url.split("?")[0])
        if zip_path.is_file():
            print(f"Using the downloaded {zip_path}")
        else:
            downloader(args.zip_url, str(zip_path), args.timeout)
        digest = sha256sum(str(zip_path))
        if args.sha256 is not None and digest != args.sha256:
            raise OSError(
                f"SHA-256 of {zip_path} is {digest}, expected {args.sha256}. Delete it and rerun, or "
                "check --sha256."
            )
        print(f"SHA-256 of {zip_path.name}: {digest}")
        n = extract_assays(str(zip_path), str(assays_dir))
        print(f"Extracted {n} assay files to {assays_dir}")
        if not args.keep_zip:
            zip_path.unlink()

    print(
        "Evaluate a model on the full benchmark (ProteinGym's metrics and summary, cached) with\n"
        f"  bitesm eval run --model MODEL --suite proteingym --assays {assays_dir} --reference {reference} "
        "--output DIR"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
