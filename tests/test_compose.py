"""docker-compose.yml and the Dockerfile, held against the settings the service reads.

Nothing here needs Docker: the files are parsed and compared with
`services.runtime.settings.Settings`, so a renamed setting or a moved port fails here rather than
in someone's `docker compose up`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.runtime.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_PATH = REPO_ROOT / "docker-compose.yml"
DOCKERFILE_PATH = REPO_ROOT / "Dockerfile"

APP_SERVICES = ("migrate", "giftledger")
HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"
POSTGRES_DEFAULT_PORT = 5432
HEALTHZ_URL = re.compile(r"http://localhost:(\d+)/healthz")
EXACT_VERSION_TAG = re.compile(r"^\d+\.\d+\.\d+")
INIT_DIR = "/docker-entrypoint-initdb.d"

Service = dict[str, Any]


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    document = yaml.safe_load(COMPOSE_PATH.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    found = document["services"]
    assert isinstance(found, dict)
    return found


def environment(service: Service) -> dict[str, str]:
    variables = service.get("environment", {})
    assert isinstance(variables, dict), "write `environment` as a mapping"
    for name, value in variables.items():
        assert isinstance(value, str), f"quote the value of {name}: compose wants strings"
    return variables


def image_tag(image: str) -> str:
    """The tag of `registry/name:tag` (a port in the registry part is not a tag)."""
    last_segment = image.rsplit("/", 1)[-1]
    return last_segment.partition(":")[2]


def one_shot_services(services: dict[str, Service]) -> set[str]:
    """Services that others wait for to finish, not to become healthy."""
    return {
        name
        for service in services.values()
        for name, dependency in service.get("depends_on", {}).items()
        if dependency.get("condition") == COMPLETED
    }


def healthcheck_command(service: Service) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def test_app_environment_names_are_settings_fields(services: dict[str, Service]) -> None:
    assert Settings.model_config.get("env_prefix", "") == ""
    assert Settings.model_config.get("case_sensitive", False) is False
    for service_name in APP_SERVICES:
        unknown = [
            name
            for name in environment(services[service_name])
            if name.lower() not in Settings.model_fields
        ]
        assert unknown == [], f"{service_name} sets variables Settings does not read"


def test_app_environment_satisfies_the_settings_bounds(services: dict[str, Service]) -> None:
    for service_name in APP_SERVICES:
        values: dict[str, Any] = {
            name.lower(): value for name, value in environment(services[service_name]).items()
        }

        settings = Settings(_env_file=None, **values)

        assert settings.database_url is not None
        assert settings.kafka_bootstrap_servers is not None


def test_database_url_points_at_the_postgres_service(services: dict[str, Service]) -> None:
    postgres = environment(services["postgres"])
    for service_name in APP_SERVICES:
        url = urlsplit(environment(services[service_name])["DATABASE_URL"])

        assert url.scheme == "postgresql+asyncpg"
        assert url.hostname == "postgres"
        assert services["postgres"]["image"].startswith("postgres:")
        assert url.port == int(postgres.get("PGPORT", POSTGRES_DEFAULT_PORT))
        assert (url.username, url.password) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
        )
        assert url.path == f"/{postgres['POSTGRES_DB']}"


def test_the_services_connect_as_a_login_of_their_own(services: dict[str, Service]) -> None:
    """`giftledger run` connects as the login the postgres image's init script makes: one that
    owns nothing and is only a member of the two roles, never the schema's owner."""
    postgres = environment(services["postgres"])
    owner = urlsplit(environment(services["giftledger"])["DATABASE_URL"])
    login = urlsplit(environment(services["giftledger"])["SERVICES_DATABASE_URL"])
    assert (login.scheme, login.hostname, login.port, login.path) == (
        owner.scheme,
        owner.hostname,
        owner.port,
        owner.path,
    )
    assert login.username not in (None, postgres["POSTGRES_USER"])
    assert login.password

    mounts = [str(volume).split(":") for volume in services["postgres"]["volumes"]]
    init_dirs = [host for host, container, *_ in mounts if container == INIT_DIR]
    assert init_dirs == ["./deploy/postgres-init"]
    scripts = sorted((REPO_ROOT / init_dirs[0]).glob("*.sql"))
    assert [script.name for script in scripts] == ["10-services-login.sql"]
    statements = [
        " ".join(statement.split())
        for statement in "".join(
            line
            for line in scripts[0].read_text(encoding="utf-8").splitlines(keepends=True)
            if not line.lstrip().startswith("--")
        ).split(";")
        if statement.strip()
    ]
    assert statements == [
        "CREATE ROLE giftledger_reader NOLOGIN",
        "CREATE ROLE giftledger_writer NOLOGIN",
        f"CREATE ROLE {login.username} LOGIN PASSWORD '{login.password}'"
        " IN ROLE giftledger_writer, giftledger_reader",
    ]
    assert Settings.model_fields["database_writer_role"].default == "giftledger_writer"
    assert Settings.model_fields["api_database_role"].default == "giftledger_reader"


def test_kafka_bootstrap_points_at_a_kafka_listener(services: dict[str, Service]) -> None:
    kafka = environment(services["kafka"])
    advertised: dict[str, str] = {}  # address -> listener name
    for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","):
        listener_name, _, address = listener.partition("://")
        advertised[address] = listener_name
    listening_ports = {
        listener.split("://", 1)[0]: listener.rsplit(":", 1)[1]
        for listener in kafka["KAFKA_LISTENERS"].split(",")
    }
    for service_name in APP_SERVICES:
        bootstrap = environment(services[service_name])["KAFKA_BOOTSTRAP_SERVERS"]
        host, _, port = bootstrap.rpartition(":")

        assert host == "kafka"
        assert services["kafka"]["image"].startswith("apache/kafka:")
        assert bootstrap in advertised, "the bootstrap address must be an advertised listener"
        assert listening_ports[advertised[bootstrap]] == port


def test_images_are_pinned(services: dict[str, Service]) -> None:
    for name, service in services.items():
        image = service["image"]
        tag = image_tag(image)

        assert "@sha256:" in image or (tag and tag != "latest" and tag[0].isdigit()), name


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Service]) -> None:
    one_shot = one_shot_services(services)
    for name, service in services.items():
        if name in one_shot:
            assert service.get("restart") == "no", f"{name} runs once and must not restart"
        else:
            assert healthcheck_command(service), f"{name} runs for long and needs a healthcheck"


def test_depends_on_waits_for_health_or_completion(services: dict[str, Service]) -> None:
    one_shot = one_shot_services(services)
    for name, service in services.items():
        dependencies = service.get("depends_on", {})
        assert isinstance(dependencies, dict), f"{name}: give each dependency a condition"
        for dependency_name, dependency in dependencies.items():
            condition = dependency["condition"]
            assert condition in (HEALTHY, COMPLETED), f"{name} -> {dependency_name}"
            if condition == HEALTHY:
                assert "healthcheck" in services[dependency_name], dependency_name
    assert one_shot == {"migrate"}
    assert services["giftledger"]["depends_on"] == {
        "kafka": {"condition": HEALTHY},
        "postgres": {"condition": HEALTHY},
        "migrate": {"condition": COMPLETED},
    }


def test_kafka_runs_in_kraft_mode_without_zookeeper(services: dict[str, Service]) -> None:
    kafka = environment(services["kafka"])
    node_id = kafka["KAFKA_NODE_ID"]

    assert not [name for name in services if "zookeeper" in name.lower()]
    assert not [name for name in kafka if "ZOOKEEPER" in name]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node_id}@kafka:")
    assert kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in (
        healthcheck_command(services["kafka"])
    )


def test_published_api_port_is_the_one_the_healthcheck_uses(services: dict[str, Service]) -> None:
    giftledger = services["giftledger"]
    match = HEALTHZ_URL.search(healthcheck_command(giftledger))
    published = [str(mapping).split(":") for mapping in giftledger["ports"]]

    assert giftledger["command"][:2] == ["run", "--api"]
    assert match is not None
    assert published == [[match.group(1), match.group(1)]]
    assert "pg_isready" in healthcheck_command(services["postgres"])


def test_dockerfile_base_image_is_pinned_and_entrypoint_is_giftledger() -> None:
    instructions = [
        line.split(maxsplit=1)
        for line in DOCKERFILE_PATH.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#") and not line.startswith(" ")
    ]
    base_images = [arguments.split()[0] for keyword, arguments in instructions if keyword == "FROM"]
    entrypoints = [arguments for keyword, arguments in instructions if keyword == "ENTRYPOINT"]

    assert len(base_images) == 1
    assert base_images[0].startswith("python:3.11")
    assert EXACT_VERSION_TAG.match(image_tag(base_images[0])), "pin the patch release"
    assert [json.loads(entrypoint) for entrypoint in entrypoints] == [["giftledger"]]
