#!/usr/bin/env python3
r"""Fetch (once) the Beam Flink job server jar for the installed apache-beam; print its path.

    python scripts/fetch_flink_jobserver.py            # prints e.g. ~/.cache/.../x.jar
    python -m beam_pipeline run ... --runner=FlinkRunner --flink_master='[local]' \
        --flink_job_server_jar="$(python scripts/fetch_flink_jobserver.py)" \
        --environment_type=LOOPBACK

The Beam version is the installed ``apache_beam.__version__``. For each Flink version that
Beam publishes a runner for (1.19 first, then 1.20, 2.0, 2.1, 2.2; ``--flink`` picks one),
it asks Maven Central through Maven::

    mvn -q -B dependency:copy \
        -Dartifact=org.apache.beam:beam-runners-flink-<flink>-job-server:<beam> \
        -DoutputDirectory=<cache>

and stops at the first that exists. The cache is outside the repository
(``$FLINK_JOBSERVER_CACHE``, default ``~/.cache/telemetry-delivery/flink``); a jar already
there is used without asking Maven, so a second call is instant and works offline.

**Fallback (assembled job server).** When no job-server jar of the installed Beam version
can be fetched (the Maven Central mirror reachable from this project's machines serves no
``beam-runners-flink-*-job-server`` artifact at all), the script assembles an equivalent
job server from the artifacts that *are* served: ``beam-runners-flink-<flink>:<fallback
beam>`` with its runtime dependencies, resolved with ``mvn dependency:copy-dependencies``
into ``<cache>/assembled-<beam>-flink-<flink>/lib/``, plus a small launcher jar whose
manifest names ``org.apache.beam.runners.flink.FlinkJobServerDriver`` (the job server's
own main class) and that class path. ``java -jar launcher.jar`` then behaves like the
published shadow jar, which is all that Beam's ``FlinkRunner`` does with
``--flink_job_server_jar``. The runner's Beam version then differs from the SDK's (a
portable runner and SDK talk through the versioned Beam protos): the script says so on
stderr, and docs/flink.md records what was verified with it. ``--fallback-beam none``
(or ``FLINK_JOBSERVER_FALLBACK=none``) turns the fallback off.

A failed lookup is remembered for a day (``<cache>/missing-<beam>.txt``), so each test
session does not pay Maven's start-up per Flink version again; ``--refresh`` asks anew.

Exit status: 0 and the jar's path on stdout; 1 with the reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

FLINK_VERSIONS = ("1.19", "1.20", "2.0", "2.1", "2.2")
"""Flink versions Beam 2.77 publishes runners for, in the order they are tried."""

FALLBACK_BEAM = "2.62.0"
"""Newest Beam Java release whose ``beam-runners-flink-1.19`` resolves with all its
dependencies on the Maven Central mirror reachable here (2.70.0 lacks
``beam-runners-java-job-service:2.70.0``; later versions have no Flink runner there)."""

FALLBACK_FLINK = "1.19"
MAIN_CLASS = "org.apache.beam.runners.flink.FlinkJobServerDriver"
MISSING_TTL_S = 24 * 3600
MVN_TIMEOUT_S = 900


class FetchError(RuntimeError):
    """The job server cannot be had; the message says why and what was tried."""


def default_cache() -> Path:
    """``$FLINK_JOBSERVER_CACHE``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)/telemetry-delivery."""
    if os.environ.get("FLINK_JOBSERVER_CACHE"):
        return Path(os.environ["FLINK_JOBSERVER_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "telemetry-delivery" / "flink"


def installed_beam_version() -> str:
    """The version of the apache-beam installed for the running Python."""
    from importlib import metadata

    try:
        return metadata.version("apache-beam")  # no import: apache_beam takes ~2 s to load
    except metadata.PackageNotFoundError as exc:
        raise FetchError(
            f"apache-beam is not installed for {sys.executable}: run `make install` "
            "or pass --beam VERSION"
        ) from exc


def jobserver_name(flink: str, beam: str) -> str:
    """The published jar's name, e.g. ``beam-runners-flink-1.19-job-server-2.77.0.jar``."""
    return f"beam-runners-flink-{flink}-job-server-{beam}.jar"


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError("Maven (`mvn`) is not on PATH: install it (Debian: apt-get install maven)")
    return mvn


def _run_mvn(args: list[str], cwd: Path, refresh: bool = False) -> subprocess.CompletedProcess[str]:
    # -U: after --refresh, ignore Maven's own cached "not found" (kept for a day too).
    flags = ["-q", "-B", "-Dstyle.color=never", *(["-U"] if refresh else [])]
    return subprocess.run(
        [_mvn(), *flags, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=MVN_TIMEOUT_S,
        check=False,
    )


def _mvn_reason(result: subprocess.CompletedProcess[str]) -> str:
    """The telling lines of a failed Maven run (it prints pages of help after them)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    lines = text.splitlines()
    keep = [
        line.replace("[ERROR]", "").strip()
        for line in lines
        if "Could not find artifact" in line
        or "was not found" in line
        or "Failed to execute goal" in line
        or "Could not resolve" in line
        or "Could not transfer" in line
    ]
    return "; ".join(dict.fromkeys(keep))[:800] or "\n".join(lines[-5:])


def fetch_published(
    cache: Path, beam: str, flinks: tuple[str, ...], refresh: bool = False
) -> tuple[Path | None, str]:
    """Try ``mvn dependency:copy`` of the published job server for each Flink version.

    Returns the jar (or None) and, when none was found, what Maven said for each version.
    """
    problems = []
    for flink in flinks:
        target = cache / jobserver_name(flink, beam)
        if target.is_file():
            return target, ""
    for flink in flinks:
        artifact = f"org.apache.beam:beam-runners-flink-{flink}-job-server:{beam}"
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            result = _run_mvn(
                ["dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={tmp}"],
                Path(tmp),
                refresh,
            )
            jar = Path(tmp) / jobserver_name(flink, beam)
            if result.returncode == 0 and jar.is_file():
                target = cache / jar.name
                os.replace(jar, target)  # atomic: a reader never sees half a jar
                return target, ""
        problems.append(f"{artifact}: {_mvn_reason(result)}")
    return None, "\n".join(problems)


POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.telemetry-delivery</groupId>
  <artifactId>flink-job-server-assembly</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-flink-{flink}</artifactId>
      <version>{beam}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>2.0.16</version>
    </dependency>
  </dependencies>
</project>
"""


def _manifest(class_path: list[str]) -> bytes:
    """A JAR manifest; lines wrapped at 72 bytes as the JAR spec requires."""

    def wrap(line: str) -> bytes:
        data = line.encode("utf-8")
        parts = [data[:72]]
        data = data[72:]
        while data:
            parts.append(b" " + data[:71])
            data = data[71:]
        return b"\r\n".join(parts)

    lines = [
        wrap("Manifest-Version: 1.0"),
        wrap(f"Main-Class: {MAIN_CLASS}"),
        wrap("Class-Path: " + " ".join(class_path)),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def assemble(cache: Path, beam: str, flink: str) -> Path:
    """Build (once) a launcher jar for ``beam-runners-flink-<flink>:<beam>`` and its deps."""
    folder = cache / f"assembled-{beam}-flink-{flink}"
    launcher = folder / f"beam-runners-flink-{flink}-job-server-{beam}-assembled.jar"
    if launcher.is_file():
        return launcher
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder, prefix="build-"))
    try:
        (work / "pom.xml").write_text(POM.format(flink=flink, beam=beam), encoding="utf-8")
        result = _run_mvn(
            [
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={work / 'lib'}",
            ],
            work,
        )
        if result.returncode != 0:
            raise FetchError(
                f"cannot assemble a job server from org.apache.beam:beam-runners-flink-{flink}:"
                f"{beam}: {_mvn_reason(result)}"
            )
        jars = sorted(p.name for p in (work / "lib").glob("*.jar"))
        if f"beam-runners-flink-{flink}-{beam}.jar" not in jars:
            raise FetchError(f"Maven resolved no beam-runners-flink-{flink}-{beam}.jar in {work}")
        lib = folder / "lib"
        if lib.exists():
            shutil.rmtree(lib)
        os.replace(work / "lib", lib)
        tmp_jar = work / launcher.name
        with zipfile.ZipFile(tmp_jar, "w") as z:
            z.writestr("META-INF/MANIFEST.MF", _manifest([f"lib/{name}" for name in jars]))
        os.replace(tmp_jar, launcher)  # written last: its presence means "complete"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return launcher


def _missing_note(cache: Path, beam: str) -> Path:
    return cache / f"missing-{beam}.txt"


def find_jobserver(
    cache: Path,
    beam: str,
    flinks: tuple[str, ...] = FLINK_VERSIONS,
    fallback_beam: str | None = FALLBACK_BEAM,
    refresh: bool = False,
) -> Path:
    """The job server jar: published for ``beam`` if Maven Central has it, else assembled.

    Raises:
        FetchError: neither can be had; the message holds what Maven said.
    """
    cache.mkdir(parents=True, exist_ok=True)
    note = _missing_note(cache, beam)
    recently_missing = (
        not refresh and note.is_file() and time.time() - note.stat().st_mtime < MISSING_TTL_S
    )
    if recently_missing:
        cached = [cache / jobserver_name(f, beam) for f in flinks]
        jar = next((path for path in cached if path.is_file()), None)
        problems = note.read_text(encoding="utf-8")
    else:
        jar, problems = fetch_published(cache, beam, flinks, refresh)
        if jar is None:
            note.write_text(problems + "\n", encoding="utf-8")
    if jar is not None:
        return jar
    if not fallback_beam:
        raise FetchError(
            f"no Flink job server jar for Beam {beam} on Maven Central:\n{problems.strip()}\n"
            "(the fallback is off: --fallback-beam none)"
        )
    flink = FALLBACK_FLINK if FALLBACK_FLINK in flinks else flinks[0]
    try:
        launcher = assemble(cache, fallback_beam, flink)
    except FetchError as exc:
        raise FetchError(
            f"no Flink job server jar for Beam {beam} on Maven Central:\n{problems.strip()}\n"
            f"and the fallback failed: {exc}"
        ) from exc
    print(
        f"warning: Maven Central has no Flink job server for Beam {beam} "
        f"({note} says what Maven answered); using a job server assembled from "
        f"beam-runners-flink-{flink}:{fallback_beam} (runner Beam {fallback_beam}, "
        f"SDK Beam {beam}; see docs/flink.md)",
        file=sys.stderr,
    )
    return launcher


def main(argv: list[str] | None = None) -> int:
    """Command line: print the job server jar's path, or the reason on stderr and exit 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beam", help="Beam version (default: the installed apache-beam).")
    parser.add_argument(
        "--flink",
        choices=FLINK_VERSIONS,
        default=os.environ.get("FLINK_VERSION") or None,
        help="Only this Flink version (default: the first of 1.19 1.20 2.0 2.1 2.2 found).",
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="Cache folder (default: %(prog)s's doc)."
    )
    parser.add_argument(
        "--fallback-beam",
        default=os.environ.get("FLINK_JOBSERVER_FALLBACK", FALLBACK_BEAM),
        help="Beam Java version to assemble a job server from when none is published "
        "(default %(default)s; 'none' disables).",
    )
    parser.add_argument(
        "--refresh", action="store_true", help="Ask Maven again even after a recent miss."
    )
    args = parser.parse_args(argv)
    fallback = None if args.fallback_beam in ("", "none") else args.fallback_beam
    try:
        beam = args.beam or installed_beam_version()
        flinks = (args.flink,) if args.flink else FLINK_VERSIONS
        jar = find_jobserver(args.cache or default_cache(), beam, flinks, fallback, args.refresh)
    except (FetchError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(jar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
