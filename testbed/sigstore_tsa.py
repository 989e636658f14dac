"""The RFC 3161 timestamp authority of the local Sigstore stand-in: Debian's real
``openssl ts`` (a query, then a reply signed with a TSA certificate the stand-in made),
so the timestamps sigstore-python checks come from a TSA implementation, not from code
written for the test. The why is in ``testbed/sigstore_standin.py``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from testbed.sigstore_pki import Authority
from testbed.util import BedError

POLICY = "1.3.6.1.4.1.57264.99.1"  # a policy OID of the stand-in's own: RFC 3161 needs one
_CONFIG = """\
[ tsa ]
default_tsa = standin
[ standin ]
serial = {dir}/serial
crypto_device = builtin
signer_cert = {dir}/tsa.pem
certs = {dir}/chain.pem
signer_key = {dir}/tsa.key
signer_digest = sha256
default_policy = {policy}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise BedError("openssl is not installed: the stand-in's TSA is `openssl ts`")
    return path


def write_tsa(directory: Path, root: Authority, tsa: Authority) -> Path:
    """The files ``openssl ts -reply`` reads: its config, the TSA key and certificate, the
    chain it embeds and its serial counter. Returns the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tsa.key").write_bytes(tsa.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (directory / "tsa.key").chmod(0o600)
    (directory / "tsa.pem").write_bytes(tsa.cert.public_bytes(serialization.Encoding.PEM))
    (directory / "chain.pem").write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    (directory / "serial").write_text("01\n")
    config = directory / "ts.cnf"
    config.write_text(_CONFIG.format(dir=directory, policy=POLICY))
    return config


def _run(*args: str) -> None:
    done = subprocess.run([openssl(), "ts", *args], capture_output=True, text=True,
                          check=False, timeout=30)
    if done.returncode != 0:
        raise BedError(f"openssl ts {args[0]} failed: {done.stderr.strip()}")


def timestamp(config: Path, message: bytes) -> bytes:
    """A DER TimeStampResp over SHA-256(``message``), with the TSA's certificate in it (the
    query asks for it, as sigstore's clients do), signed now by ``openssl ts -reply``."""
    with tempfile.TemporaryDirectory(prefix="standin-ts-") as tmp:
        query, reply = Path(tmp) / "query.tsq", Path(tmp) / "reply.tsr"
        _run("-query", "-digest", hashlib.sha256(message).hexdigest(), "-sha256", "-cert",
             "-out", str(query))
        _run("-reply", "-config", str(config), "-queryfile", str(query), "-out", str(reply))
        return reply.read_bytes()
