"""The federation's keys and certificates, made and checked with ``cryptography``.

Layout of a PKI folder (``fl-server init``)::

    ca/ca.crt                    CA certificate (sites get a copy: it verifies the coordinator)
    ca/ca.key                    CA private key (0600; keep offline after init)
    server/server.crt            SuperLink TLS certificate, SANs = given names/IPs + 127.0.0.1,
    server/server.key              ::1, localhost (the SuperLink's own executor uses 127.0.0.1)
    sites/<site>/site.key        EC P-384 private key, OpenSSH format (0600): node authentication
    sites/<site>/site.pub        its public key, OpenSSH format (registered with the SuperLink)
    signing/model-signing.key    Ed25519 key that signs global checkpoints (0600)
    signing/model-signing.pub    its public key (sites and users verify checkpoints with it)

TLS is server-authenticated (Flower has no mTLS); a site proves who it is with its EC key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ConfigError
from common.files import write_atomic
from common.names import check_name, child

CURVE = ec.SECP384R1()
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class PkiPaths:
    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server" / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server" / "server.key"

    def site_dir(self, site: str) -> Path:
        return child(self.root / "sites", check_name(site), "site name")

    def site_key(self, site: str) -> Path:
        return self.site_dir(site) / "site.key"

    def site_pub(self, site: str) -> Path:
        return self.site_dir(site) / "site.pub"

    @property
    def signing_key(self) -> Path:
        return self.root / "signing" / "model-signing.key"

    @property
    def signing_pub(self) -> Path:
        return self.root / "signing" / "model-signing.pub"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "echofl federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(days: int = 3650) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(CURVE)
    name = _name("echofl federation CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *LOOPBACK]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hosts: list[str], days: int = 825
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """TLS certificate of the SuperLink for ``hosts`` (+ loopback), signed by the CA."""
    key = ec.generate_private_key(CURVE)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def make_site_keys(site: str) -> tuple[bytes, bytes]:
    """(private OpenSSH, public OpenSSH) of a fresh EC P-384 node key, as Flower expects."""
    key = ec.generate_private_key(CURVE)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + f" echofl-site-{site}\n".encode()


def make_signing_keys() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of a fresh Ed25519 checkpoint-signing key."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def init_pki(root: Path, hosts: list[str], sites: list[str], *, force: bool = False) -> PkiPaths:
    """Create the whole PKI folder. Refuses to overwrite an existing one unless ``force``."""
    paths = PkiPaths(root)
    if paths.ca_key.exists() and not force:
        raise ConfigError(
            paths.ca_key,
            "a PKI already exists here (use --force to replace it; "
            "every site would then need new keys and the new CA)",
        )
    ca_key, ca_cert = make_ca()
    write_atomic(paths.ca_key, _pem_key(ca_key), private=True)
    write_atomic(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    server_key, server_cert = make_server_cert(ca_key, ca_cert, hosts)
    write_atomic(paths.server_key, _pem_key(server_key), private=True)
    write_atomic(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    for site in sites:
        add_site_keys(paths, site, force=force)
    private, public = make_signing_keys()
    write_atomic(paths.signing_key, private, private=True)
    write_atomic(paths.signing_pub, public)
    return paths


def add_site_keys(paths: PkiPaths, site: str, *, force: bool = False) -> Path:
    """A new key pair for ``site`` (rotation: ``force`` replaces an existing pair)."""
    if paths.site_key(site).exists() and not force:
        raise ConfigError(paths.site_key(site), f"site {site} already has a key")
    private, public = make_site_keys(site)
    write_atomic(paths.site_key(site), private, private=True)
    write_atomic(paths.site_pub(site), public)
    return paths.site_pub(site)


# ---------------------------------------------------------------------------------------------
# Checks (a site checks its files before connecting; the coordinator before starting)


def load_certificate(path: Path, *, what: str = "certificate") -> x509.Certificate:
    """A PEM certificate that exists, parses and is valid now; else :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, f"{what} not found")
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise ConfigError(path, f"{what} is not a PEM X.509 certificate") from None
    now = _now()
    if cert.not_valid_after_utc < now:
        raise ConfigError(path, f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > now:
        raise ConfigError(path, f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    return cert


def check_ca_certificate(path: Path) -> x509.Certificate:
    cert = load_certificate(path, what="CA certificate")
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        raise ConfigError(
            path,
            "this certificate is not a CA certificate (BasicConstraints CA "
            "is not set): use the federation's ca.crt",
        )
    return cert


def check_signed_by(cert: x509.Certificate, ca: x509.Certificate, path: Path) -> None:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as exc:  # InvalidSignature has no message
        raise ConfigError(
            path, f"certificate is not signed by the given CA ({type(exc).__name__})"
        ) from None


def check_site_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The site's node-authentication key: an OpenSSH EC private key on a NIST curve."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "site private key not found")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(path, f"not an OpenSSH private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(path, f"node keys must be EC keys (P-384), got {type(key).__name__}")
    return key


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "checkpoint signing key not found")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(path, f"not a PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(path, "the checkpoint signing key must be Ed25519")
    return key


def load_verify_key(path: Path) -> ed25519.Ed25519PublicKey:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "checkpoint verification key (model-signing.pub) not found")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(path, f"not a PEM public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(path, "the checkpoint verification key must be Ed25519")
    return key
