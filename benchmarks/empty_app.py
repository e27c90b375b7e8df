"""The framework's ceiling, for benchmarks.ingest: one route shaped like POST /jobs/{id}/events
(a path parameter, a validated JSON body, a plain `def` run in the thread pool, a JSON answer)
that touches no database, served by uvicorn exactly as the API is."""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class EventBody(BaseModel):
    kind: str
    name: str | None = None
    event_id: str | None = None


@app.get("/health")
def read_health() -> dict[str, str]:
    """The benchmark waits for this before it starts."""
    return {"status": "ok"}


@app.post("/jobs/{job_id}/events", status_code=201)
def create_event(job_id: int, body: EventBody) -> dict[str, object]:
    """Answer the event without storing it."""
    return {"job_id": job_id, "kind": body.kind, "name": body.name, "event_id": body.event_id}
