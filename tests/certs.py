"""Certificates for tests: a throwaway CA (trustme) issuing service identities as URI and DNS SANs, the
way cert-manager or a service mesh issues them (trustme itself issues DNS names and addresses only)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from servicekit.tls import GrpcTls

TRUST_DOMAIN = "spiffe://boxcost.internal/ns/payments/sa"


def spiffe(service_account: str, namespace: str = "payments") -> str:
    return f"spiffe://boxcost.internal/ns/{namespace}/sa/{service_account}"


def issue(ca: trustme.CA, *names: str) -> tuple[bytes, bytes]:
    """A certificate (PEM) for `names` (URIs, IP addresses or DNS names), signed by `ca`, and its key."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        if "://" in name:
            sans.append(x509.UniformResourceIdentifier(name))
            continue
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "boxcost test identity")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def write_identity(folder: Path, label: str, ca: trustme.CA, *names: str) -> GrpcTls:
    """Files for one identity (certificate, key, the CA it trusts), as a pod mounts them; (re)written in place."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = issue(ca, *names)
    paths = {kind: folder / f"{label}.{kind}.pem" for kind in ("cert", "key", "ca")}
    paths["cert"].write_bytes(cert)
    paths["key"].write_bytes(key)
    paths["ca"].write_bytes(ca.cert_pem.bytes())
    return GrpcTls(str(paths["cert"]), str(paths["key"]), str(paths["ca"]))
