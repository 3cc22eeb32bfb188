"""SQL against a flowdaq server, answered as pyarrow, pandas or polars tables.

Flight SQL (through the ADBC driver) streams Arrow without a text detour and takes parameters;
it is used when the server's Flight SQL address is known and `adbc-driver-flightsql` is
installed. Otherwise the query goes to `POST /sql?format=arrow`, which answers an Arrow IPC
stream too. Either way a refused or failed query raises `QueryError` with the server's reason.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any, Optional, Sequence

from .errors import FlowdaqError, QueryError

OUTPUTS = ("arrow", "pandas", "polars")


class SqlConnection:
    """Queries one server: `http` is its base URL (`http://127.0.0.1:8080`), `flight_sql` its
    Flight SQL address (`grpc://127.0.0.1:8082`); either may be None, not both."""

    def __init__(self, http: Optional[str], flight_sql: Optional[str], token: Optional[str]):
        if not http and not flight_sql:
            raise ValueError("give the server's http URL or its flight_sql address")
        self.http = http.rstrip("/") if http else None
        self.flight_sql = flight_sql
        self.token = token
        self._adbc: Any = None

    @property
    def uses_flight_sql(self) -> bool:
        """Whether queries go over Flight SQL (else over HTTP)."""
        if not self.flight_sql:
            return False
        try:
            import adbc_driver_flightsql.dbapi  # noqa: F401
        except ImportError:
            return self.http is None
        return True

    def query(self, sql: str, parameters: Optional[Sequence[Any]] = None, output: str = "arrow",
              timeout_s: float = 60.0) -> Any:
        """The answer to `sql` as `output`: "arrow" (pyarrow.Table), "pandas" or "polars".

        `parameters` are values for the statement's `?` (or `$1`, `$2`, ...) placeholders; they
        need Flight SQL. Raises `QueryError` with the server's reason.
        """
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
        if self.uses_flight_sql:
            table = self._flight(sql, parameters)
        elif parameters:
            raise FlowdaqError("query parameters need Flight SQL: install adbc-driver-flightsql "
                               "and give the server's flight_sql address")
        else:
            table = self._http(sql, timeout_s)
        if output == "pandas":
            return table.to_pandas()
        if output == "polars":
            import polars as pl

            return pl.from_arrow(table)
        return table

    def close(self) -> None:
        """Close the Flight SQL connection, if one was opened."""
        if self._adbc is not None:
            self._adbc.close()
            self._adbc = None

    def _flight(self, sql: str, parameters: Optional[Sequence[Any]]) -> Any:
        import adbc_driver_flightsql
        import adbc_driver_flightsql.dbapi as flight_sql
        import adbc_driver_manager

        if self._adbc is None:
            options = {}
            if self.token:
                options[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {self.token}"
            self._adbc = flight_sql.connect(self.flight_sql, db_kwargs=options, autocommit=True)
        try:
            with self._adbc.cursor() as cursor:
                cursor.execute(sql, parameters)
                return cursor.fetch_arrow_table()
        except adbc_driver_manager.Error as err:
            raise QueryError(str(err)) from None

    def _http(self, sql: str, timeout_s: float) -> Any:
        import pyarrow as pa

        headers = {"Content-Type": "text/plain"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(f"{self.http}/sql?format=arrow", data=sql.encode(),
                                         method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            raise QueryError(err.read().decode(errors="replace").strip(), err.code) from None
        except urllib.error.URLError as err:
            raise FlowdaqError(f"cannot reach {self.http}: {err.reason}") from None
        return pa.ipc.open_stream(body).read_all()
