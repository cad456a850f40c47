"""A tiny authoritative DNS server on loopback (UDP), for tests of DNS-reading code.

    with DNSTestServer() as dns_server:
        dns_server.add("example.com", "TXT", "v=spf1 include:sendgrid.net ~all")
        dns_server.add("s1._domainkey.example.com", "CNAME", "s1.dkim.example.net")
        dns_server.add("s1.dkim.example.net", "TXT", "v=DKIM1; k=rsa; p=MIGf...")
        ...  # point the code at dns_server.address ("127.0.0.1", port)

It answers what was added: a name with records of the asked type gets them (a CNAME is
followed within the zone, the chain in the answer, as a recursive resolver gives it); a name
that exists without that type gets an empty NOERROR answer; any other name NXDOMAIN. TXT
values longer than 255 bytes are split into strings as DNS requires. ``queries`` lists the
(name, type) asked, in order. Built on dnspython's message API; one thread.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.TXT import TXT

TTL = 60


class DNSTestServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((host, 0))
        self._socket.settimeout(0.2)
        self.address: tuple[str, int] = self._socket.getsockname()[:2]
        self._records: dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]] = {}
        self._names: set[dns.name.Name] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dns-test-server", daemon=True)
        self.queries: list[tuple[str, str]] = []

    @property
    def resolver_setting(self) -> str:
        """The address as ``GETFLUXLY_DNS_RESOLVER`` takes it (``127.0.0.1:PORT``)."""
        return f"{self.address[0]}:{self.address[1]}"

    def add(self, name: str, rdtype: str, value: str) -> None:
        """Add one record (``TXT`` values as plain text, unquoted)."""
        owner = dns.name.from_text(name)
        kind = dns.rdatatype.from_text(rdtype)
        if kind == dns.rdatatype.TXT:
            raw = value.encode()
            chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
            rdata: dns.rdata.Rdata = TXT(dns.rdataclass.IN, kind, chunks)
        else:
            rdata = dns.rdata.from_text(
                dns.rdataclass.IN, kind, value, origin=dns.name.root, relativize=False
            )
        with self._lock:
            self._records.setdefault((owner, kind), []).append(rdata)
            self._names.add(owner)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._names.clear()
            self.queries.clear()

    def start(self) -> DNSTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._socket.close()

    def __enter__(self) -> DNSTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
            except dns.exception.DNSException:  # not DNS: ignored, as servers do
                continue
            try:
                answer = self._answer(query).to_wire()
            except Exception:  # the test's records are wrong: say SERVFAIL
                failed = dns.message.make_response(query)
                failed.set_rcode(dns.rcode.SERVFAIL)
                answer = failed.to_wire()
            self._socket.sendto(answer, peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name, kind = question.name, question.rdtype
        with self._lock:
            self.queries.append((name.to_text(omit_final_dot=True), dns.rdatatype.to_text(kind)))
            for _ in range(8):  # follow CNAMEs within the zone
                found = self._records.get((name, kind))
                if found:
                    response.answer.append(_rrset(name, kind, found))
                    return response
                alias = self._records.get((name, dns.rdatatype.CNAME))
                if not alias or kind == dns.rdatatype.CNAME:
                    break
                response.answer.append(_rrset(name, dns.rdatatype.CNAME, alias))
                name = alias[0].target  # type: ignore[attr-defined]
            if name not in self._names:
                response.set_rcode(dns.rcode.NXDOMAIN)
        return response


def _rrset(
    name: dns.name.Name, kind: dns.rdatatype.RdataType, rdatas: list[dns.rdata.Rdata]
) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, kind)
    for rdata in rdatas:
        rrset.add(rdata, TTL)
    return rrset
