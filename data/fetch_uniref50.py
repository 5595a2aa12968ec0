#!/usr/bin/env python
"""Download UniRef50 (FASTA, gzip) from UniProt for ESM-2 pre-training.

Full download (~12 GB compressed; resumable, atomic)::

    python data/fetch_uniref50.py --out data/pretrain/uniref50.fasta.gz

Subset of the first N records (streams and stops early; no full download)::

    python data/fetch_uniref50.py --max-sequences 1000000 \
        --out data/pretrain/uniref50_1M.fasta.gz

Note: UniRef50 is ordered by cluster size (largest clusters first), so the
first N records are not a uniform random sample.

Source: UniProt Consortium, UniRef50 release files,
https://ftp.uniprot.org/pub/databases/uniprot/uniref/uniref50/
"""

from __future__ import annotations

import argparse
import gzip
import io
import itertools
import os
import sys
import urllib.error
import urllib.request

from tqdm import tqdm

URL = "https://ftp.uniprot.org/pub/databases/uniprot/uniref/uniref50/uniref50.fasta.gz"
CHUNK = 1 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download UniRef50 FASTA (.fasta.gz) for bitesm pre-training.",
    )
    parser.add_argument(
        "--out", default="data/pretrain/uniref50.fasta.gz",
        help="output .fasta.gz path (default: %(default)s)",
    )
    parser.add_argument("--url", default=URL, help="source URL (default: %(default)s)")
    parser.add_argument(
        "--max-sequences", type=int, default=None, metavar="N",
        help="write only the first N records (streamed; the full file is not downloaded)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout, s")
    args = parser.parse_args(argv)
    if args.max_sequences is not None and args.max_sequences < 1:
        parser.error(f"--max-sequences must be >= 1, got {args.max_sequences}")
    if not args.out.endswith(".gz"):
        parser.error(f"--out must end in .gz (gzip FASTA), got {args.out!r}")
    return args


def download(url: str, out: str, timeout: float) -> None:
    """Download ``url`` to ``out`` via ``out + '.part'``, resuming a partial file."""
    part = out + ".part"
    done = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and done:  # range starts at end: .part is complete
            os.replace(part, out)
            return
        raise
    with response:
        if done and response.status != 206:  # server ignored Range: restart
            done = 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        with open(part, "ab" if done else "wb") as f, tqdm(
            total=total, initial=done, unit="B", unit_scale=True, desc=os.path.basename(out)
        ) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and os.path.getsize(part) != total:
        raise OSError(f"Incomplete download ({os.path.getsize(part)} of {total} bytes); rerun to resume.")
    os.replace(part, out)


def write_subset(url: str, out: str, n: int, timeout: float) -> int:
    """Stream ``url`` (gzip FASTA) and write its first ``n`` records to ``out``."""
    from biotite.sequence.io.fasta import FastaFile

    part = out + ".part"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = io.TextIOWrapper(gzip.GzipFile(fileobj=response), encoding="utf-8")
        records = tqdm(
            itertools.islice(FastaFile.read_iter(text), n), total=n, unit="seq"
        )
        written = 0

        def counted():
            nonlocal written
            for item in records:
                written += 1
                yield item

        with gzip.open(part, "wt", encoding="utf-8") as f:
            FastaFile.write_iter(f, counted())
    os.replace(part, out)
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.max_sequences is None:
        download(args.url, args.out, args.timeout)
        print(f"Wrote {args.out}")
    else:
        n = write_subset(args.url, args.out, args.max_sequences, args.timeout)
        print(f"Wrote {n} records to {args.out}")
    print(
        "Use it for training by pointing your config's training FASTA path at\n"
        f"  {os.path.abspath(args.out)}\n"
        "or in Python:\n"
        "  from bitesm.data import load_fasta_dataset\n"
        f"  ds = load_fasta_dataset({args.out!r}, validation_size=10_000)\n"
        "(add streaming=True for the full 60M+ sequence file)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
