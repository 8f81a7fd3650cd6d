"""Run one command the way a container with `readOnlyRootFilesystem: true` runs it: inside a
private mount namespace (start this script under `unshare --mount --propagation private`, as
root) where `/` is read-only and only the given volume mounts exist at their paths.

    unshare --mount --propagation private python3 readonly_root.py SPEC.json

SPEC.json: {"mounts": [{"source": DIR, "path": PATH, "read_only": BOOL}, ...],
            "scratch": DIR, "user": NAME, "env": {...}, "argv": [...], "cwd": PATH}

The sources and `scratch` (where the overlays keep their upper layers) must not lie under a
directory that gets overlaid (the test keeps them under /var/tmp).

Steps, each failing loudly:
1. a mount point that does not exist on the host (`/etc/pingpong-rabbitmq`) is created inside a
   private overlay of its nearest existing ancestor, so the host's files are never changed;
2. every source is bind-mounted at its path (parents first), read-only ones remounted read-only;
3. the overlays and `/` are remounted read-only (other mounts, /proc, /dev, /dev/shm, stay as a
   container has them);
4. a write outside the mounts must fail with EROFS and a write inside each writable mount must
   succeed, else the namespace is not what the test claims;
5. the command runs as `user` (setpriv), replacing this process, so its pid is the test's handle.

The module name is unique across tests/ (see tests/deploy/conftest.py).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(*argv: str) -> None:
    subprocess.run(argv, check=True)


def nearest_existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    mounts = sorted(spec["mounts"], key=lambda m: len(Path(m["path"]).parts))
    scratch = Path(tempfile.mkdtemp(prefix="overlay-", dir=spec["scratch"]))

    # 1. Missing mount points, created in private overlays of their nearest existing ancestor.
    overlays: list[Path] = []
    missing = [Path(m["path"]) for m in mounts if not Path(m["path"]).exists()]
    for path in missing:
        anchor = nearest_existing(path)
        if any(anchor == o or o in anchor.parents for o in overlays):
            continue
        if anchor == Path("/"):
            raise SystemExit(f"no ancestor of {path} to overlay but /")
        hidden = [p for p in [scratch, *(Path(m["source"]) for m in mounts)] if anchor in p.parents]
        if hidden:
            raise SystemExit(f"overlaying {anchor} would hide {hidden[0]}: keep it elsewhere")
        upper, work = scratch / f"u{len(overlays)}", scratch / f"w{len(overlays)}"
        upper.mkdir()
        work.mkdir()
        run("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={anchor},upperdir={upper},workdir={work}", str(anchor))
        overlays.append(anchor)
    for path in missing:
        if not path.exists():
            path.mkdir(parents=True)

    # 2. The volumes; a nested mount point (the data volume inside the home) is created in its
    #    parent volume, as the kubelet does.
    for mount in mounts:
        path = Path(mount["path"])
        path.mkdir(parents=True, exist_ok=True)
        run("mount", "--bind", mount["source"], str(path))
        if mount["read_only"]:
            run("mount", "-o", "remount,bind,ro", str(path))

    # 3. The root filesystem (and the overlays standing in for it) read-only.
    for anchor in sorted(overlays, key=lambda p: len(p.parts), reverse=True):
        run("mount", "-o", "remount,ro", str(anchor))
    run("mount", "-o", "remount,bind,ro", "/")

    # 4. Check the claim before running anything.
    writable = [Path(m["path"]) for m in mounts if not m["read_only"]]
    for probe in (Path("/var/lib"), Path("/etc"), Path("/usr/local"), Path("/root")):
        if any(probe == w or probe in w.parents for w in writable) or not probe.exists():
            continue
        try:
            fd, name = tempfile.mkstemp(dir=probe)
        except OSError as error:
            if error.errno != errno.EROFS:
                raise SystemExit(f"{probe}: expected a read-only file system, got {error}")
        else:
            os.close(fd)
            os.unlink(name)
            raise SystemExit(f"{probe} is writable: the root filesystem is not read-only")
    for path in writable:
        fd, name = tempfile.mkstemp(dir=path)
        os.close(fd)
        os.unlink(name)
    print(f"readonly_root: / read-only; writable: {', '.join(map(str, writable))}", flush=True)

    # 5. The command, as the container's user.
    os.chdir(spec.get("cwd", "/"))
    user = spec["user"]
    argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *spec["argv"]]
    os.execvpe("setpriv", argv, spec["env"])


if __name__ == "__main__":
    main(sys.argv[1])
