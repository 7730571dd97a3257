"""helm/oidc-gateway: schema, lint and rendering with Helm's own Go SDK (helm-python-sdk), no cluster.

Every example values file validates against values.schema.json (jsonschema and Helm agree), lints
clean and renders; the rendered manifests are checked for what the issue asks (probes, security
context, secrets as files, optional objects), and the rendered config.yaml plus the secret files
must load with the gateway's own load_settings. The sidecar helper is rendered inside the example
app chart, as an app chart would use it.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from gateway.config import load_settings
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "oidc-gateway"
EXAMPLES = CHART / "examples"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
APP_CHART = EXAMPLES / "sidecar-app"
SECRETS = {"clientSecret": "client-secret-value-0123456789", "cookieSecret": "c" * 40}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def example(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def schema_errors(values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def render(values: dict[str, Any], *, chart: Path = CHART, name: str = "gw") -> dict[str, list[dict[str, Any]]]:
    """{kind: [objects]} of the rendered manifests (NOTES.txt under "NOTES")."""
    with helm.Chart.load(chart) as loaded:
        files = loaded.render(values, name=name, namespace="apps")
    objects: dict[str, list[dict[str, Any]]] = {}
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            objects["NOTES"] = [{"text": text}]
            continue
        for document in yaml.safe_load_all(text):
            if document:
                objects.setdefault(document["kind"], []).append(document)
    return objects


def one(objects: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    (found,) = objects[kind]
    return found


def write_mounted_files(objects: dict[str, list[dict[str, Any]]], volume: dict[str, Any], into: Path,
                        secret_data: dict[str, str] | None = None) -> Path:
    """Lay out the projected volume as the kubelet would: config.yaml and secrets/* under one dir."""
    config_maps = {c["metadata"]["name"]: c["data"] for c in objects.get("ConfigMap", [])}
    secrets = {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
               for s in objects.get("Secret", [])}
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            data = config_maps[source["configMap"]["name"]]
        else:
            data = secrets.get(source["secret"]["name"], secret_data or {})
        for item in next(iter(source.values()))["items"]:
            target = into / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])
    return into / "config.yaml"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_values_file_matches_the_schema(path: Path) -> None:
    values = merged(DEFAULTS, example(path))
    if not values["secrets"]["existingSecret"]:
        values = merged(values, {"secrets": SECRETS}) if not values["secrets"]["cookieSecret"] else values
    assert schema_errors(values) == []


def test_the_app_charts_values_for_the_dependency_match_the_schema() -> None:
    values = merged(DEFAULTS, merged(example(APP_CHART / "values.yaml")["oidc-gateway"], {"secrets": SECRETS}))
    assert schema_errors(values) == []


@pytest.mark.parametrize("change, where", [
    ({"mode": "both"}, "mode"),
    ({"config": {"oidc": {"client_secret": "inline"}}}, "config/oidc"),
    ({"config": {"session": {"cookie_secret": "x" * 40}}}, "config/session"),
    ({"config": {"listen": "0.0.0.0:80"}}, "config"),
    ({"securityContext": {"readOnlyRootFilesystem": False}}, "securityContext/readOnlyRootFilesystem"),
    ({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, "securityContext/capabilities/drop"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "podSecurityContext/runAsNonRoot"),
    ({"port": 80}, "port"),
    ({"config": {"upstreams": []}}, ""),
    ({"secrets": {"cookieSecret": "too-short"}}, ""),
    ({"replicas": 3}, ""),
])
def test_the_schema_refuses_unsafe_or_mistyped_values(change: dict[str, Any], where: str) -> None:
    values = merged(merged(DEFAULTS, example(EXAMPLES / "authing.yaml")), change)
    errors = schema_errors(values)
    assert any(e.startswith(f"{where}:") or (not where and e) for e in errors), errors
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)  # Helm itself refuses it too


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_lints_without_errors_or_warnings(path: Path) -> None:
    values = merged(example(path), {"secrets": SECRETS}) if not example(path)["secrets"].get("existingSecret") \
        else example(path)
    report = helm.lint(CHART, values, strict=False)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_standalone_renders_every_object_hardened_and_a_config_the_gateway_loads(tmp_path: Path) -> None:
    objects = render(example(EXAMPLES / "standalone.yaml"))
    assert {"Deployment", "Service", "ConfigMap", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ServiceMonitor", "ServiceAccount"} <= objects.keys()
    assert "Secret" not in objects  # existingSecret
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/oidc-gateway:0.1.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    hardening = container["securityContext"]
    assert hardening["readOnlyRootFilesystem"] is True and hardening["allowPrivilegeEscalation"] is False
    assert hardening["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/oidc-gateway", "/tmp"}
    assert pod["terminationGracePeriodSeconds"] > 25 + 5  # shutdown_timeout + preStop sleep
    service = one(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == 4180
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["path"] == "/metrics"
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert one(objects, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == \
        service["metadata"]["name"]

    volume = next(v for v in pod["volumes"] if v["name"] == "oidc-gateway-config")
    config = write_mounted_files(objects, volume, tmp_path / "etc",
                                 {"client-secret": "from-existing-secret", "cookie-secret": "k" * 40})
    settings = load_settings(config, environ={})
    assert settings.listen == "0.0.0.0:4180" and settings.oidc.client_secret is not None
    assert settings.oidc.client_secret.get_secret_value() == "from-existing-secret"
    assert settings.session.redis_target is not None and settings.session.redis_target.mode == "sentinel"
    assert [u.path for u in settings.upstreams] == ["/", "/api/"]


def test_inline_secrets_become_a_secret_mounted_as_files_never_config(tmp_path: Path) -> None:
    values = example(EXAMPLES / "authing.yaml")
    objects = render(values)
    secret = one(objects, "Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"client-secret": values["secrets"]["clientSecret"],
                       "cookie-secret": values["secrets"]["cookieSecret"]}
    config_text = one(objects, "ConfigMap")["data"]["config.yaml"]
    assert values["secrets"]["clientSecret"] not in config_text
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "oidc-gateway-config")
    settings = load_settings(write_mounted_files(objects, volume, tmp_path / "etc"), environ={})
    assert settings.oidc.id_token_signing_algs == ["HS256"]
    assert settings.session.cookie_secret.get_secret_value() == values["secrets"]["cookieSecret"]
    assert "replicas" in one(objects, "Deployment")["spec"] and "HorizontalPodAutoscaler" not in objects
    assert "https://app.example.com/oauth2/callback" in one(objects, "NOTES")["text"]


def test_a_config_change_rolls_the_pods() -> None:
    values = example(EXAMPLES / "authing.yaml")
    before = one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    changed = merged(values, {"config": {"log_level": "debug"}})
    after = one(render(changed), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert before != after


def test_a_public_client_mounts_no_client_secret(tmp_path: Path) -> None:
    values = merged(example(EXAMPLES / "authing.yaml"),
                    {"config": {"oidc": {"token_endpoint_auth_method": "none", "id_token_signing_algs": ["RS256"]}},
                     "secrets": {"clientSecret": ""}})
    objects = render(values)
    assert "client-secret" not in one(objects, "Secret")["data"]
    assert "client_secret" not in one(objects, "ConfigMap")["data"]["config.yaml"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "oidc-gateway-config")
    assert load_settings(write_mounted_files(objects, volume, tmp_path / "etc"), environ={}).oidc.client_secret is None


def test_standalone_without_upstreams_does_not_render() -> None:
    values = merged(example(EXAMPLES / "authing.yaml"), {"config": {"upstreams": []}})
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError):
        chart.render(values, name="gw")


def test_sidecar_mode_renders_config_and_a_service_to_the_gateway_port_only() -> None:
    objects = render(example(EXAMPLES / "sidecar.yaml"))
    assert "Deployment" not in objects and "HorizontalPodAutoscaler" not in objects
    service = one(objects, "Service")
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "my-app"}
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 4180, "protocol": "TCP"}]
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    assert config["upstreams"] == [{"path": "/", "url": "http://127.0.0.1:8080"}]  # the app, on localhost
    assert config["session"]["redis_password_file"] == "secrets/redis_password"


@pytest.fixture
def app_chart(tmp_path: Path) -> Iterator[Path]:
    """The example app chart with this chart vendored as its dependency (what `helm dependency update` does)."""
    target = tmp_path / "sidecar-app"
    shutil.copytree(APP_CHART, target)
    shutil.copytree(CHART, target / "charts" / "oidc-gateway", ignore=shutil.ignore_patterns("examples"))
    yield target


def test_the_sidecar_helper_adds_the_gateway_to_an_apps_pod(app_chart: Path, tmp_path: Path) -> None:
    objects = render({"oidc-gateway": {"secrets": SECRETS}}, chart=app_chart, name="shop")
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    gateway, app = pod["containers"]
    assert gateway["name"] == "oidc-gateway" and app["name"] == "app"
    assert gateway["image"] == "registry.example.com/oidc-gateway:0.1.0"  # the subchart's appVersion
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = one(objects, "Service")  # rendered by the dependency, selecting the app's pods
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == gateway["ports"][0]["containerPort"] == 4180
    volume = next(v for v in pod["volumes"] if v["name"] == "oidc-gateway-config")
    assert volume["projected"]["sources"][0]["configMap"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]
    checksum = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/oidc-gateway-config"]
    assert len(checksum) == 64
    settings = load_settings(write_mounted_files(objects, volume, tmp_path / "etc"), environ={})
    assert settings.upstreams[0].url == "http://127.0.0.1:8080"


def test_the_sidecar_helper_needs_the_dependency(app_chart: Path) -> None:
    shutil.rmtree(app_chart / "charts")
    (app_chart / "Chart.yaml").write_text((app_chart / "Chart.yaml").read_text().split("dependencies:")[0])
    with helm.Chart.load(app_chart) as chart, pytest.raises(helm.HelmError):
        chart.render({}, name="shop")


def test_invalid_rendered_config_would_be_caught(tmp_path: Path) -> None:
    """The load_settings checks above are real: a chart that dropped the secret files would fail them."""
    objects = render(example(EXAMPLES / "authing.yaml"))
    (tmp_path / "config.yaml").write_text(one(objects, "ConfigMap")["data"]["config.yaml"])
    with pytest.raises(ConfigError):
        load_settings(tmp_path / "config.yaml", environ={})
