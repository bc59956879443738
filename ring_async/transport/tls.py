"""TLS material for servers and channels (PEM bytes), loaded from files with errors that name the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from ring_async.errors import ConfigError


def _read_pem(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"TLS {what} {path}: cannot read ({err.strerror})") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"TLS {what} {path}: not a PEM file")
    return data


@dataclass(frozen=True, repr=False)  # repr=False: never print a private key into a log
class ServerTls:
    """A server's certificate chain and key; with ``client_ca``, clients must present a certificate it signed (mTLS)."""

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(
        cls, certificate_chain: str | Path, private_key: str | Path, client_ca: str | Path | None = None
    ) -> "ServerTls":
        chain = _read_pem(certificate_chain, "certificate chain")
        key = _read_pem(private_key, "private key")
        assert chain is not None and key is not None
        return cls(chain, key, _read_pem(client_ca, "client CA"))

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True, repr=False)
class ClientTls:
    """What a channel trusts (``root_ca``; None: the system roots) and, for mTLS, the client's own certificate and key.

    ``server_name`` overrides the host name checked against the server certificate, for servers reached by an address
    their certificate does not name (an IP inside a cluster).
    """

    root_ca: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ConfigError("TLS client certificate and private key must be given together")

    @classmethod
    def from_files(
        cls,
        root_ca: str | Path | None = None,
        certificate_chain: str | Path | None = None,
        private_key: str | Path | None = None,
        server_name: str | None = None,
    ) -> "ClientTls":
        return cls(
            _read_pem(root_ca, "root CA"),
            _read_pem(certificate_chain, "certificate chain"),
            _read_pem(private_key, "private key"),
            server_name,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.root_ca, self.private_key, self.certificate_chain)
