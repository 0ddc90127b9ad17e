"""A real Kubernetes control plane on loopback for the `kube` tests: etcd, apiserver, controllers.

`make kube` (tools/kube/build.sh) builds the Kubernetes binaries once per machine into a cache
outside the checkout and installs etcd; these fixtures start them with self-signed serving
certificates, a static admin token, the RBAC authorizer and ServiceAccount signing keys, and
fail (never skip) when the binaries are missing. There is no scheduler and no kubelet: pods are
created and stay Pending.
"""
from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from trimtab.common.ports import LOOPBACK, free_port
from trimtab.common.process import log_tail, stop_all, wait_http_ok
from trimtab.common.prometheus import find_binary

KUBE_VERSION = "1.20.2"
ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "trimtab-test-admin"
SERVICE_CIDR = "10.96.0.0/24"


def kube_bin_dir() -> Path:
    """Where tools/kube/build.sh puts the binaries (keep the two in step)."""
    cache = os.environ.get("TRIMTAB_KUBE_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "trimtab" / f"kube-{KUBE_VERSION}")
    return Path(cache) / "bin"


def require_kube_binary(name: str) -> str:
    """A built Kubernetes binary, or the test fails saying how to build it."""
    path = kube_bin_dir() / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} not found at {path}: run `make kube` (tools/kube/build.sh builds "
                    f"Kubernetes {KUBE_VERSION} from Debian's source, about 15 minutes once)")
    return str(path)


def require_etcd() -> str:
    path = find_binary("etcd")
    if path is None:
        pytest.fail("etcd not found: run `make kube` (it installs the Debian package etcd-server)")
    return path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr[-500:]}")


def make_certs(pki: Path) -> None:
    """A CA, a serving cert for 127.0.0.1 signed by it, and the ServiceAccount signing key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=trimtab-test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", "apiserver.key", "-out", "apiserver.csr", cwd=pki)
    (pki / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "apiserver.crt",
             cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig_text(server: str, ca_file: Path, token: str, user: str) -> str:
    """A kubeconfig with one cluster, one bearer-token user and the context joining them."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server,
                                                  "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
    })


@dataclass
class RealKube:
    """etcd and kube-apiserver (and on demand kube-controller-manager) under ``work``."""

    work: Path
    admin_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    port: int = 0
    start_s: float = 0.0                       # certificates + etcd + apiserver to /readyz
    apiserver_start_s: float = 0.0             # kube-apiserver launch to /readyz 200
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.work / "pki" / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (group system:masters)."""
        return self.work / "admin.kubeconfig"

    def write_kubeconfig(self, path: Path, token: str, user: str = "user") -> Path:
        path.write_text(kubeconfig_text(self.server, self.ca_file, token, user))
        return path

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=self.work)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str, lines: int = 40) -> str:
        return log_tail(self.work / f"{name}.log", lines)

    def start(self, timeout_s: float = 90.0) -> "RealKube":
        apiserver = require_kube_binary("kube-apiserver")
        etcd = require_etcd()
        t0 = time.monotonic()
        pki = self.work / "pki"
        make_certs(pki)
        (self.work / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        client_port, peer_port = free_port(), free_port()
        etcd_url = f"http://{LOOPBACK}:{client_port}"
        proc = self._spawn("etcd", [
            etcd, "--name", "test", "--data-dir", str(self.work / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://{LOOPBACK}:{peer_port}",
            "--initial-advertise-peer-urls", f"http://{LOOPBACK}:{peer_port}",
            "--initial-cluster", f"test=http://{LOOPBACK}:{peer_port}"])
        wait_http_ok(f"{etcd_url}/health", proc, timeout_s=30, log_path=self.work / "etcd.log",
                     what="etcd")
        self.port = free_port()
        t_api = time.monotonic()
        proc = self._spawn("kube-apiserver", [
            apiserver, f"--etcd-servers={etcd_url}",
            f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}",
            f"--secure-port={self.port}", "--insecure-port=0",
            f"--cert-dir={pki}", f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={self.work / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Loopback may not be the `kubernetes` Service's endpoint; nothing here needs one.
            "--endpoint-reconciler-type=none"])
        self.write_kubeconfig(self.kubeconfig, self.admin_token, ADMIN_USER)
        self._wait_ready(proc, timeout_s)
        self.apiserver_start_s = time.monotonic() - t_api
        self.start_s = time.monotonic() - t0
        return self

    def _wait_ready(self, proc: subprocess.Popen, timeout_s: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(f"{self.server}/readyz",
                                     headers={"Authorization": f"Bearer {self.admin_token}"})
        deadline_s = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline_s:
            if proc.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited ({proc.returncode}):\n"
                                   f"{self.log('kube-apiserver')}")
            try:
                with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"{exc.code} {exc.read()[-300:]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready within {timeout_s:g} s ({last}):\n"
                           f"{self.log('kube-apiserver')}")

    def start_controller_manager(self) -> None:
        """The deployment, replicaset and ServiceAccount-token controllers (no leader election)."""
        if "kube-controller-manager" in self.procs:
            return
        pki = self.work / "pki"
        self._spawn("kube-controller-manager", [
            require_kube_binary("kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false", "--port=0", "--secure-port=0",
            "--controllers=deployment,replicaset,serviceaccount,serviceaccount-token,"
            "namespace,garbagecollector",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}"])

    def kubectl(self, *args: str, input: str | None = None, kubeconfig: Path | None = None,
                check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """kubectl (on the machine) against this apiserver, as the admin unless told otherwise."""
        kubectl = find_binary("kubectl")
        if kubectl is None:
            pytest.fail("kubectl not found on PATH")
        proc = subprocess.run([kubectl, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=timeout_s)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def stop(self) -> None:
        stop_all(list(self.procs.values())[::-1])


@pytest.fixture(scope="session")
def real_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealKube]:
    """One control plane for the session; each test works in namespaces of its own."""
    kube = RealKube(tmp_path_factory.mktemp("kube"))
    try:
        kube.start()
        yield kube
    finally:
        kube.stop()


@pytest.fixture
def kube_admin(real_kube: RealKube):
    """The official client as the admin (system:masters), through the production factory."""
    from trimtab.controllers.shell.actuators.kubernetes import make_api_client

    api = make_api_client(str(real_kube.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def kube_controllers(real_kube: RealKube) -> RealKube:
    """The apiserver with kube-controller-manager running, so Deployments make ReplicaSets."""
    real_kube.start_controller_manager()
    return real_kube


def new_namespace(api, prefix: str) -> str:
    """A fresh namespace named ``prefix-<random>``."""
    from kubernetes import client

    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name)))
    return name


def wait_until(what: str, check, timeout_s: float = 30.0, poll_s: float = 0.2):
    """Poll ``check()`` until it returns something truthy; AssertionError naming ``what``."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        value = check()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")
