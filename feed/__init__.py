"""The always-on regulator feed: the ``indicators``, ``indicators.history`` and ``escalations`` topics kept in
a database (SQLite embedded, PostgreSQL in production) and served over an HTTP API with API keys, small-number
suppression, an append-only audit log, FHIR R4 MeasureReports and a mock digital inspection (issue 7)."""
