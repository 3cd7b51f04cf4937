"""The one settings object: every variable parsed one way, errors that name the variable,
and the README's configuration table generated from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from miosa_operator import settings as settings_module
from miosa_operator.ingest.limits import IngestLimits
from miosa_operator.settings import Settings, SettingsError, markdown_table, variable_names

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIOSA_POLL_INTERVAL", "99")
    assert Settings.defaults().poll_interval == 2.0
    assert Settings.load().poll_interval == 99.0


def test_from_env_parses_every_kind_of_value() -> None:
    config = Settings.from_env(
        {
            "MIOSA_RELEASES_URI": "s3://releases/prefix/",
            "MIOSA_SOURCE_PREFIXES": " s3://uploads/{namespace}/ ,, file:///srv/uploads/ ",
            "MIOSA_MAX_FILE_BYTES": "1Mi",
            "MIOSA_MAX_TOTAL_BYTES": "3Gi",
            "MIOSA_MAX_COMPRESSION_RATIO": "50.5",
            "MIOSA_MAX_MEMBERS": "20",
            "MIOSA_KEEP_BUILD_LOGS": "no",
            "MIOSA_WEBHOOK": "off",
            "MIOSA_HEALTH_GATE_TIMEOUT": "",  # empty means unset
            "UNRELATED": "ignored",
        }
    )
    assert config.releases_uri == "s3://releases/prefix"
    assert config.source_prefixes == ("s3://uploads/{namespace}/", "file:///srv/uploads/")
    assert config.limits == IngestLimits(
        max_members=20, max_file_bytes=1 << 20, max_total_bytes=3 << 30, max_compression_ratio=50.5
    )
    assert (config.keep_build_logs, config.webhook_enabled, config.health_gate_timeout) == (False, False, 120.0)


@pytest.mark.parametrize("raw", ["on", "true", "1", "yes", "ON"])
def test_one_boolean_parser(raw: str) -> None:
    assert Settings.from_env({"MIOSA_KEEP_BUILD_LOGS": raw, "MIOSA_WEBHOOK": raw}).webhook_enabled is True


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("MIOSA_MAX_MEMBERS", "lots"),
        ("MIOSA_MAX_COMPRESSION_RATIO", "x"),
        ("MIOSA_MAX_COMPRESSION_RATIO", "0.5"),
        ("MIOSA_MAX_FILE_BYTES", "0"),
        ("MIOSA_MAX_FILE_BYTES", "12 parsecs"),
        ("MIOSA_POLL_INTERVAL", "-1"),
        ("MIOSA_WEBHOOK", "perhaps"),
        ("MIOSA_WEBHOOK_PORT", "70000"),
        ("MIOSA_S3_ADDRESSING_STYLE", "sideways"),
    ],
)
def test_errors_name_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: raw})


def test_s3_falls_back_to_boto3_variables_and_hides_secrets() -> None:
    config = Settings.from_env(
        {
            "MIOSA_S3_ENDPOINT": "http://minio:9000",
            "AWS_REGION": "eu-west-3",
            "MIOSA_S3_ACCESS_KEY_ID": "miosa-key",
            "AWS_ACCESS_KEY_ID": "aws-key",
            "AWS_SECRET_ACCESS_KEY": "aws-secret",
        }
    ).s3_config
    assert (config.endpoint_url, config.region, config.access_key_id) == ("http://minio:9000", "eu-west-3", "miosa-key")
    assert config.secret_access_key == "aws-secret" and config.addressing_style == "path"
    assert "aws-secret" not in repr(config) and "aws-secret" not in repr(
        Settings.from_env({"AWS_SECRET_ACCESS_KEY": "aws-secret"})
    )


def test_s3_is_wanted_only_when_configured() -> None:
    assert not Settings.defaults().s3_wanted
    assert Settings.from_env({"MIOSA_S3_ENDPOINT": "http://s3"}).s3_wanted
    assert Settings.from_env({"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token"}).s3_wanted


def test_misspelt_fields_are_errors_in_tests() -> None:
    with pytest.raises(SettingsError, match="poll_intervall"):
        Settings.defaults(poll_intervall=1)


def test_no_module_reads_the_environment_behind_the_settings_back() -> None:
    """Only settings.py reads os.environ (and kubectl's own variables: KUBECONFIG for the
    Kubernetes client and the plugin, the environment handed to kubeconfig exec plugins; the
    ingestion isolation removes secrets from the fork server's environment, reading none)."""
    package = Path(settings_module.__file__).parent
    readers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "os.environ" in path.read_text() or "getenv(" in path.read_text()
    )
    assert readers == ["ingest/isolation.py", "kube/client.py", "plugin/apiclient.py", "plugin/kubeconfig.py", "settings.py"]
    assert "KUBECONFIG" in (package / "kube" / "client.py").read_text()


def test_readme_table_is_generated_from_the_settings() -> None:
    text = README.read_text()
    start = text.index(settings_module.TABLE_START) + len(settings_module.TABLE_START) + 1
    end = text.index(settings_module.TABLE_END)
    assert text[start:end] == markdown_table(), "README configuration table is stale: python -m miosa_operator.settings"


def test_the_chart_sets_only_known_variables() -> None:
    chart = README.parent / "charts" / "miosa-operator" / "templates"
    known = set(variable_names())
    for template in chart.glob("*.yaml"):
        for name in re.findall(r"name: (MIOSA_\w+)", template.read_text()):
            assert name in known, f"{template.name} sets {name}, which no setting reads"
