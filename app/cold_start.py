"""The garbage collector during a Lambda entry module's import (app.main, app.worker), which
import this module before anything else, their libraries included: importing it turns the
collector off, and `done()`, at the end of the entry module, freezes what the import made and
turns the collector back on.

The import makes tens of thousands of objects (models, schemas, routes) and frees almost none
of them, so the collections it would set off find next to nothing to collect: on the
development machine, two full collections over every object, libraries' included, and 25 to
50 ms of CPU of every cold start. Frozen, the objects are also left out of the collections of
every invocation after it.
"""

import gc

gc.disable()


def done() -> None:
    gc.freeze()
    gc.enable()
