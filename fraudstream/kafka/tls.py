"""A throw-away CA and broker certificate (PEM, via ``openssl``) for the local broker's SASL_SSL
listener."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from fraudstream.errors import BrokerError


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise BrokerError(
            "`openssl` is needed to generate the CA and certificate of the secure (SASL_SSL) "
            "listener, and it is not on PATH."
        )
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BrokerError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_tls_material(tls_dir: Path, host: str = "127.0.0.1", days: int = 30) -> Path:
    """A throw-away CA (``ca.crt``) and a broker certificate/key for ``host`` and localhost
    (``broker.crt``, unencrypted PKCS#8 ``broker.key``), all PEM. Returns the CA file."""
    shutil.rmtree(tls_dir, ignore_errors=True)
    tls_dir.mkdir(parents=True, mode=0o700)
    ca_key, ca_crt = tls_dir / "ca.key", tls_dir / "ca.crt"
    key, csr, crt = tls_dir / "broker.key", tls_dir / "broker.csr", tls_dir / "broker.crt"
    ext = tls_dir / "broker.ext"
    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(ca_key)
    )
    _openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", str(days),
        "-subj", "/CN=fraudstream local CA", "-out", str(ca_crt),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={host}", "-out", str(csr))
    alt = ["DNS:localhost", "IP:127.0.0.1"]
    if host not in ("127.0.0.1", "localhost"):
        alt.append(f"IP:{host}" if re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", host) else f"DNS:{host}")
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(alt)}\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-sha256", "-days", str(days), "-extfile", str(ext), "-out", str(crt),
    )  # fmt: skip
    for f in (ca_key, key):
        f.chmod(0o600)
    return ca_crt
