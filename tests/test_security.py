"""Connecting with TLS (CA, client cert and key) and credentials, against a real TLS nats-server."""

import shutil
import subprocess
from pathlib import Path

import pytest

from nxs_mesh import ConfigError, ConnectError, Mesh, MeshConfig
from nxs_mesh.transport.server import NatsServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make test certificates")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=nxs-test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-extfile", "san.ext", "-out", f"{name}.pem", cwd=d)
    return d


@pytest.fixture
def tls_server(tmp_path, certs):
    conf = (
        "tls {\n"
        f'  cert_file: "{certs / "server.pem"}"\n  key_file: "{certs / "server.key"}"\n'
        f'  ca_file: "{certs / "ca.pem"}"\n  verify: true\n'
        "}\n"
        'authorization { token: "s3cret" }\n'
    )
    srv = NatsServer(store_dir=tmp_path / "nats", extra_conf=conf).start()
    yield srv
    srv.stop()


def _cfg(srv, certs, **kw) -> MeshConfig:
    base = dict(servers=(f"tls://127.0.0.1:{srv.port}",), instance_id="secure-node", tls_ca=str(certs / "ca.pem"),
                tls_cert=str(certs / "client.pem"), tls_key=str(certs / "client.key"), token="s3cret",
                connect_timeout=1.0)
    base.update(kw)
    return MeshConfig(**base)


async def test_tls_with_client_cert_and_token(tls_server, certs):
    async with Mesh(_cfg(tls_server, certs)) as mesh:
        ack = await mesh.publish("CHAT", "over tls", to="other")
        assert ack.seq == 1
        [rec] = [r async for r in mesh.tail("chat")]
        assert rec.envelope.content == "over tls"


async def test_wrong_token_is_a_connect_error(tls_server, certs):
    with pytest.raises(ConnectError):
        await Mesh(_cfg(tls_server, certs, token="wrong")).connect()


async def test_missing_client_cert_is_refused(tls_server, certs):
    with pytest.raises(ConnectError):
        await Mesh(_cfg(tls_server, certs, tls_cert=None, tls_key=None)).connect()


async def test_unreadable_tls_files_name_the_setting(tls_server, certs, tmp_path):
    with pytest.raises(ConfigError, match="tls"):
        await Mesh(_cfg(tls_server, certs, tls_ca=str(tmp_path / "missing.pem"))).connect()


async def test_nkey_seed_authentication(tmp_path):
    import os

    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "node.nk"
    seed_file.write_bytes(seed)
    conf = f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n'
    srv = NatsServer(store_dir=tmp_path / "nats", extra_conf=conf).start()
    try:
        cfg = MeshConfig(servers=(srv.url,), instance_id="nk-node", nkey_seed=str(seed_file), connect_timeout=1.0)
        async with Mesh(cfg) as mesh:
            assert (await mesh.publish("CHAT", "signed in", to="x")).seq == 1
        with pytest.raises(ConnectError):
            await Mesh(MeshConfig(servers=(srv.url,), instance_id="anon", connect_timeout=1.0)).connect()
    finally:
        srv.stop()
