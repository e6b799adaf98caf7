"""The only place provisioning talks to central (HTTP, httpx). Adapt here when the API changes.

Endpoints used:

* ``POST /api/auth/token`` (form ``username``, ``password``) -> ``{"access_token", ...}``.
* ``POST /api/collectors/{id}/registration`` (``central/api/registration.py``). Registers a
  collector and its meter mapping in one database transaction (all or nothing; technician or admin
  role; idempotent: the same body twice changes nothing the second time). The property and its
  apartments must be in central already (the property manager's register). Body::

      {"property": "KVARNEN-5",
       "collector": {"id": "kvarnen-5-1",
                     "mqtt": {"username": "collector-kvarnen-5-1", "password_hash": "$7$101$...",
                              "acl": "user collector-kvarnen-5-1\ntopic write ..."}},
       "meters": [{"id": "61234567", "manufacturer": "KAM", "version": 10, "device_type": 4,
                   "medium": "heat", "link": "mbus", "bus": "mbus0", "primary_address": 1,
                   "secondary_address": "61234567A...", "apartment": "051-1101", "meter_point": "heat",
                   "model": "MULTICAL 403", "key": "32 hex, radio meters only, optional"}]}

  Answers ``201`` ``{"collector": id, "property": key, "collector_created": bool, "meters_created": n,
  "meters_updated": n, "meter_points_created": n, "keys_set": n, "changed": bool}``; ``422``
  ``{"detail": {"refused": [{"meter": id, "reason": text}]}}`` with nothing changed; ``409`` (same
  shape) when the collector or a meter belongs to another property; ``404`` when the property is
  unknown; ``403`` for other roles. Keys are encrypted at rest and never echoed. An older central
  without the endpoint answers 404/405: :meth:`CentralClient.register` then raises
  :class:`RegistrationUnsupportedError` and the CLI writes the mapped site export for
  ``imd central import-site`` instead.
* ``POST /api/collectors/{id}/commands`` ``{"command": "read_all"}`` -> 202 (exists; 404 before the
  collector's first message, 503 when central runs without a broker).
* ``GET /api/meters?property=...`` (``last_reading_at``, ``last_frame_at`` per meter): exists.
* ``GET /api/frames?collector=...&status=failed|no_answer`` (``address``, ``reason``): exists.
* ``GET /api/collectors``: exists.
"""

from __future__ import annotations

from typing import Any

import httpx

REGISTRATION_PATH = "/api/collectors/{collector}/registration"


class CentralError(RuntimeError):
    """Central answered with an error; the message carries its reason (never a secret)."""

    def __init__(self, message: str, status: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class RegistrationUnsupportedError(CentralError):
    """This central is older than its registration endpoint (see the module docstring)."""


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:500]


class CentralClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport)
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CentralClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: httpx.Response, what: str) -> Any:
        if response.status_code >= 400:
            detail = _detail(response)
            raise CentralError(f"{what}: HTTP {response.status_code}: {detail}", response.status_code, detail)
        return response.json()

    def login(self, username: str, password: str) -> None:
        response = self._http.post("/api/auth/token", data={"username": username, "password": password})
        token = self._check(response, "login")["access_token"]
        self._http.headers["Authorization"] = f"Bearer {token}"

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self._check(self._http.get("/api/me"), "who am I")
        return result

    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        collector = body["collector"]["id"]
        response = self._http.post(REGISTRATION_PATH.format(collector=collector), json=body)
        if response.status_code in (404, 405) and not _is_domain_404(response):
            raise RegistrationUnsupportedError(
                f"central has no {REGISTRATION_PATH} endpoint (HTTP {response.status_code})",
                response.status_code,
            )
        result: dict[str, Any] = self._check(response, f"registration of collector {collector}")
        return result

    def read_now(self, collector: str) -> dict[str, Any]:
        response = self._http.post(f"/api/collectors/{collector}/commands", json={"command": "read_all"})
        result: dict[str, Any] = self._check(response, f"read now on collector {collector}")
        return result

    def meters(self, property_id: str) -> list[dict[str, Any]]:
        response = self._http.get("/api/meters", params={"property": property_id, "limit": 10_000})
        result: list[dict[str, Any]] = self._check(response, f"meters of {property_id}")
        return result

    def frames(self, collector: str, status: str | None = None, limit: int = 2000) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"collector": collector, "limit": limit}
        if status is not None:
            params["status"] = status
        result: list[dict[str, Any]] = self._check(self._http.get("/api/frames", params=params), "frames")
        return result

    def collectors(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._check(self._http.get("/api/collectors"), "collectors")
        return result


def _is_domain_404(response: httpx.Response) -> bool:
    """A 404 from the endpoint itself (unknown property) rather than from routing ("Not Found")."""
    if response.status_code != 404:
        return False
    return _detail(response) not in (None, "Not Found")
