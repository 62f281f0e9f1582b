"""The systems `make bench` measures, each behind the same four steps.

A system gets a fresh, empty work folder per run.  ingest(snap) returns the commands
that store one snapshot (timed together); restore(snap, out) returns the commands that
write it back into the empty folder `out` and where each original file landed, so the
caller can cmp them.  stored() is what the system keeps on disk for the whole fleet."""
import json
import os
import subprocess


def du_apparent(path):
    """Bytes of every file under path (`du -sb`): a repository's real size, not rounded
    up to filesystem blocks."""
    return int(subprocess.run(["du", "-sb", path], check=True, capture_output=True,
                              text=True).stdout.split()[0])


def du_allocated(path):
    """Bytes allocated on disk: what a sparse copy really costs."""
    return int(subprocess.run(["du", "-s", "-B1", path], check=True, capture_output=True,
                              text=True).stdout.split()[0])


def by_name(snap, out):
    """Where a restore that writes each file into out under its own name puts them."""
    return {n: os.path.join(out, n) for n, _ in snap.files}


class Cmd:
    """One process to run: argv plus how to run it."""
    def __init__(self, argv, cwd=None, stdout=None, on_stdout=None):
        self.argv, self.cwd, self.stdout, self.on_stdout = argv, cwd, stdout, on_stdout


class System:
    kind = "peer"           # "cairn", "peer" or "limit"
    restores = True
    label = ""

    def __init__(self, work, env):
        self.work, self.env, self.ids = work, env, {}

    def setup(self):
        return []

    def stored(self):
        return du_apparent(self.repo)

    def extra(self):
        return {}


class Cairn(System):
    kind, label = "cairn", "cairn"

    def __init__(self, work, env, exe):
        super().__init__(work, env)
        self.exe, self.repo = exe, os.path.join(work, "store")

    def setup(self):
        return [Cmd([self.exe, "init", "--store", self.repo])]

    def ingest(self, snap):
        argv = [self.exe, "snapshot", "--store", self.repo, "--tenant", snap.tenant,
                "--sandbox", snap.sandbox, "--json"]
        for name, path in snap.files:
            argv += ["--" + name, path]

        def keep(out):
            self.ids[snap.key] = json.loads(out)["snapshot"]
        return [Cmd(argv, on_stdout=keep)]

    def restore(self, snap, out):
        cmd = Cmd([self.exe, "restore", "--store", self.repo, "--snapshot",
                   self.ids[snap.key], "--out", out])
        return [cmd], by_name(snap, out)

    def extra(self):
        r = subprocess.run([self.exe, "stats", "--store", self.repo, "--json"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            return {"stats_error": r.stderr.strip()[-300:]}
        s = json.loads(r.stdout)
        # Where the store's bytes are, beside the packs: index, manifests, the rest.
        parts = {d: du_apparent(os.path.join(self.repo, d)) for d in sorted(os.listdir(self.repo))
                 if os.path.isdir(os.path.join(self.repo, d))}
        # stats' stored_bytes counts packs only; "stored_bytes" here is the whole store
        return {"pack_bytes": s.get("stored_bytes"), "index_bytes": s.get("index_bytes"),
                "chunks": s.get("chunks"), "logical_bytes": s.get("logical_bytes"),
                "store_parts": parts}


class Restic(System):
    label = "restic"

    def __init__(self, work, env):
        super().__init__(work, env)
        self.repo = os.path.join(work, "repo")
        env.update(RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=os.path.join(work, "cache"))

    def setup(self):
        return [Cmd(["restic", "init", "-q", "--repository-version", "2", "-r", self.repo])]

    def ingest(self, snap):
        def keep(out):
            for line in out.splitlines():
                if '"summary"' in line:
                    self.ids[snap.key] = json.loads(line)["snapshot_id"]
        return [Cmd(["restic", "-r", self.repo, "backup", "-q", "--json",
                     "--compression", "auto", snap.dir], on_stdout=keep)]

    def restore(self, snap, out):
        # restic 0.14 has no `restore --sparse`: it writes the zeros out.
        cmd = Cmd(["restic", "-r", self.repo, "restore", "-q", self.ids[snap.key],
                   "--target", out])
        return [cmd], {n: out + p for n, p in snap.files}


class Borg(System):
    def __init__(self, work, env, fixed):
        super().__init__(work, env)
        self.fixed, self.repo = fixed, os.path.join(work, "repo")
        self.label = "borg fixed,4096" if fixed else "borg"
        env.update(BORG_BASE_DIR=os.path.join(work, "base"),
                   BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                   BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")

    def setup(self):
        return [Cmd(["borg", "init", "-e", "none", self.repo])]

    def ingest(self, snap):
        argv = ["borg", "create", "--compression", "zstd,3"]
        if self.fixed:  # borg's advice for VM images: fixed chunks, holes skipped
            argv += ["--chunker-params", "fixed,4096", "--sparse"]
        return [Cmd(argv + [f"{self.repo}::{snap.key}", snap.dir])]

    def restore(self, snap, out):
        cmd = Cmd(["borg", "extract", "--sparse", f"{self.repo}::{snap.key}"], cwd=out)
        return [cmd], {n: os.path.join(out, p.lstrip("/")) for n, p in snap.files}


class Casync(System):
    label = "casync"

    def __init__(self, work, env):
        super().__init__(work, env)
        self.repo = work  # chunk store plus the .caibx indexes: both are needed to restore
        self.store = os.path.join(work, "store")

    def _index(self, snap, name):
        return os.path.join(self.work, "index", f"{snap.key}-{name}.caibx")

    def setup(self):
        os.makedirs(os.path.join(self.work, "index"))
        return []

    def ingest(self, snap):
        return [Cmd(["casync", "make", "--store=" + self.store, self._index(snap, n), p])
                for n, p in snap.files]

    def restore(self, snap, out):
        return ([Cmd(["casync", "extract", "--store=" + self.store, self._index(snap, n),
                      os.path.join(out, n)]) for n, _ in snap.files],
                by_name(snap, out))


class Cat(System):
    kind, label, restores = "limit", "cat (read)", False

    def ingest(self, snap):
        return [Cmd(["cat"] + [p for _, p in snap.files], stdout=subprocess.DEVNULL)]

    def stored(self):
        return None


class FolderPerSnapshot(System):
    """A limit that keeps each snapshot's files in a folder of its own, named by its key,
    under the repo folder `name` of its work folder; a restore writes them into `out`
    under their own names."""
    kind = "limit"

    def __init__(self, work, env, name):
        super().__init__(work, env)
        self.repo = os.path.join(work, name)

    def _dir(self, snap):
        return os.path.join(self.repo, snap.key)

    def setup(self):
        os.makedirs(self.repo)
        return []


class Copy(FolderPerSnapshot):
    label = "cp --sparse=always"

    def __init__(self, work, env):
        super().__init__(work, env, "copy")

    def ingest(self, snap):
        os.makedirs(self._dir(snap))
        return [Cmd(["cp", "--sparse=always"] + [p for _, p in snap.files] + [self._dir(snap)])]

    def stored(self):
        return du_allocated(self.repo)

    def restore(self, snap, out):
        src = [os.path.join(self._dir(snap), n) for n, _ in snap.files]
        return [Cmd(["cp", "--sparse=always"] + src + [out])], by_name(snap, out)


class Zstd(FolderPerSnapshot):
    def __init__(self, work, env, level):
        super().__init__(work, env, "zst")
        self.level = level
        self.label = f"zstd -{level} -T0"
        self.restores = level == 3  # issue 2 compares restore with `zstd -d` of -3 data

    def ingest(self, snap):
        os.makedirs(self._dir(snap))  # zstd 1.5.4 crashes on a missing --output-dir-flat
        return [Cmd(["zstd", f"-{self.level}", "-T0", "-q", "-f"] + [p for _, p in snap.files]
                    + ["--output-dir-flat", self._dir(snap)])]

    def restore(self, snap, out):
        src = [os.path.join(self._dir(snap), n + ".zst") for n, _ in snap.files]
        return [Cmd(["zstd", "-d", "-q", "-f"] + src + ["--output-dir-flat", out])], by_name(snap, out)


def make_systems(work_of, cairn_exe):
    """Factories, in table order: name -> callable(env) building the system on a fresh
    folder.  work_of(name) gives that folder."""
    return [
        ("cairn", lambda env: Cairn(work_of("cairn"), env, cairn_exe)),
        ("restic", lambda env: Restic(work_of("restic"), env)),
        ("borg", lambda env: Borg(work_of("borg"), env, fixed=False)),
        ("borg-fixed", lambda env: Borg(work_of("borg-fixed"), env, fixed=True)),
        ("casync", lambda env: Casync(work_of("casync"), env)),
        ("cat", lambda env: Cat(work_of("cat"), env)),
        ("cp", lambda env: Copy(work_of("cp"), env)),
        ("zstd1", lambda env: Zstd(work_of("zstd1"), env, 1)),
        ("zstd3", lambda env: Zstd(work_of("zstd3"), env, 3)),
    ]
