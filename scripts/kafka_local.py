#!/usr/bin/env python3
"""Run a single-node Apache Kafka 4.x broker (KRaft, broker+controller) on 127.0.0.1.

No Docker: the broker's jars are resolved from Maven Central with ``mvn`` into a cache
folder outside git (``$SENTRYML_CACHE`` or ``~/.cache/sentryml``) and started with the
machine's Java 17+.

    scripts/kafka-local fetch                 # resolve the jars once
    scripts/kafka-local start [--port 9092] [--dir .sentryml/kafka] [--sasl]
    scripts/kafka-local status | stop [--dir ...]

``start`` formats KRaft storage on first use, waits until the broker answers a metadata
request, and prints its bootstrap address. If ``SENTRYML_KAFKA_BOOTSTRAP`` already points
at a reachable broker, ``start`` uses that one and starts nothing. ``stop`` kills the
broker by the PID it recorded. The broker logs to ``<dir>/broker.log``; a failed start
prints the tail of that log and exits non-zero.

Only the standard library is used, so this runs before any virtualenv exists; the
readiness probe speaks the Kafka wire protocol directly (an ApiVersions request).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

KAFKA_VERSION = os.environ.get("SENTRYML_KAFKA_VERSION", "4.1.1")
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.16"
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    base = os.environ.get("SENTRYML_CACHE") or os.path.join(Path.home(), ".cache", "sentryml")
    return Path(base) / f"kafka-{KAFKA_VERSION}"


POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.sentryml</groupId><artifactId>kafka-local</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J2 = """Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka
        level: WARN
      - name: org.apache.kafka
        level: WARN
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


def fetch() -> Path:
    """Resolve the broker jars from Maven Central (once); return the jar folder."""
    libs = cache_dir() / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        sys.exit("kafka-local: `mvn` is not on PATH; install Maven (apt-get install maven)")
    work = cache_dir()
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(
        POM.format(kafka=KAFKA_VERSION, slf4j=SLF4J_VERSION, log4j=LOG4J_VERSION)
    )
    print(f"kafka-local: resolving Apache Kafka {KAFKA_VERSION} from Maven Central ...", flush=True)
    tmp = work / "libs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(work / "pom.xml"),
        "dependency:copy-dependencies", f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        sys.exit(f"kafka-local: mvn failed to resolve kafka_2.13:{KAFKA_VERSION}")
    # slf4j 1.x arrives transitively; the 2.x API we pinned must win on the classpath.
    for jar in tmp.glob("slf4j-api-1.*.jar"):
        jar.unlink()
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    (libs / ".complete").write_text(KAFKA_VERSION)
    return libs


def api_versions_ok(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a broker on host:port answers an ApiVersions (v0) request."""
    client_id = b"sentryml-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = sock.recv(4)
            if len(header) < 4:
                return False
            size = struct.unpack(">i", header)[0]
            payload = b""
            while len(payload) < size:
                chunk = sock.recv(size - len(payload))
                if not chunk:
                    return False
                payload += chunk
            correlation, error_code = struct.unpack(">ih", payload[:6])
            return correlation == 1 and error_code == 0
    except OSError:
        return False


def _split(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def server_properties(data: Path, port: int, controller_port: int, sasl: bool) -> str:
    if sasl:
        users = os.environ.get("SENTRYML_KAFKA_LOCAL_SASL_USERS", "sentryml:sentryml-secret")
        jaas_users = " ".join(
            f'user_{u}="{p}"' for u, p in (pair.split(":", 1) for pair in users.split(","))
        )
        admin_user, admin_pw = users.split(",")[0].split(":", 1)
        listener = f"SASL_PLAINTEXT://127.0.0.1:{port}"
        security = (
            "sasl.enabled.mechanisms=PLAIN\n"
            "sasl.mechanism.inter.broker.protocol=PLAIN\n"
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{admin_user}" password="{admin_pw}" {jaas_users};\n'
            "inter.broker.listener.name=SASL_PLAINTEXT\n"
        )
        protocol_map = "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    else:
        listener = f"PLAINTEXT://127.0.0.1:{port}"
        security = "inter.broker.listener.name=PLAINTEXT\n"
        protocol_map = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    return (
        "process.roles=broker,controller\n"
        "node.id=1\n"
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}\n"
        f"listeners={listener},CONTROLLER://127.0.0.1:{controller_port}\n"
        f"advertised.listeners={listener}\n"
        "controller.listener.names=CONTROLLER\n"
        f"listener.security.protocol.map={protocol_map}\n"
        f"{security}"
        f"log.dirs={data / 'logs'}\n"
        "num.partitions=1\n"
        "offsets.topic.replication.factor=1\n"
        "offsets.topic.num.partitions=6\n"
        "transaction.state.log.replication.factor=1\n"
        "transaction.state.log.min.isr=1\n"
        "share.coordinator.state.topic.replication.factor=1\n"
        "share.coordinator.state.topic.min.isr=1\n"
        "group.initial.rebalance.delay.ms=0\n"
        "auto.create.topics.enable=true\n"
        "log.retention.hours=168\n"
        # Large enough for the 10 MiB poison-input tests; SentryML itself rejects >1 MiB.
        "message.max.bytes=16777216\n"
        "replica.fetch.max.bytes=16777216\n"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid(data: Path) -> int | None:
    try:
        pid = int((data / "broker.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start(data: Path, port: int, sasl: bool, timeout: float) -> str:
    existing = os.environ.get("SENTRYML_KAFKA_BOOTSTRAP")
    if existing and api_versions_ok(*_split(existing)):
        print(f"kafka-local: using the reachable broker at {existing}")
        return existing
    data.mkdir(parents=True, exist_ok=True)
    bootstrap = f"127.0.0.1:{port}"
    if _pid(data) is not None:
        if api_versions_ok("127.0.0.1", port):
            print(f"kafka-local: already running at {bootstrap}")
            return bootstrap
        stop(data)
    libs = fetch()
    java = shutil.which("java") or sys.exit("kafka-local: `java` (17+) is not on PATH")
    props = data / "server.properties"
    props.write_text(server_properties(data, port, free_port(), sasl))
    (data / "log4j2.yaml").write_text(LOG4J2)
    env = {**os.environ, "KAFKA_LOG4J_OPTS": ""}
    classpath = f"{libs}/*"
    log_opts = [f"-Dlog4j2.configurationFile={data / 'log4j2.yaml'}"]
    if not (data / "logs" / "meta.properties").exists():
        cluster_id = uuid.uuid4().hex[:22]
        fmt = subprocess.run(
            [java, *log_opts, "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", cluster_id, "-c", str(props), "--ignore-formatted"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        if fmt.returncode != 0:
            sys.stderr.write(fmt.stdout + fmt.stderr)
            sys.exit("kafka-local: formatting KRaft storage failed")
    log = open(data / "broker.log", "ab")  # noqa: SIM115 - handed to the child process
    heap = os.environ.get("SENTRYML_KAFKA_HEAP", "-Xmx512m")
    proc = subprocess.Popen(
        [java, heap, "-XX:+UseSerialGC", *log_opts, "-cp", classpath, "kafka.Kafka", str(props)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    (data / "broker.pid").write_text(str(proc.pid))
    (data / "bootstrap").write_text(bootstrap)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if api_versions_ok("127.0.0.1", port, timeout=1.0):
            print(f"kafka-local: broker ready at {bootstrap} (pid {proc.pid})", flush=True)
            return bootstrap
        time.sleep(0.3)
    tail = (data / "broker.log").read_text(errors="replace")[-4000:]
    sys.stderr.write(f"--- tail of {data / 'broker.log'} ---\n{tail}\n")
    stop(data)
    sys.exit(f"kafka-local: broker did not become ready on {bootstrap} within {timeout:.0f}s")


def stop(data: Path) -> None:
    pid = _pid(data)
    if pid is None:
        print("kafka-local: no broker running")
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _pid(data) is not None:
        time.sleep(0.2)
    if _pid(data) is not None:
        os.killpg(pid, signal.SIGKILL)
    (data / "broker.pid").unlink(missing_ok=True)
    print(f"kafka-local: stopped broker pid {pid}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kafka-local", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["fetch", "start", "stop", "status"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", 9092)))
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("KAFKA_DIR", REPO_ROOT / ".sentryml" / "kafka")),
        help="data folder: KRaft storage, pid file and broker.log",
    )
    parser.add_argument("--sasl", action="store_true", help="SASL/PLAIN listener instead")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    data = args.dir.resolve()
    if args.command == "fetch":
        print(f"kafka-local: jars in {fetch()}")
    elif args.command == "start":
        start(data, args.port, args.sasl, args.timeout)
    elif args.command == "stop":
        stop(data)
    else:
        pid = _pid(data)
        bootstrap = (data / "bootstrap").read_text() if (data / "bootstrap").exists() else "-"
        up = pid is not None and api_versions_ok(*_split(bootstrap))
        print(f"kafka-local: {'running' if up else 'stopped'} pid={pid} bootstrap={bootstrap}")
        sys.exit(0 if up else 1)


if __name__ == "__main__":
    main()
