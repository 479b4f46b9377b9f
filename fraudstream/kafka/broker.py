"""A local single-node Apache Kafka (KRaft, combined broker + controller) for development and tests.

The broker jars come from Maven Central through ``mvn`` into a cache directory, once; later starts
reuse them. Storage is formatted with ``kafka.tools.StorageTool format --standalone`` the first
time (or with ``fresh=True``) and kept across stop/start: ``storage.json`` records its cluster id
and ports, which a later start reuses (the KRaft quorum remembers its controller endpoint). The
broker runs as ``kafka.Kafka server.properties`` on loopback, with single-node replication
settings so that transactions work.

``LocalBroker(home, secure=True)`` adds a SASL_SSL listener on a second port: a throw-away CA and a
broker certificate for 127.0.0.1/localhost are generated with ``openssl`` (PEM, no keystore
files), PLAIN and SCRAM-SHA-512 are enabled, and one user (``fraudstream``, random password) is
registered for both mechanisms (PLAIN through the listener's JAAS config, SCRAM at format time).
The PLAINTEXT listener stays for the controller, inter-broker traffic and the launcher's health
check. ``BrokerInfo`` names the secure bootstrap and the CA file; the password is kept in a
separate ``sasl-credentials.json`` (mode 0600) read by ``LocalBroker.sasl_credentials()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fraudstream.errors import BrokerError
from fraudstream.kafka.brokerconf import (
    SASL_USER,
    secure_properties,
    server_properties,
)
from fraudstream.kafka.jvm import (
    DEFAULT_PORT,
    KAFKA_VERSION,
    find_java,
    free_port,
    port_in_use,
    resolve_jars,
)
from fraudstream.kafka.tls import make_tls_material


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    port: int
    controller_port: int
    host: str
    data_dir: str
    log_file: str
    # Set when started with secure=True: the SASL_SSL listener and the CA that signed it.
    secure_port: int | None = None
    ca_file: str | None = None
    sasl_username: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def secure_bootstrap(self) -> str | None:
        return None if self.secure_port is None else f"{self.host}:{self.secure_port}"


@dataclass(frozen=True)
class Storage:
    """What formatted storage is bound to: its cluster id and the ports it was formatted for."""

    cluster_id: str
    port: int
    controller_port: int
    secure_port: int | None
    version: str


class LocalBroker:
    """Start, stop and inspect one local broker whose files live under ``home``."""

    def __init__(
        self,
        home: Path,
        version: str = KAFKA_VERSION,
        host: str = "127.0.0.1",
        *,
        secure: bool = False,
    ) -> None:
        self.home = home
        self.version = version
        self.host = host
        self.secure = secure
        self.state_file = home / "broker.json"  # the running process; removed at stop
        self.storage_file = home / "storage.json"  # the formatted data; kept until --fresh
        self.credentials_file = home / "sasl-credentials.json"

    def sasl_credentials(self) -> tuple[str, str] | None:
        """(username, password) of the SASL user of a secure broker, else None."""
        try:
            data = json.loads(self.credentials_file.read_text())
            return str(data["username"]), str(data["password"])
        except (OSError, ValueError, KeyError):
            return None

    def client_env(self) -> dict[str, str]:
        """FRAUD_KAFKA_* variables for a client of this broker (SASL_SSL + SCRAM when secure)."""
        info = self.info()
        if info is None:
            raise BrokerError("The broker is not running.")
        creds = self.sasl_credentials()
        if info.secure_bootstrap is None or creds is None:
            return {"FRAUD_KAFKA_BOOTSTRAP": info.bootstrap}
        return {
            "FRAUD_KAFKA_BOOTSTRAP": info.secure_bootstrap,
            "FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FRAUD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "FRAUD_KAFKA_SASL_USERNAME": creds[0],
            "FRAUD_KAFKA_SASL_PASSWORD": creds[1],
            "FRAUD_KAFKA_SSL_CAFILE": str(info.ca_file),
        }

    def info(self) -> BrokerInfo | None:
        if not self.state_file.exists():
            return None
        try:
            return BrokerInfo(**json.loads(self.state_file.read_text()))
        except (ValueError, TypeError):
            return None

    def is_running(self) -> bool:
        info = self.info()
        return info is not None and _pid_alive(info.pid) and port_in_use(info.port, info.host)

    def stored(self) -> Storage | None:
        """The formatted storage this home holds (cluster id and ports), or None."""
        try:
            data = json.loads(self.storage_file.read_text())
            storage = Storage(**data)
        except (OSError, ValueError, TypeError):
            return None
        return storage if (self.home / "data" / "meta.properties").exists() else None

    def start(
        self, port: int | None = None, timeout: float = 90.0, *, fresh: bool = False
    ) -> BrokerInfo:
        """Start the broker on its stored data (same cluster id and ports: topics and records
        survive stop/start), or on new storage when there is none or ``fresh`` is set."""
        current = self.info()
        if current is not None and _pid_alive(current.pid):
            wanted = port is None or port == current.port
            secure_ok = current.secure_port is not None or not self.secure
            if not fresh and wanted and secure_ok and port_in_use(current.port, current.host):
                return current
            self.stop()
        java = find_java()
        libs = resolve_jars(self.version)
        storage = None if fresh else self.stored()
        if storage is not None:
            self._check_reusable(storage, port)
            if port is not None and port != storage.port:
                storage = Storage(**{**storage.__dict__, "port": port})
                self.storage_file.write_text(json.dumps(storage.__dict__))
            self._write_properties(storage, self._credentials_for(storage))
        else:
            storage = self._format(java, libs, port)
        return self._launch(java, libs, storage, timeout)

    def _check_reusable(self, storage: Storage, port: int | None) -> None:
        if (storage.secure_port is not None) != self.secure:
            had = "with" if storage.secure_port is not None else "without"
            raise BrokerError(
                f"The broker's data in {self.home} was formatted {had} the SASL_SSL listener. "
                f"Start it {had} --secure, or add --fresh to format new storage (its topics and "
                "records are deleted)."
            )
        # KRaft's standalone quorum remembers its controller's endpoint: the stored ports are
        # part of the data. Only the client port may move (--port).
        needed = {
            "client": storage.port if port is None else port,
            "controller": storage.controller_port,
        }
        if storage.secure_port is not None:
            needed["SASL_SSL"] = storage.secure_port
        for role, p in needed.items():
            if port_in_use(p, self.host):
                raise BrokerError(
                    f"Port {p}, the {role} port of the broker's stored data in {self.home}, is "
                    "in use by another process. Stop that process and start again"
                    + (", or pass another --port" if role == "client" else "")
                    + "; or add --fresh to format new storage on free ports (its topics and "
                    "records are deleted)."
                )

    def _credentials_for(self, storage: Storage) -> dict[str, str]:
        if storage.secure_port is None:
            return {}
        creds = self.sasl_credentials()
        if creds is None or not (self.home / "tls" / "broker.crt").exists():
            raise BrokerError(
                f"The secure broker's credentials or TLS files in {self.home} are missing; add "
                "--fresh to format new storage with new ones."
            )
        return {creds[0]: creds[1]}

    def _write_properties(self, storage: Storage, users: dict[str, str]) -> Path:
        secure_lines = secure_properties(self.home / "tls", users) if users else []
        props = self.home / "server.properties"
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold a key
        with os.fdopen(fd, "w") as f:
            f.write(
                server_properties(
                    self.host,
                    storage.port,
                    storage.controller_port,
                    self.home / "data",
                    storage.secure_port,
                    secure_lines,
                )
            )
        log4j = self.home / "log4j2.yaml"
        log4j.write_text(resources.files("fraudstream.kafka").joinpath("log4j2.yaml").read_text())
        return props

    def _format(self, java: str, libs: Path, port: int | None) -> Storage:
        """New storage: fresh ports, a new cluster id, an empty log directory."""
        if port is None:
            port = DEFAULT_PORT if not port_in_use(DEFAULT_PORT) else free_port()
        elif port_in_use(port):
            raise BrokerError(
                f"Port {port} is already in use. Stop whatever listens there, or pass another "
                "port with --port."
            )
        self.storage_file.unlink(missing_ok=True)
        data_dir = self.home / "data"
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        secure_port: int | None = None
        users: dict[str, str] = {}
        scram_args: list[str] = []
        self.credentials_file.unlink(missing_ok=True)
        if self.secure:
            secure_port = free_port()
            while secure_port in (port, controller_port):
                secure_port = free_port()
            make_tls_material(self.home / "tls", self.host)
            users = {SASL_USER: secrets.token_urlsafe(18)}
            for user, pw in users.items():
                scram_args += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={pw}]"]
            fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"username": SASL_USER, "password": users[SASL_USER]}, f)
        storage = Storage(new_cluster_id(), port, controller_port, secure_port, self.version)
        props = self._write_properties(storage, users)
        log4j = self.home / "log4j2.yaml"
        fmt = subprocess.run(
            [java, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
            + ["kafka.tools.StorageTool", "format", "--standalone"]
            + ["-t", storage.cluster_id, "-c", str(props), *scram_args],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            out = fmt.stdout + fmt.stderr
            for arg in scram_args[1::2]:  # never echo a password
                out = out.replace(arg, "SCRAM-SHA-512=[...]")
            raise BrokerError(f"Formatting Kafka storage failed:\n{out}")
        self.storage_file.write_text(json.dumps(storage.__dict__))
        return storage

    def _launch(self, java: str, libs: Path, storage: Storage, timeout: float) -> BrokerInfo:
        log_file = self.home / "broker.log"
        log4j = self.home / "log4j2.yaml"
        heap = os.environ.get("FRAUD_BROKER_HEAP", "768m")
        with log_file.open("ab") as log:
            proc = subprocess.Popen(
                [java, f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC"]
                + [f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
                + ["kafka.Kafka", str(self.home / "server.properties")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI that started it
            )
        info = BrokerInfo(
            pid=proc.pid,
            port=storage.port,
            controller_port=storage.controller_port,
            host=self.host,
            data_dir=str(self.home / "data"),
            log_file=str(log_file),
            secure_port=storage.secure_port,
            ca_file=str(self.home / "tls" / "ca.crt") if storage.secure_port else None,
            sasl_username=SASL_USER if storage.secure_port else None,
        )
        self.state_file.write_text(json.dumps(info.__dict__))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
                raise BrokerError(f"The Kafka broker exited at start-up:\n{tail}")
            if _answers_metadata(info.bootstrap):
                return info
            time.sleep(0.5)
        self.stop()
        raise BrokerError(f"The Kafka broker did not answer within {timeout:.0f}s; see {log_file}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``). True if one ran."""
        info = self.info()
        if info is None:
            return False
        ran = _pid_alive(info.pid)
        if ran:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(info.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _pid_alive(info.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(info.pid, signal.SIGKILL)
                while _pid_alive(info.pid):
                    time.sleep(0.1)
        self.state_file.unlink(missing_ok=True)
        return ran

    def kill(self) -> None:
        """SIGKILL the broker (fault tests), keeping its data for a restart."""
        info = self.info()
        if info is not None and _pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
            while _pid_alive(info.pid):
                time.sleep(0.05)

    def restart(self, timeout: float = 90.0) -> BrokerInfo:
        """Start again on the same ports and data (after ``kill``)."""
        info = self.info()
        if info is None or self.stored() is None:
            raise BrokerError("No broker state to restart from.")
        return self.start(port=info.port, timeout=timeout)


def new_cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes, URL-safe base64 without padding.
    import base64

    # Like Kafka's Uuid.randomUuid, never start with '-': the storage tool would read it as a flag.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.split(")")[-1].split()[0] == "Z":
            return False
    return True


def _answers_metadata(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        # log_level 0: "connection refused" while the broker boots is expected, not news.
        admin = AdminClient(
            {"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0}
        )
        md = admin.list_topics(timeout=2)
        return bool(md.brokers)
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False
