"""Redis URLs: one node, Sentinel or Cluster, plain or TLS. Pure parsing: no I/O, no name resolution.

    redis://[user:password@]host[:port][/db][?options]                      one node (port 6379, db 0)
    unix://[user:password@]/path/to/redis.sock[?db=N&options]               a local socket
    redis+sentinel://[user:password@]host[:port][,host[:port]...]/service_name[/db][?options]
                                                                             sentinels (port 26379)
    redis+cluster://[user:password@]host[:port][,host[:port]...][/][?options]  startup nodes (port 6379)

`rediss`, `rediss+sentinel` and `rediss+cluster` are the same over TLS (to the sentinels as well).
User and password are percent-decoded and authenticate to the data nodes (the master, in Sentinel
mode); sentinels protected by their own password take the `sentinel_username`/`sentinel_password`
options. Options: `socket_timeout`, `socket_connect_timeout` (seconds), `db`; with TLS only
`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile` (paths), `ssl_cert_reqs` (required | optional | none)
and `ssl_check_hostname` (true | false). Anything else is rejected here, not when the first command
fails. Reasons never echo the URL or a part of it that may hold a secret.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

__all__ = ["RedisTarget", "has_hash_tag", "parse_redis_url"]

Mode = Literal["node", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis": ("node", False), "rediss": ("node", True), "unix": ("node", False),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
}
_SCHEME_LIST = "redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://"
_DEFAULT_PORT: dict[Mode, int] = {"node": 6379, "sentinel": 26379, "cluster": 6379}
_TLS_PATHS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = ("required", "optional", "none")
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_OPTIONS = ("db", "socket_timeout", "socket_connect_timeout", *_TLS_PATHS, "ssl_cert_reqs", "ssl_check_hostname",
            "sentinel_username", "sentinel_password")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Redis URL names; `hosts` are the node, the sentinels or the cluster's startup nodes."""

    mode: Mode
    tls: bool
    hosts: tuple[tuple[str, int], ...] = ()
    unix_path: str | None = None
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    socket_timeout: float | None = None
    socket_connect_timeout: float | None = None
    ssl: dict[str, str | bool] = field(default_factory=dict)  # redis-py ssl_* keyword arguments
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def has_hash_tag(key_prefix: str) -> bool:
    """Whether keys starting with this prefix hash by a Redis Cluster tag: a non-empty `{...}`."""
    start = key_prefix.find("{")
    return start >= 0 and key_prefix.find("}", start + 2) > start


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError("has a '[' without its ']' around an IPv6 host")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("has a bracketed host that is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise ValueError("has text after a bracketed IPv6 host; write [::1]:6379")
        port = rest[1:] if rest else ""
    else:
        host, _, port = text.partition(":")
        if ":" in port:
            raise ValueError("has an IPv6 host without brackets; write [::1]:6379")
    if not host or any(c.isspace() or c in "/?#{}" for c in host):
        raise ValueError("needs a host name or IP address for every node")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError("has an invalid port (1-65535)")
    return host, int(port) if port else default_port


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError("has a database that is not a number (e.g. /0)")
    return int(text)


def _positive_seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"option {name} must be a number of seconds") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"option {name} must be greater than zero")
    return value


def _options(query: str, mode: Mode, tls: bool) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in query.split("&") if query else ():
        name, eq, value = part.partition("=")
        if not eq:
            raise ValueError("has a malformed query string: write ?name=value&name=value")
        name, value = unquote(name), unquote(value)  # `+` stays a plus: passwords may contain it
        if name not in _OPTIONS:
            # The name is echoed (it came from the documentation's list or a typo of it), never a value.
            raise ValueError(f"has an unknown option {name[:40]!r}; supported: {', '.join(_OPTIONS)}")
        if name in options:
            raise ValueError(f"gives option {name} twice")
        if name.startswith("ssl_") and not tls:
            raise ValueError(f"option {name} needs TLS: use rediss://, rediss+sentinel:// or rediss+cluster://")
        if name.startswith("sentinel_") and mode != "sentinel":
            raise ValueError(f"option {name} is only for redis+sentinel:// URLs")
        if not value:
            raise ValueError(f"option {name} has no value")
        options[name] = value
    return options


def _ssl(options: dict[str, str]) -> dict[str, str | bool]:
    ssl: dict[str, str | bool] = {name: options[name] for name in _TLS_PATHS if name in options}
    if "ssl_keyfile" in ssl and "ssl_certfile" not in ssl:
        raise ValueError("option ssl_keyfile needs ssl_certfile (the client certificate) too")
    if "ssl_cert_reqs" in options:
        if options["ssl_cert_reqs"] not in _CERT_REQS:
            raise ValueError(f"option ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
        ssl["ssl_cert_reqs"] = options["ssl_cert_reqs"]
    if "ssl_check_hostname" in options:
        if options["ssl_check_hostname"].lower() not in _BOOLS:
            raise ValueError("option ssl_check_hostname must be true or false")
        ssl["ssl_check_hostname"] = _BOOLS[options["ssl_check_hostname"].lower()]
    return ssl


def _credentials(userinfo: str | None) -> tuple[str | None, str | None]:
    if userinfo is None:
        return None, None
    user, _, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) or None


def _location(scheme: str, mode: Mode, hosts_text: str, path: str, query_db: int | None
              ) -> tuple[tuple[tuple[str, int], ...], str | None, str | None, int]:
    """(hosts, unix socket path, Sentinel service name, db) from the part between `://` and `?`."""
    if scheme == "unix":
        if hosts_text:
            raise ValueError("takes no host: write unix:///path/to/redis.sock")
        if not path:
            raise ValueError("needs the socket's absolute path: unix:///path/to/redis.sock")
        return (), "/" + unquote(path), None, query_db or 0
    hosts = tuple(_host_port(text, _DEFAULT_PORT[mode]) for text in hosts_text.split(","))
    service = None
    if mode == "sentinel":
        service_text, _, path = path.partition("/")
        service = unquote(service_text)
        if not service:
            raise ValueError("needs the Sentinel service name as its path: redis+sentinel://host:26379/mymaster")
    elif mode == "node" and len(hosts) > 1:
        raise ValueError("names several hosts: use redis+sentinel:// or redis+cluster:// for more than one")
    path_db = _db(path.strip("/")) if path.strip("/") else None
    if path_db is not None and query_db is not None:
        raise ValueError("gives the database twice (path and ?db=)")
    db = path_db if path_db is not None else query_db or 0
    if mode == "cluster" and db != 0:
        raise ValueError("names a database other than 0: Redis Cluster has only database 0")
    return hosts, None, service, db


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a Redis URL (see the module docstring); ValueError with a reason that never echoes it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(f"must be a {_SCHEME_LIST} URL")
    scheme = scheme.lower()
    mode, tls = _SCHEMES[scheme]
    if "#" in rest:
        raise ValueError("must not have a #fragment (percent-encode # in a password as %23)")
    rest, _, query = rest.partition("?")
    options = _options(query, mode, tls)
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts_text = netloc.rpartition("@")
    username, password = _credentials(userinfo if at else None)
    hosts, unix_path, service, db = _location(scheme, mode, hosts_text, path,
                                              _db(options["db"]) if "db" in options else None)
    timeouts = {name: _positive_seconds(name, options[name]) if name in options else None
                for name in ("socket_timeout", "socket_connect_timeout")}
    return RedisTarget(
        mode=mode, tls=tls, hosts=hosts, unix_path=unix_path, service_name=service, db=db,
        username=username, password=password, socket_timeout=timeouts["socket_timeout"],
        socket_connect_timeout=timeouts["socket_connect_timeout"], ssl=_ssl(options),
        sentinel_username=options.get("sentinel_username"), sentinel_password=options.get("sentinel_password"))
