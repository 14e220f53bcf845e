"""deploy/: the Kubernetes manifests and the image agree with what the server reads.

Every YAML document under deploy/k8s is loaded (PyYAML, YAML 1.1 like Kubernetes' own parser, so
``defaultMode: 0400`` is octal in both) and checked for what issue 10 asks: the GitHub App key is a
Secret mounted as a read-only 0400 file named by GH_APP_PEM_PATH and never an env value; auth starts
permissive; the example worker pod projects a ``lobwife``-audience token (600 s) and holds no
secret; the NetworkPolicy admits only the fleet's pods and the monitoring namespace; every
``LOBWIFE_*`` / ``GH_APP_*`` name in deploy/ is one the server's sources read (a renamed variable
fails here); ports agree across the image, the Deployment, the Service, the probes and the policy.

The Deployment's environment is also handed to the server's own parser (``config.from_args``) with
its ConfigMaps and Secret written out as files where the kubelet would mount them, and to the real
server (a subprocess on 127.0.0.1), which must start and count an anonymous call in
``lobwife_auth_would_deny_total``. The worker pod's token script runs with bash and curl against a
real HTTP server on 127.0.0.1.

Not checked: the manifests against Kubernetes' API schemas. kubeconform is not installed, and
``kubectl apply --dry-run`` needs a cluster. kubectl's built-in kustomize renders the kustomization
offline; that test runs when kubectl is on PATH and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lobwife_server import config
from lobwife_server.auth.enforcer import Mode
from lobwife_server.auth.kubernetes import AUDIENCE
from lobwife_server.auth.policy import Role
from tests.conftest import start_server

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

Doc = dict[str, Any]


def load_docs() -> dict[str, list[Doc]]:
    out: dict[str, list[Doc]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        out[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return out


DOCS = load_docs()
ALL = [d for docs in DOCS.values() for d in docs if "kind" in d and d["kind"] != "Kustomization"]


def find(kind: str, name: str) -> Doc:
    found = [d for d in ALL if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs() -> Iterator[tuple[str, Doc]]:
    for d in ALL:
        if d["kind"] == "Pod":
            yield d["metadata"]["name"], d["spec"]
        elif d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


DEPLOYMENT = find("Deployment", "lobwife")
POD = DEPLOYMENT["spec"]["template"]["spec"]
(CONTAINER,) = [c for c in POD["containers"] if c["name"] == "lobwife"]
PORTS = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
KUSTOMIZATION = DOCS["kustomization.yaml"][0]
NAMESPACE: str = KUSTOMIZATION["namespace"]


def literal_env(container: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def volume(spec: Doc, name: str) -> Doc:
    (v,) = [v for v in spec["volumes"] if v["name"] == name]
    return dict(v)


def mount_for(container: Doc, volume_name: str) -> Doc:
    (m,) = [m for m in container["volumeMounts"] if m["name"] == volume_name]
    return dict(m)


# -- the files ------------------------------------------------------------------------------------


def test_every_document_names_its_kind_and_is_unique() -> None:
    seen: set[tuple[str, str]] = set()
    for d in ALL:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d
        key = (d["kind"], d["metadata"]["name"])
        assert key not in seen, f"{key} defined twice"
        seen.add(key)


def test_kustomization_applies_everything_but_the_key_placeholder_and_the_example() -> None:
    listed = set(KUSTOMIZATION["resources"])
    assert all((K8S / r).is_file() for r in listed)
    # `kubectl apply -k` must never overwrite the real App key with the placeholder, nor start a demo pod.
    assert listed == set(DOCS) - {"kustomization.yaml", "github-app-key.secret.yaml", "worker-pod.example.yaml"}
    assert not any(d["kind"] == "Secret" for r in listed for d in DOCS[r])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_renders_the_fleet_namespace() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    rendered = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(
        ["ServiceAccount", "PersistentVolumeClaim", "Deployment", "Service", "ConfigMap", "ConfigMap", "NetworkPolicy"]
    )
    assert {d["metadata"]["namespace"] for d in rendered} == {NAMESPACE}
    (dep,) = [d for d in rendered if d["kind"] == "Deployment"]
    assert volume(dep["spec"]["template"]["spec"], "github-app-key")["secret"]["defaultMode"] == 0o400


# -- the GitHub App key ---------------------------------------------------------------------------


def test_app_key_is_a_secret_mounted_read_only_0400_and_named_by_gh_app_pem_path() -> None:
    secret = find("Secret", "lobwife-github-app")
    assert "replace me" in secret["stringData"]["app.pem"]
    source = volume(POD, "github-app-key")["secret"]
    assert source["secretName"] == "lobwife-github-app"
    assert source["defaultMode"] == 0o400
    (item,) = source["items"]
    assert item["key"] in secret["stringData"]
    mount = mount_for(CONTAINER, "github-app-key")
    assert mount["readOnly"] is True
    assert literal_env(CONTAINER)["GH_APP_PEM_PATH"] == f"{mount['mountPath']}/{item['path']}"
    # A 0400 file of a Secret belongs to root: the non-root server reads it through fsGroup's group bit.
    assert POD["securityContext"]["runAsUser"] != 0
    assert POD["securityContext"]["fsGroup"] == POD["securityContext"]["runAsUser"]


def test_no_secret_reaches_any_environment() -> None:
    for name, spec in pod_specs():
        for c in spec["containers"]:
            env = c.get("env", [])
            assert not [e for e in env if "secretKeyRef" in e.get("valueFrom", {})], name
            assert not [e for e in c.get("envFrom", []) if "secretRef" in e], name
            assert "GH_APP_PEM" not in {e["name"] for e in env}, name


# -- auth -----------------------------------------------------------------------------------------


def test_auth_starts_permissive_with_the_steps_to_enforce() -> None:
    assert literal_env(CONTAINER)["LOBWIFE_AUTH"] == Mode.PERMISSIVE.value
    text = (K8S / "lobwife.yaml").read_text()
    assert "lobwife_auth_would_deny_total" in text and "set this to enforce" in text


def test_kubernetes_tokens_are_checked_against_the_api_servers_keys() -> None:
    env = literal_env(CONTAINER)
    assert env["LOBWIFE_K8S_JWKS_URL"] == "https://kubernetes.default.svc/openid/v1/jwks"
    assert env["LOBWIFE_K8S_CA_FILE"] == f"{SA_DIR}/ca.crt"
    assert env["LOBWIFE_K8S_JWKS_TOKEN_FILE"] == f"{SA_DIR}/token"
    # Those two files are the automounted service-account token: it must stay mounted.
    assert POD["serviceAccountName"] == "lobwife"
    assert POD.get("automountServiceAccountToken", True) is not False
    assert find("ServiceAccount", "lobwife").get("automountServiceAccountToken", True) is not False


# -- the server reads what the manifests say --------------------------------------------------------


def dockerfile_env() -> dict[str, str]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


#: ConfigMaps made from files with `kubectl create configmap` (the command is in lobwife.yaml's comments).
MADE_WITH_KUBECTL = {"lobwife-jobs": {"jobs.toml": DEPLOY / "jobs" / "fleet.toml"}}


def test_the_jobs_configmap_command_names_the_fleets_jobs_file() -> None:
    text = (K8S / "lobwife.yaml").read_text()
    assert "create configmap lobwife-jobs --from-file=jobs.toml=deploy/jobs/fleet.toml" in " ".join(
        text.replace("#", " ").replace("\\\n", " ").split()
    )
    assert literal_env(CONTAINER)["LOBWIFE_JOBS_FILE"] == mount_for(CONTAINER, "jobs")["mountPath"] + "/jobs.toml"


def materialise(tmp_path: Path, secrets: dict[str, dict[str, bytes]]) -> dict[str, str]:
    """The environment the lobwife container starts with, the image's first, its volumes written under
    tmp_path as the kubelet would mount them (Secrets from ``secrets``), paths rewritten to match."""
    env = dockerfile_env()
    for e in CONTAINER["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = find("ConfigMap", ref["name"])["data"][ref["key"]]
    mounts: dict[str, Path] = {}
    for m in CONTAINER["volumeMounts"]:
        v, target = volume(POD, m["name"]), tmp_path / m["name"]
        target.mkdir()
        if "configMap" in v and v["configMap"]["name"] in MADE_WITH_KUBECTL:
            data = {k: f.read_bytes() for k, f in MADE_WITH_KUBECTL[v["configMap"]["name"]].items()}
        elif "configMap" in v:
            data = {k: s.encode() for k, s in find("ConfigMap", v["configMap"]["name"])["data"].items()}
        elif "secret" in v:
            data = secrets[v["secret"]["secretName"]]
        elif "projected" in v:
            data = {s["serviceAccountToken"]["path"]: b"a.projected.token" for s in v["projected"]["sources"]}
        else:
            data = {}
        items = (v.get("configMap") or v.get("secret") or {}).get("items")
        for key, path in ((i["key"], i["path"]) for i in items) if items else ((k, k) for k in data):
            (target / path).write_bytes(data[key])
        mounts[m["mountPath"]] = target
    for name, value in env.items():
        for mount_path, target in mounts.items():
            if value == mount_path or value.startswith(mount_path + "/"):
                env[name] = str(target) + value[len(mount_path) :]
    return env


def app_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def parse_config(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> config.Config:
    for name in list(os.environ):
        if name.startswith(("LOBWIFE_", "GH_APP_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return config.from_args(config.build_parser().parse_args([]))


def test_the_server_accepts_the_deployment_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = materialise(tmp_path, {"lobwife-github-app": {"app.pem": app_key()}})
    cfg = parse_config(env, monkeypatch)
    settings = find("ConfigMap", "lobwife-config")["data"]
    assert cfg.auth.mode is Mode.PERMISSIVE
    k8s = cfg.auth.kubernetes
    assert k8s is not None
    assert k8s.issuer == settings["LOBWIFE_K8S_ISSUER"]
    assert k8s.jwks_url == "https://kubernetes.default.svc/openid/v1/jwks" and k8s.jwks_file is None
    assert k8s.roles == {
        f"{NAMESPACE}/lobboss": Role.ADMIN,
        f"{NAMESPACE}/lobster": Role.TASK,
        f"{NAMESPACE}/lobwife": Role.SERVICE,
    }
    assert cfg.auth.signing_key_file is None  # the ring in the state volume, created on first start
    assert cfg.broker.github is not None
    assert cfg.broker.github.app_id == settings["GH_APP_ID"]
    assert cfg.broker.github.installation_id == int(settings["GH_APP_INSTALL_ID"])
    assert (cfg.grpc_port, cfg.http_port, cfg.host) == (PORTS["grpc"], PORTS["http"], "0.0.0.0")
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.jobs_file == tmp_path / "jobs" / "jobs.toml"


def test_the_placeholder_key_stops_the_server_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    placeholder = find("Secret", "lobwife-github-app")["stringData"]["app.pem"]
    env = materialise(tmp_path, {"lobwife-github-app": {"app.pem": placeholder.encode()}})
    with pytest.raises(config.ConfigError) as caught:
        parse_config(env, monkeypatch)
    assert "GH_APP_PEM_PATH" in str(caught.value)
    assert "replace me" not in str(caught.value)


def test_the_real_server_starts_with_it_and_counts_what_enforce_would_deny(tmp_path: Path) -> None:
    env = materialise(tmp_path, {"lobwife-github-app": {"app.pem": app_key()}})
    # Flags win over the environment: loopback and free ports, not 0.0.0.0 and the fixed ones; no fleet jobs.
    srv = start_server(tmp_path / "state", "--host", "127.0.0.1", env=env)
    try:
        with urllib.request.urlopen(f"{srv.http_url}/api/v1/tasks", timeout=10) as resp:
            assert resp.status == 200  # no credential: permissive lets it through...
        with urllib.request.urlopen(f"{srv.http_url}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        # ... and counts it, which is what the manifest tells operators to watch before enforce.
        counted = [
            line
            for line in metrics.splitlines()
            if line.startswith("lobwife_auth_would_deny_total{") and 'reason="missing"' in line
        ]
        assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1, metrics
        assert (tmp_path / "state" / "auth" / "signing-keys.json").is_file()
    finally:
        assert srv.terminate() == 0


def server_env_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "server" / "lobwife_server").rglob("*.py"):
        names.update(re.findall(r"[\"']((?:LOBWIFE|GH_APP)_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def test_every_variable_named_in_deploy_is_one_the_server_reads() -> None:
    known = server_env_names()
    assert {"LOBWIFE_AUTH", "GH_APP_PEM_PATH", "LOBWIFE_K8S_ROLE_MAP"} <= known
    assert "LOBWIFE_NO_SUCH_SETTING" not in known  # the search can come up empty
    used: set[str] = set()
    for path in [*K8S.glob("*.yaml"), DEPLOY / "Dockerfile"]:
        # Comments included: a renamed variable in the steps an operator follows is as wrong as in an env.
        used.update(re.findall(r"\b(?:LOBWIFE|GH_APP)_[A-Z0-9_]+\b", path.read_text()))
    assert used, "no variables found: the pattern is broken"
    assert sorted(used - known) == []


def test_ports_agree_everywhere() -> None:
    defaults = config.Config.__dataclass_fields__
    assert {"grpc": defaults["grpc_port"].default, "http": defaults["http_port"].default} == PORTS
    image = dockerfile_env()
    assert (int(image["LOBWIFE_GRPC_PORT"]), int(image["LOBWIFE_HTTP_PORT"])) == (PORTS["grpc"], PORTS["http"])
    expose = re.search(r"^EXPOSE (.+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert expose is not None and sorted(map(int, expose.group(1).split())) == sorted(PORTS.values())
    env = literal_env(CONTAINER)
    assert (int(env["LOBWIFE_GRPC_PORT"]), int(env["LOBWIFE_HTTP_PORT"])) == (PORTS["grpc"], PORTS["http"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert CONTAINER[probe]["grpc"]["port"] == PORTS["grpc"]
    annotations = DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == PORTS["http"]
    service = find("Service", "lobwife")
    assert service["spec"]["selector"] == DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(PORTS)
    policy_ports = {p["port"] for r in find("NetworkPolicy", "lobwife-ingress")["spec"]["ingress"] for p in r["ports"]}
    assert policy_ports <= set(PORTS.values())


# -- the example worker pod -------------------------------------------------------------------------

WORKER = find("Pod", "lobster-t42")
WORKER_SPEC = WORKER["spec"]
(WORKER_CONTAINER,) = WORKER_SPEC["containers"]
SCRIPTS = find("ConfigMap", "lobster-lobwife-client")["data"]


def test_worker_pod_projects_a_lobwife_token_for_600_seconds() -> None:
    (source,) = volume(WORKER_SPEC, "lobwife-token")["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["audience"] == AUDIENCE == "lobwife"
    assert token["expirationSeconds"] == 600
    mount = mount_for(WORKER_CONTAINER, "lobwife-token")
    assert mount["readOnly"] is True
    path = f"{mount['mountPath']}/{token['path']}"
    assert path == "/var/run/secrets/lobwife/lobwife-token"
    assert f"token_file=${{LOBSTER_TOKEN_FILE:-{path}}}" in SCRIPTS["lobwife-github-token"]


def test_worker_pod_holds_no_secret_and_no_api_server_token() -> None:
    assert WORKER_SPEC["automountServiceAccountToken"] is False
    assert not [v for v in WORKER_SPEC["volumes"] if "secret" in v]
    sources = [s for v in WORKER_SPEC["volumes"] for s in v.get("projected", {}).get("sources", [])]
    assert all(set(s) == {"serviceAccountToken"} for s in sources)
    assert not [e for e in WORKER_CONTAINER["env"] if "valueFrom" in e]


def test_worker_pod_reaches_the_lobwife_service_with_a_mapped_task_account() -> None:
    url = urlsplit(literal_env(WORKER_CONTAINER)["LOBWIFE_URL"])
    service = find("Service", "lobwife")
    (http,) = [p for p in service["spec"]["ports"] if p["name"] == "http"]
    assert url.hostname == f"lobwife.{NAMESPACE}.svc.cluster.local" and url.port == http["port"]
    assert WORKER["metadata"]["namespace"] == NAMESPACE
    role_map = find("ConfigMap", "lobwife-auth")["data"]["role-map.toml"]
    assert f'"{NAMESPACE}/{WORKER_SPEC["serviceAccountName"]}" = "task"' in role_map
    policy = find("NetworkPolicy", "lobwife-ingress")
    assert admits(policy, NAMESPACE, WORKER["metadata"]["labels"], PORTS["http"])


# -- the network policy ---------------------------------------------------------------------------


def selector_matches(selector: Doc, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def admits(policy: Doc, namespace: str, labels: dict[str, str], port: int) -> bool:
    """Whether the policy lets a pod of ``namespace`` with ``labels`` reach ``port`` (TCP), per the
    NetworkPolicy rules: a rule admits when a port and a peer match; a peer's two selectors must both."""
    for rule in policy["spec"].get("ingress") or []:
        ports = rule.get("ports")
        if ports and not any(p["port"] == port and p.get("protocol", "TCP") == "TCP" for p in ports):
            continue
        for peer in rule.get("from") or [{"namespaceSelector": {}}]:  # no `from`: everyone
            ns_selector = peer.get("namespaceSelector")
            in_namespace = (
                namespace == NAMESPACE
                if ns_selector is None
                else selector_matches(ns_selector, {"kubernetes.io/metadata.name": namespace})
            )
            if in_namespace and selector_matches(peer.get("podSelector") or {}, labels):
                return True
    return False


def test_network_policy_selects_lobwife_and_every_rule_is_narrow() -> None:
    policy = find("NetworkPolicy", "lobwife-ingress")
    spec = policy["spec"]
    assert selector_matches(spec["podSelector"], DEPLOYMENT["spec"]["template"]["metadata"]["labels"])
    assert not selector_matches(spec["podSelector"], {"app": "lobster"})
    assert spec["policyTypes"] == ["Ingress"]
    for rule in spec["ingress"]:
        # A rule without `from` or `ports` admits every source or every port.
        assert rule.get("from") and rule.get("ports"), rule
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            assert set(peer["namespaceSelector"]["matchLabels"]) == {"kubernetes.io/metadata.name"}


@pytest.mark.parametrize(
    ("namespace", "labels", "port", "allowed"),
    [
        (NAMESPACE, {"app": "lobboss"}, 50051, True),
        (NAMESPACE, {"app": "lobboss"}, 8081, True),
        (NAMESPACE, {"app": "lobster"}, 50051, True),
        (NAMESPACE, {"app": "lobster"}, 8081, True),
        (NAMESPACE, {"app": "lobboss"}, 22, False),
        (NAMESPACE, {"app": "dashboard"}, 8081, False),
        (NAMESPACE, {}, 50051, False),
        ("default", {"app": "lobster"}, 50051, False),
        ("monitoring", {"app": "prometheus"}, 8081, True),
        ("monitoring", {"app": "prometheus"}, 50051, False),
    ],
)
def test_network_policy_admits_only_the_fleet_and_the_scraper(
    namespace: str, labels: dict[str, str], port: int, allowed: bool
) -> None:
    assert admits(find("NetworkPolicy", "lobwife-ingress"), namespace, labels, port) is allowed


# -- the worker's scripts, run for real -------------------------------------------------------------


class FakeLobwife(ThreadingHTTPServer):
    """POST /api/token on 127.0.0.1: records each request, answers with ``status`` and ``reply``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.status = 200
        self.reply: Doc = {"token": "ghs_fromlobwife", "expires_at": "2030-01-01T00:00:00Z"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeLobwife

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        data = json.dumps(self.server.reply).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_lobwife() -> Iterator[FakeLobwife]:
    srv = FakeLobwife()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("needs bash and curl")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in SCRIPTS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o555)
    return bin_dir


def run(
    script: Path, fake: FakeLobwife, token_file: Path, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "LOBWIFE_URL": fake.url,
        "TASK_ID": "T42",
        "LOBSTER_TOKEN_FILE": str(token_file),
        **extra,
    }
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=30)


def test_token_script_sends_the_projected_token_and_rereads_it(
    scripts: Path, fake_lobwife: FakeLobwife, tmp_path: Path
) -> None:
    token_file = tmp_path / "lobwife-token"
    token_file.write_text("eyJ.first.sig")  # the kubelet writes no newline
    first = run(scripts / "lobwife-github-token", fake_lobwife, token_file)
    assert (first.returncode, first.stdout, first.stderr) == (0, "ghs_fromlobwife\n", "")
    token_file.write_text("eyJ.rotated.sig\n")  # the kubelet replaced it
    second = run(scripts / "lobwife-github-token", fake_lobwife, token_file)
    assert second.returncode == 0, second.stderr
    seen = [(m, p, h["Authorization"], h["Content-Type"], json.loads(b)) for m, p, h, b in fake_lobwife.requests]
    assert seen == [
        ("POST", "/api/token", "Bearer eyJ.first.sig", "application/json", {"task_id": "T42"}),
        ("POST", "/api/token", "Bearer eyJ.rotated.sig", "application/json", {"task_id": "T42"}),
    ]


def test_token_script_fails_with_lobwifes_reason_and_prints_no_token(
    scripts: Path, fake_lobwife: FakeLobwife, tmp_path: Path
) -> None:
    token_file = tmp_path / "lobwife-token"
    token_file.write_text("eyJ.x.sig")
    fake_lobwife.status = 403
    fake_lobwife.reply = {"code": 7, "message": "task T42 is not registered"}
    result = run(scripts / "lobwife-github-token", fake_lobwife, token_file)
    assert result.returncode == 1 and result.stdout == ""
    assert "task T42 is not registered" in result.stderr
    assert "eyJ.x.sig" not in result.stderr


def test_gh_wrapper_runs_gh_with_a_fresh_token(scripts: Path, fake_lobwife: FakeLobwife, tmp_path: Path) -> None:
    token_file = tmp_path / "lobwife-token"
    token_file.write_text("eyJ.x.sig")
    real_gh = tmp_path / "real-gh"
    real_gh.write_text('#!/bin/bash\nprintf "%s|%s\\n" "$GH_TOKEN" "$*"\n')
    real_gh.chmod(0o555)
    result = run(scripts / "gh", fake_lobwife, token_file, "pr", "list", LOBSTER_REAL_GH=str(real_gh))
    assert (result.returncode, result.stdout) == (0, "ghs_fromlobwife|pr list\n"), result.stderr
    assert len(fake_lobwife.requests) == 1
