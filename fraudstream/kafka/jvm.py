"""The JVM side of the local broker: Java 17+, the Kafka jars fetched once from Maven Central into
the cache, and free loopback ports."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from importlib import resources
from pathlib import Path

from fraudstream.errors import BrokerError

KAFKA_VERSION = "4.1.1"
DEFAULT_PORT = 9092


def cache_root() -> Path:
    """Where downloaded broker jars live: $FRAUD_CACHE_DIR, else the user's cache folder."""
    if os.environ.get("FRAUD_CACHE_DIR"):
        return Path(os.environ["FRAUD_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fraudstream"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """The java binary to use: $JAVA_HOME/bin/java if set, else java on PATH; must be 17+."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    for java in candidates:
        if Path(java).exists() and _java_major(java) >= 17:
            return java
    raise BrokerError(
        "Java 17 or newer is needed to run the local Kafka broker, and none was found "
        "(checked $JAVA_HOME and PATH). Install a JDK 17+ (for example `apt-get install "
        "openjdk-17-jre-headless`), or run the stack with `docker compose up` instead."
    )


def resolve_jars(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Download the broker jars once into the cache; return the folder holding them."""
    libs = cache_root() / f"kafka-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (`mvn`) is needed once to fetch the Kafka broker jars from Maven Central, and "
            "it is not on PATH. Install it (for example `apt-get install maven`), or run the stack "
            "with `docker compose up` instead."
        )
    work = libs.parent
    work.mkdir(parents=True, exist_ok=True)
    pom = resources.files("fraudstream.kafka").joinpath("pom.xml").read_text()
    (work / "pom.xml").write_text(pom.replace("@KAFKA_VERSION@", version))
    tmp = work / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn,
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(work / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise BrokerError(
            f"Maven could not resolve Apache Kafka {version} from Maven Central "
            f"(exit {proc.returncode}). Check network access to Maven Central.\n{tail}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.write_text(version)
    return libs
