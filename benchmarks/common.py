"""Figures, ratios and the results table shared by every benchmark."""

from __future__ import annotations

import hashlib
import io
import math
import random
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zstandard

MiB = 1 << 20


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Row:
    """One line of the results table.

    ``ratio`` is operator ÷ baseline for times and memory (lower is better) and
    operator ÷ reference for rates (higher is better); ``better`` says which.
    """

    bench: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: str = ""
    ok: bool | None = None
    note: str = ""
    better: str = "lower"

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0) or self.value is None:
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print("  " + format_row(row), flush=True)
        return row


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return f"{text} {unit}".strip()


def format_row(row: Row) -> str:
    ratio = f"ratio {row.ratio:.2f}" if row.ratio is not None else ""
    base = f"baseline {fmt(row.baseline, row.unit)} ({row.baseline_label})" if row.baseline is not None else ""
    verdict = {True: "OK", False: "MISSED", None: ""}[row.ok]
    parts = [
        f"[{row.bench}] {row.metric}: {fmt(row.value, row.unit)}",
        base,
        ratio,
        f"target {row.target} {verdict}".strip() if row.target else "",
        row.note,
    ]
    return "  ".join(p for p in parts if p)


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| # | metric | miosa-operator | baseline / reference | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = f"{fmt(row.baseline, row.unit)} ({row.baseline_label})" if row.baseline is not None else "-"
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
        met = {True: "yes", False: "**no**", None: ""}[row.ok]
        cells = [row.bench, row.metric, fmt(row.value, row.unit), base, ratio, row.target, met]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


# --------------------------------------------------------------------------- bundles

_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    '<div class="card"> </div> <a href="/docs/"> </a> <span> </span> {color: #333; margin: 0 auto;} function '
    "return const let var => import export default async await"
).split()


def text_corpus(rng: random.Random, size: int) -> bytes:
    """Word salad: compresses about 3:1 with zstd, like real HTML/JS/CSS."""
    out = io.StringIO()
    written = 0
    while written < size:
        line = " ".join(rng.choices(_WORDS, k=rng.randint(6, 18))) + f" {rng.getrandbits(32):x}\n"
        out.write(line)
        written += len(line)
    return out.getvalue().encode()[:size]


@dataclass(frozen=True)
class BundleFile:
    path: Path
    sha256: str
    size: int
    members: int
    uncompressed: int


def build_bundle(
    path: Path, *, small_files: int, large_files: int, large_size: int, random_share: float, seed: int
) -> BundleFile:
    """A .tar.zst of ``index.html``, ``small_files`` small text files and ``large_files`` big ones
    (``random_share`` of them random bytes, the rest text)."""
    rng = random.Random(seed)
    corpus = text_corpus(rng, 8 * MiB)
    members = 0
    uncompressed = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw:
        compressor = zstandard.ZstdCompressor(level=3, threads=2)
        with (
            compressor.stream_writer(raw, closefd=False) as zw,
            tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):

            def add(name: str, data: bytes) -> None:
                nonlocal members, uncompressed
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
                tar.addfile(info, io.BytesIO(data))
                members += 1
                uncompressed += len(data)

            def text(size: int) -> bytes:
                start = rng.randrange(0, len(corpus) - size) if size < len(corpus) else 0
                chunk = corpus[start : start + size]
                while len(chunk) < size:
                    chunk += corpus[: size - len(chunk)]
                return chunk

            add("index.html", b"<!doctype html><title>bench</title>" + text(4096))
            for i in range(small_files):
                add(f"assets/s{i // 100:03d}/f{i:05d}.html", text(rng.randint(512, 8192)))
            for i in range(large_files):
                size = rng.randint(large_size // 2, large_size * 3 // 2)
                is_random = int((i + 1) * random_share) > int(i * random_share)  # evenly spread
                data = rng.randbytes(size) if is_random else text(size)
                add(f"media/m{i:04d}.bin", data)
    digest = hashlib.sha256()
    with open(tmp, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    tmp.rename(path)
    return BundleFile(path, digest.hexdigest(), path.stat().st_size, members, uncompressed)


def cached_bundle(cache: Path, name: str, **params: Any) -> BundleFile:
    """Build once per parameter set; reuse from ``cache`` afterwards."""
    key = hashlib.sha256(repr(sorted(params.items())).encode()).hexdigest()[:12]
    path = cache / f"{name}-{key}.tar.zst"
    meta = path.with_suffix(".meta")
    if path.exists() and meta.exists():
        sha, size, members, unc = meta.read_text().split()
        return BundleFile(path, sha, int(size), int(members), int(unc))
    bundle = build_bundle(path, **params)
    meta.write_text(f"{bundle.sha256} {bundle.size} {bundle.members} {bundle.uncompressed}")
    return bundle


def one_mib_bundle(cache: Path, seed: int = 1) -> BundleFile:
    """About 1 MiB on the wire: 40 small pages and a few assets, ~60 % random bytes."""
    return cached_bundle(cache, "site-1mib", small_files=40, large_files=8, large_size=210_000, random_share=0.6, seed=seed)


def big_bundle(cache: Path) -> BundleFile:
    """About 256 MiB on the wire: 2,000 small pages and ~600 large files, half of them random."""
    return cached_bundle(cache, "site-256mib", small_files=2000, large_files=560, large_size=700_000, random_share=0.5, seed=7)
