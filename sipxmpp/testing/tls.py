"""
A tiny certificate authority for test servers, made with the openssl CLI.

Tests verify the XMPP server's certificate for real: the server presents a
leaf certificate issued by L{TestCA}, and clients are given the CA's
certificate as their C{ca_file}.  For negative tests, a second, untrusted CA
issues a certificate with the right name that must nevertheless be refused.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from sipxmpp.testing.process import findBinary, runCommand

# P-256 keys: generated in milliseconds, accepted by every TLS stack we use.
_KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_DAYS = "3650"


def _altName(name: str) -> str:
    # An address (a BOSH URL's https://127.0.0.1:PORT) is an IP entry.
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name}"


@dataclass(frozen=True)
class ServerCertificate:
    """
    A server's key and certificate in PEM files.

    @ivar certFile: the leaf certificate.
    @ivar keyFile: its private key (unencrypted).
    @ivar chainFile: key, leaf and issuer in one file (ejabberd's format).
    @ivar hostnames: the DNS names (and addresses) in the subjectAltName.
    """

    certFile: str
    keyFile: str
    chainFile: str
    hostnames: tuple[str, ...]


class TestCA:
    """
    A self-signed certificate authority kept in a folder.

    @ivar directory: where the CA's files are.
    @ivar caFile: the CA certificate (PEM): what clients trust.
    @ivar keyFile: the CA private key.
    """

    # Not a test case, whatever trial's or pytest's collectors think.
    __test__ = False

    def __init__(self, directory: str, commonName: str = "sipxmpp test CA") -> None:
        """
        Use the CA in C{directory}, creating it if it does not exist yet (so
        the dev stack keeps the CA clients already trust across restarts).
        """
        self.directory = os.path.abspath(directory)
        self.caFile = os.path.join(self.directory, "ca.pem")
        self.keyFile = os.path.join(self.directory, "ca.key")
        self.openssl = findBinary("openssl")
        if not (os.path.exists(self.caFile) and os.path.exists(self.keyFile)):
            self._create(commonName)

    def _create(self, commonName: str) -> None:
        os.makedirs(self.directory, exist_ok=True)
        runCommand(
            [
                self.openssl, "req", "-x509", *_KEY_ARGS,
                "-keyout", self.keyFile, "-out", self.caFile, "-days", _DAYS,
                "-subj", f"/CN={commonName}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-addext", "subjectKeyIdentifier=hash",
            ]
        )  # fmt: skip
        os.chmod(self.keyFile, 0o600)

    def issue(self, hostnames: list[str], directory: str | None = None,
              name: str | None = None) -> ServerCertificate:  # fmt: skip
        """
        Issue a server (and client) certificate for C{hostnames}.

        @param hostnames: DNS names for the subjectAltName; the first is also
            the subject's CN (XMPP verifies the domain against these).
        @param directory: where to write the files (default: the CA's).
        @param name: file name stem (default: the first host name).
        """
        if not hostnames:
            raise ValueError("a certificate needs at least one host name")
        directory = os.path.abspath(directory or self.directory)
        os.makedirs(directory, exist_ok=True)
        stem = os.path.join(directory, name or hostnames[0])
        keyFile, certFile = stem + ".key", stem + ".crt"
        csrFile, extFile = stem + ".csr", stem + ".ext"
        chainFile = stem + ".pem"
        with open(extFile, "w") as f:
            f.write(
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth,clientAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid\n"
                "subjectAltName=" + ",".join(_altName(h) for h in hostnames) + "\n"
            )
        runCommand(
            [
                self.openssl, "req", *_KEY_ARGS, "-keyout", keyFile,
                "-out", csrFile, "-subj", f"/CN={hostnames[0]}",
            ]
        )  # fmt: skip
        runCommand(
            [
                self.openssl, "x509", "-req", "-in", csrFile,
                "-CA", self.caFile, "-CAkey", self.keyFile, "-CAcreateserial",
                "-out", certFile, "-days", _DAYS, "-extfile", extFile,
            ]
        )  # fmt: skip
        os.chmod(keyFile, 0o600)
        with open(chainFile, "w") as out:
            for part in (keyFile, certFile, self.caFile):
                with open(part) as f:
                    out.write(f.read())
        os.chmod(chainFile, 0o600)
        for leftover in (csrFile, extFile):
            os.unlink(leftover)
        return ServerCertificate(certFile, keyFile, chainFile, tuple(hostnames))


def verifyCertificate(certFile: str, caFile: str, hostname: str | None = None) -> bool:
    """
    Tell whether openssl accepts C{certFile} as issued by the CA in
    C{caFile} (and valid for C{hostname} when given).
    """
    args = [findBinary("openssl"), "verify", "-CAfile", caFile]
    if hostname is not None:
        args += ["-verify_hostname", hostname]
    result = runCommand([*args, certFile], check=False)
    return result.returncode == 0
