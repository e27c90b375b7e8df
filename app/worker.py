"""The entry point of the functions that serve no HTTP: the worker (schedules) and the deploy's
migration function, `app.worker.handler` in template.yaml.

The same dispatch as the API's `app.main.handler` (app.entrypoint), configured at import in
the same way, without building the FastAPI app and its routes, which these functions never
use: their cold start imports only what an event of theirs needs.
"""

from app import cold_start
from app.entrypoint import LambdaHandler
from config import config

config.setup()

handler = LambdaHandler(None, base_path=config.settings.api_base_path)

cold_start.done()
