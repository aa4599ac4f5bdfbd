"""The gateway's addon chain, loaded with ``mitmdump -s addons/gateway.py``.

Order matters: requests pass the addons top to bottom. Health answers probes,
RequestContext names the operation, Limits refuses oversized or too frequent
requests (and turns backend failures into S3 errors), ClientAuth verifies the client's
signature, ObjectCrypto rewrites bodies, ListingTranslation shows plaintext
sizes in listings, Multipart handles multipart uploads and objects, and Resign
signs what is forwarded. The observers come last, so every hook of theirs sees
the flow as the other addons left it: Tracing (which only adds a
``traceparent`` header, not covered by the backend signature), Metrics and
AccessLog.
"""

from addons.accesslog import AccessLog
from addons.auth import ClientAuth
from addons.config import Config
from addons.context import RequestContext
from addons.health import Health
from addons.limits import Limits
from addons.listing import ListingTranslation
from addons.metrics import Metrics
from addons.multipart import Multipart
from addons.objectcrypto import ObjectCrypto
from addons.resign import Resign
from addons.tracing import Tracing

config = Config()

addons = [
    config,
    Health(config),
    RequestContext(config),
    Limits(config),
    ClientAuth(config),
    ObjectCrypto(config),
    ListingTranslation(config),
    Multipart(config),
    Resign(config),
    Tracing(config),
    Metrics(config),
    AccessLog(config),
]
