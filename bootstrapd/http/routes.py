"""Routes other modules add to the HTTP service: the status page, its API, ``/metrics`` (the journal's, #12).

Register before the daemon starts the services (a service factory that runs before HTTP's, or at import)::

    ctx.http_routes.add("/metrics", metrics_handler)             # exact path
    ctx.http_routes.add("/status/", status_handler)              # a prefix: ends in "/"
    ctx.http_routes.add("/api/phones", api_handler, methods=("GET", "POST"))

A handler is ``async def handler(request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse``. Registered
routes win over files of the tree with the same path; they pass through the HTTP service's limits (connections,
rates, head and idle timeouts) and each request is an ``http.request`` event like any other. They must do their own
authentication (``[status]`` credentials), as the tree's ``[[auth]]`` folders do not cover them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
else:
    Handler = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    path: str
    handler: Handler
    methods: frozenset[str]


class HttpRoutes:
    def __init__(self) -> None:
        self._exact: dict[str, Route] = {}
        self._prefixes: list[Route] = []

    def add(self, path: str, handler: Handler, methods: Iterable[str] = ("GET", "HEAD")) -> None:
        if not path.startswith("/"):
            raise ValueError(f"route {path!r} must start with '/'")
        route = Route(path, handler, frozenset(m.upper() for m in methods))
        if path.endswith("/") and path != "/":
            self._prefixes.append(route)
            self._prefixes.sort(key=lambda r: -len(r.path))
        else:
            self._exact[path] = route

    def match(self, path: str) -> Route | None:
        route = self._exact.get(path)
        if route is not None:
            return route
        for route in self._prefixes:
            if path.startswith(route.path) or path == route.path[:-1]:
                return route
        return None

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes)
