"""DICOM peers: who may associate with the listener (``FETALHC_ALLOWED_CALLERS``: calling AE titles and client
networks) and the ``dimse://AETITLE@host:port`` peers fetalhc calls (backfill sources, SR destinations)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AllowedCallers:
    """Calling AE titles and client networks allowed in; an empty part allows anything.

    Example:
        >>> callers = parse_allowed_callers("SCANNER1, 10.2.0.0/16")
        >>> callers.allows("SCANNER1", "10.2.3.4"), callers.allows("SCANNER1", "192.168.1.9")
        (True, False)
    """

    ae_titles: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @property
    def open(self) -> bool:
        """True when nothing is listed (everyone may associate)."""
        return not self.ae_titles and not self.networks

    def allows(self, ae_title: str, address: str) -> bool:
        """Whether a peer calling as ``ae_title`` from ``address`` (an IP) may associate."""
        if self.ae_titles and ae_title.strip() not in self.ae_titles:
            return False
        if self.networks:
            try:
                ip = ipaddress.ip_address(address.split("%")[0])
            except ValueError:
                return False
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            return any(ip in net for net in self.networks)
        return True


def parse_allowed_callers(text: str) -> AllowedCallers:
    """Parse a comma-separated list of AE titles and networks (``10.0.0.0/8``, ``192.168.4.20``, ``fd00::/8``).

    An entry that parses as an IP address or a network (CIDR) is a network; anything else is an AE
    title (1 to 16 characters, no backslash or control characters, PS3.5 6.2).

    Raises:
        ValueError: an entry is neither.
    """
    titles: set[str] = set()
    networks: list[Network] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if "/" in entry or not 0 < len(entry) <= 16 or "\\" in entry or any(ord(c) < 32 for c in entry):
            raise ValueError(f"FETALHC_ALLOWED_CALLERS: {entry[:40]!r} is neither a network (CIDR such as 10.2.0.0/16) "
                             "nor an AE title (1-16 characters)")
        titles.add(entry)
    return AllowedCallers(frozenset(titles), tuple(networks))


def parse_dimse_url(source: str) -> tuple[str, str, int]:
    """``dimse://AET@host:port`` (or ``AET@host:port``) as (AE title, host, port).

    Raises:
        ValueError: the text does not have that form.
    """
    text = source.removeprefix("dimse://")
    try:
        aet, address = text.split("@", 1)
        host, port = address.rsplit(":", 1)
        if not aet or not host or len(aet) > 16:
            raise ValueError
        return aet, host.strip("[]"), int(port)
    except ValueError:
        raise ValueError(f"{source!r} is not a DIMSE peer; write it as dimse://AETITLE@host:port "
                         "(e.g. dimse://ORTHANC@pacs.local:4242)") from None
