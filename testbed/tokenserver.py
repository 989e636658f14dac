"""A token server that behaves like ghcr.io's ``/token``, for the distribution registry.

* ``GET /token?service=...&scope=repository:<name>:pull[,push]`` (scope may repeat).
* Anonymous callers get pull tokens for public repositories.
* Repositories whose first path component is ``private`` need Basic ``user:token``;
  an anonymous or wrong caller gets 401, like ghcr.io.
* Wrong credentials get 401 whatever the repository.
* Push needs credentials. The answer is ``{"token": ...}`` with no expiry field.
* ``GET /_stats[?repo=NAME]`` (bed-only) answers the number of tokens issued (for one
  repository when asked), so tests can check caching.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

SERVICE = "twilight-testbed"
ISSUER = "twilight-testbed-token-issuer"
PRIVATE_NAMESPACE = "private"
TOKEN_LIFETIME_S = 300


def make_signing_material(workdir: Path) -> tuple[Path, Path]:
    """Write an RSA key and a self-signed certificate; return (key_path, cert_path)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = workdir / "token.key", workdir / "token.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The ``kid`` the distribution registry derives from a trusted certificate's key."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


class TokenServer:
    """Issues registry JWTs. ``users`` maps username to password (a PAT)."""

    def __init__(self, key_path: Path, users: dict[str, str], host: str = "127.0.0.1",
                 port: int = 5001) -> None:
        self._key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        self._kid = libtrust_key_id(self._key.public_key())  # type: ignore[arg-type]
        self._users = dict(users)
        self.host, self.port = host, port
        self.issued = 0
        self.refused = 0
        self.issued_by_repo: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://{self.host}:{self.port}/token"

    # -- decision -------------------------------------------------------------------
    def decide(self, auth_header: str | None, scopes: list[str]) -> tuple[int, dict]:
        """Return (status, body) for a token request; pure apart from counters."""
        user = ""
        if auth_header:
            kind, _, blob = auth_header.partition(" ")
            try:
                name, _, password = base64.b64decode(blob).decode().partition(":")
            except Exception:
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad header"}]}
            if kind.lower() != "basic" or self._users.get(name) != password:
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
            user = name
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            _, repo, actions = parts
            wanted = [a for a in actions.split(",") if a]
            private = repo.split("/", 1)[0] == PRIVATE_NAMESPACE
            if private and not user:
                return 401, {"errors": [{"code": "UNAUTHORIZED",
                                         "message": "authentication required"}]}
            granted = [a for a in wanted if a == "pull" or (user and a in ("push", "delete", "*"))]
            access.append({"type": "repository", "name": repo, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": ISSUER, "sub": user, "aud": SERVICE, "iat": now, "nbf": now - 5,
            "exp": now + TOKEN_LIFETIME_S, "jti": secrets.token_hex(8), "access": access,
        }
        token = jwt.encode(claims, self._key, algorithm="RS256",  # type: ignore[arg-type]
                           headers={"kid": self._kid, "typ": "JWT"})
        with self._lock:
            self.issued += 1
            for entry in access:
                name = entry["name"]
                self.issued_by_repo[name] = self.issued_by_repo.get(name, 0) + 1
        return 200, {"token": token}

    # -- serving --------------------------------------------------------------------
    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="twilight-testbed"')
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/_stats":
                    repo = parse_qs(url.query).get("repo", [""])[0]
                    body = {"issued": server.issued, "refused": server.refused}
                    if repo:  # per repository, so tests sharing the bed do not interfere
                        body["issued"] = server.issued_by_repo.get(repo, 0)
                    self._send(200, body)
                    return
                if url.path != "/token":
                    self._send(404, {"errors": [{"code": "NOT_FOUND"}]})
                    return
                query = parse_qs(url.query)
                scopes = [s for v in query.get("scope", []) for s in v.split(" ")]
                status, body = server.decide(self.headers.get("Authorization"), scopes)
                if status != 200:
                    with server._lock:
                        server.refused += 1
                self._send(status, body)

            def do_POST(self) -> None:  # OAuth2 form; docker falls back to GET on 404
                self._send(404, {"errors": [{"code": "NOT_FOUND"}]})

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True,
                         name="tokenserver").start()

    def serve_forever(self) -> None:
        self.start()
        assert self._httpd is not None
        threading.Event().wait()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
