"""The JSON error bodies every carepulse HTTP API answers with (the gateway's intake and the regulator feed):
a sentence for people, and for invalid requests the fields at fault. Never a traceback."""

from __future__ import annotations

from pydantic import BaseModel


class Problem(BaseModel):
    error: str


class FieldProblem(BaseModel):
    field: str
    message: str


class InvalidRequest(Problem):
    details: list[FieldProblem]
