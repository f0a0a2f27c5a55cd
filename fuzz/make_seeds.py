#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into corpus/<target>/ (small, hand-picked
inputs that reach each parser's branches; libFuzzer grows from them). Deterministic: run it
again after changing it and commit what changed. Crash reproducers go in by hand, named
`crash-<what>`; files named by their SHA-1 are inputs libFuzzer found, kept after minimizing
(`-merge=1`) because they reach code the seeds do not. This script removes neither.
"""

import io
import json
import os
import struct
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- filter: filter strings (one per line), NUL, then path=value fields of the object ---
FILTERS = {
    "presence": 'labels."containerd.io/gc.root"\0labels.containerd.io/gc.root=x',
    "equal": "name==docker.io/library/busybox:latest\0name=docker.io/library/busybox:latest",
    "not_equal": "name!=foo\0name=bar",
    "regex": r"name~=^docker\.io/,labels.a==b" + "\0name=docker.io/x\nlabels.a=b",
    "regex_slash": "name~=/^b.*x$/\0name=busybox",
    "regex_pipe": "name~=|a/b|\0name=a/b",
    "quoted": 'name=="quo\\"ted",labels."a.b"=="c\\td"\0name=quo"ted\nlabels.a.b=c\td',
    "topic": 'topic=="/tasks/exit",namespace==default\0topic=/tasks/exit\nnamespace=default',
    "or": "name==a\nname==b\0name=b",
    "empty": "",
    "bad_op": "name=foo\0name=foo",
    "bad_space": "name==a ,b",
    "bad_quote": 'name=="unterminated',
    "bad_regex": "name~=(\0name=(",
    "escapes": r'name=="\x41\101\u0041\U00000041\n"' + "\0name=AAAA\n",
    "deep_path": "a.b.c.d.e.f==g\0a.b.c.d.e.f=g",
}

# --- manifest: index, manifest list, manifests, configs ---
D = "sha256:" + "a" * 64
E = "sha256:" + "b" * 64
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def desc(mt, digest, size, **extra):
    d = {"mediaType": mt, "digest": digest, "size": size}
    d.update(extra)
    return d


MANIFESTS = {
    "oci_index": {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            desc(OCI_MANIFEST, D, 100, platform={"os": "linux", "architecture": "amd64"}),
            desc(OCI_MANIFEST, E, 100,
                 platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
            desc(OCI_MANIFEST, E, 100, platform={"os": "linux", "architecture": "arm"},
                 annotations={"org.opencontainers.image.ref.name": "latest"}),
            desc(OCI_INDEX, D, 10),
            desc(OCI_MANIFEST, D, 1),
        ],
    },
    "docker_list": {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [desc(DOCKER_MANIFEST, D, 7,
                           platform={"os": "Linux", "architecture": "x86_64", "variant": "v1"})],
    },
    "index_no_media_type": {"schemaVersion": 2, "manifests": []},
    "oci_manifest": {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", D, 10),
        "layers": [
            desc("application/vnd.oci.image.layer.v1.tar+gzip", D, 10),
            desc("application/vnd.oci.image.layer.v1.tar+zstd", E, 10),
            desc("application/vnd.oci.image.layer.nondistributable.v1.tar", E, 10,
                 urls=["https://example.invalid/x"]),
        ],
        "annotations": {"a": "b"},
    },
    "docker_manifest": {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": desc("application/vnd.docker.container.image.v1+json", D, 1),
        "layers": [desc("application/vnd.docker.image.rootfs.diff.tar.gzip", E, 2)],
    },
    "manifest_no_media_type": {"config": desc("x", D, 1)},
    "schema1": {"schemaVersion": 1, "name": "x", "fsLayers": []},
    "unsupported_type": {"schemaVersion": 2, "mediaType": "text/plain"},
    "config": {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [D, E, D]},
    },
    "config_no_rootfs": {"architecture": "arm64", "os": "linux"},
}

# --- ttrpc_frame: frames (10-byte header) around Request / Response envelopes ---


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, value):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return key + varint(len(value)) + value


def frame(stream, kind, payload, flags=0, length=None):
    n = len(payload) if length is None else length
    return struct.pack(">IIBB", n, stream, kind, flags) + payload


def request(service, method, payload=b"", timeout=0, metadata=()):
    body = field(1, 2, service) + field(2, 2, method) + field(3, 2, payload)
    if timeout:
        body += field(4, 0, timeout)
    for k, v in metadata:
        body += field(5, 2, field(1, 2, k) + field(2, 2, v))
    return body


def response(code=0, message="", payload=b""):
    body = b""
    if code:
        body += field(1, 2, field(1, 0, code) + field(2, 2, message))
    return body + field(2, 2, payload)


CREATE = request("containerd.task.v2.Task", "Create", field(1, 2, "c1") + field(2, 2, "/b"),
                 timeout=5_000_000_000,
                 metadata=[("containerd-namespace-ttrpc", "default")])
FRAMES = {
    "request": frame(1, 1, CREATE),
    "response_ok": frame(1, 2, response(payload=field(1, 0, 42))),
    "response_error": frame(3, 2, response(5, "not found")),
    "two_frames": frame(1, 1, CREATE) + frame(3, 1, request("s", "m")),
    "even_stream": frame(2, 1, request("s", "m")),
    "unknown_kind": frame(1, 7, b"\x00", flags=1),
    "oversized": frame(1, 1, b"", length=4 * 1024 * 1024 + 1),
    "truncated_header": frame(1, 1, b"abc")[:6],
    "truncated_payload": frame(1, 1, CREATE)[:20],
    "empty_request": frame(5, 1, b""),
    "bad_envelope": frame(1, 1, b"\x0a\xff\xff\xff\xff\x0f"),
}

# --- layer_apply: tar streams; the target tree has bin/sh -> busybox, etc/passwd, and
# symlinks up -> ../victim, abs -> /tmp/berth-fuzz-apply/victim, slash -> /, loop -> loop ---


def tar(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            kind, name = e[0], e[1]
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            info.mode = 0o644
            data = None
            if kind == "file":
                data = e[2] if len(e) > 2 else b"x\n"
                info.size = len(data)
                if len(e) > 3:
                    info.pax_headers = e[3]
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = e[2] if len(e) > 2 else 0o755
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e[2]
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = e[2]
            elif kind in ("char", "block"):
                info.type = tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE
                info.devmajor, info.devminor = e[2], e[3]
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "owned":
                info.uid, info.gid, info.mode = 1000, 1000, 0o4755
                data = b"#!/bin/sh\n"
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


LAYERS = {
    "basic": tar([("dir", "bin"), ("file", "bin/busybox", b"\x7fELF"), ("symlink", "bin/ls", "busybox"),
                  ("dir", "etc", 0o700), ("file", "etc/hello"), ("hardlink", "etc/hello2", "etc/hello")]),
    "gnu_format": tar([("dir", "a"), ("file", "a/" + "n" * 150), ("symlink", "a/l", "/" + "t" * 120)],
                      fmt=tarfile.GNU_FORMAT),
    "ustar_format": tar([("dir", "./usr/"), ("file", "./usr/f"), ("fifo", "usr/p")],
                        fmt=tarfile.USTAR_FORMAT),
    "whiteouts": tar([("file", "etc/.wh.passwd", b""), ("file", "bin/.wh..wh..opq", b""),
                      ("file", "bin/new"), ("file", ".wh..wh.plnk", b""), ("file", "etc/sub/.wh.missing", b"")]),
    "whiteout_bad": tar([("file", "etc/.wh.", b""), ("file", "etc/.wh..", b"")]),
    "escape_dotdot": tar([("file", "../escaped"), ("file", "a/../../escaped")]),
    "escape_symlink_parent": tar([("file", "up/file", b"overwritten"), ("file", "abs/new"),
                                  ("file", "slash/tmp/berth-fuzz-apply/victim/file")]),
    "escape_hardlink": tar([("hardlink", "h1", "../victim/file"), ("hardlink", "h2", "up/file"),
                            ("hardlink", "h3", "/tmp/berth-fuzz-apply/victim/file"), ("hardlink", "h4", "abs/file")]),
    "escape_whiteout": tar([("file", "up/.wh.file", b""), ("file", "abs/.wh..wh..opq", b""),
                            ("file", "../.wh.victim", b"")]),
    "replace_symlink_with_dir": tar([("dir", "up"), ("file", "up/inside"), ("symlink", "etc", "/tmp"),
                                     ("file", "etc/x")]),
    "symlink_then_file": tar([("symlink", "x", "../victim/file"), ("file", "x", b"y"),
                              ("symlink", "bin/sh", "/tmp/berth-fuzz-apply/victim/file"), ("dir", "bin/sh")]),
    "devices": tar([("char", "dev/null", 1, 3), ("block", "dev/sda", 8, 0), ("char", "dev/wh", 0, 0)]),
    "xattrs": tar([("file", "f", b"x", {"SCHILY.xattr.user.fuzz": "1",
                                        "SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
                                        "SCHILY.xattr.trusted.overlay.opaque": "y",
                                        "mtime": "1700000000.123456789", "atime": "-1.5"})]),
    "setuid": tar([("owned", "bin/suid")]),
    "loop": tar([("file", "loop/x"), ("symlink", "a", "b"), ("symlink", "b", "a"), ("file", "a/c")]),
    "dir_over_file": tar([("dir", "etc/passwd"), ("file", "bin"), ("file", "etc/sub")]),
    "root_entry": tar([("dir", ".", 0o700), ("dir", "/", 0o755), ("file", "/abs_name")]),
}

for name, text in FILTERS.items():
    write("filter", name, text)
for name, doc in MANIFESTS.items():
    write("manifest", name, json.dumps(doc, separators=(",", ":")))
for name, data in FRAMES.items():
    write("ttrpc_frame", name, data)
for name, data in LAYERS.items():
    write("layer_apply", name, data)
print("seeds:", {t: len(os.listdir(os.path.join(HERE, "corpus", t))) for t in
                 ("filter", "manifest", "ttrpc_frame", "layer_apply")})
