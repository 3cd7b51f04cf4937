#!/usr/bin/env python3
"""Assemble OCI images without a container engine (hack/build-images.sh uses this).

    oci-image.py layer DIR OUT.tar
        a layer: every file under DIR, as root-relative paths, in a stable order
    oci-image.py archive OUT.tar --name NAME --config CONFIG.json LAYER.tar...
        an OCI image layout in one tar, which `ctr images import` reads

Layers are plain (uncompressed) tars: containerd accepts them, they are imported on the same
machine, and gzip would cost more CPU than the copy it saves.  CONFIG.json is the image
config's "config" object (Env, Entrypoint, Cmd, User, Labels, ...); the rest (rootfs diff
ids, history, platform) is derived here.  Standard library only, so it runs with any python3.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

# Contents the runtime provides; the directories themselves stay in the layer.
SKIP_CONTENTS = ("dev", "proc", "sys", "run", "tmp")
EPOCH = 1_700_000_000


def write_layer(root: Path, out: Path) -> str:
    """Tar everything under ``root`` (hard links, symlinks, owners and modes kept)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            rel = Path(dirpath).relative_to(root)
            if rel.parts:
                tar.add(dirpath, arcname=rel.as_posix(), recursive=False)
            if len(rel.parts) == 1 and rel.parts[0] in SKIP_CONTENTS:
                dirnames[:] = []
                continue
            # Symbolic links to directories (/bin -> usr/bin) are entries, never walked into.
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            dirnames[:] = sorted(d for d in dirnames if d not in links)
            for name in sorted(filenames + links):
                tar.add(os.path.join(dirpath, name), arcname=(rel / name).as_posix(), recursive=False)
    return sha256_file(out)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_archive(out: Path, name: str, config: dict, layers: list[Path]) -> str:
    diff_ids = [sha256_file(layer) for layer in layers]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created_by": f"hack/build-images.sh layer {i}"} for i in range(len(layers))],
    }
    config_blob = json.dumps(image_config, sort_keys=True).encode()
    config_digest = hashlib.sha256(config_blob).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": f"sha256:{config_digest}",
            "size": len(config_blob),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{d}", "size": layer.stat().st_size}
            for d, layer in zip(diff_ids, layers, strict=True)
        ],
    }
    manifest_blob = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = hashlib.sha256(manifest_blob).hexdigest()
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{manifest_digest}",
                "size": len(manifest_blob),
                "platform": {"architecture": "amd64", "os": "linux"},
                # containerd names the image after the first, other tools after the second.
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        add_bytes(tar, f"blobs/sha256/{config_digest}", config_blob)
        add_bytes(tar, f"blobs/sha256/{manifest_digest}", manifest_blob)
        for digest, layer in zip(diff_ids, layers, strict=True):
            info = tar.gettarinfo(str(layer), arcname=f"blobs/sha256/{digest}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
            with open(layer, "rb") as f:
                tar.addfile(info, f)
    tmp.replace(out)
    return manifest_digest


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    layer = sub.add_parser("layer")
    layer.add_argument("dir", type=Path)
    layer.add_argument("out", type=Path)
    archive = sub.add_parser("archive")
    archive.add_argument("out", type=Path)
    archive.add_argument("--name", required=True)
    archive.add_argument("--config", type=Path, required=True)
    archive.add_argument("layers", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "layer":
        print(write_layer(args.dir, args.out))
    else:
        print(write_archive(args.out, args.name, json.loads(args.config.read_text()), args.layers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
