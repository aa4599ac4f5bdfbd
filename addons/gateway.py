"""The gateway's addon chain, loaded with ``mitmdump -s addons/gateway.py``.

DropUnusedBuiltins (under ``run``) and LargeReads tune mitmproxy itself for
speed (ADR 0009). Order matters: requests pass the addons top to bottom.
TlsOptions turns the
TLS settings into mitmproxy options, Route picks each flow's backend (the
configured one or, in forward-proxy mode, the S3 host the request names),
Health answers probes, RequestContext names the operation (and looks up the
bucket's policy), ClientAuth verifies the client's signature, BucketPolicyGate
refuses buckets whose policy is ``refuse``, EnvelopeSeen keeps the envelope the backend sent,
ObjectCrypto rewrites bodies, ListingTranslation shows plaintext sizes in
listings, ObjectAttributesTranslation in GetObjectAttributes answers,
Multipart handles multipart uploads and objects, and Resign signs what is
forwarded. Deadlines closes backend connections that connect or answer
too slowly (after Resign, so its clock starts once the hooks above are done).
The observers come last, so every hook of theirs sees the flow as the other
addons left it: Tracing (which only adds a ``traceparent``
header, not covered by the backend signature), Metrics, AccessLog and
FlowFacts (the S3 facts as flow comments, for mitmweb). DecryptedView adds a
content view that shows a stored ciphertext object decrypted, for mitmweb.
"""

from addons.accesslog import AccessLog
from addons.attributes import ObjectAttributesTranslation
from addons.auth import ClientAuth
from addons.bucketpolicy import BucketPolicyGate
from addons.config import Config
from addons.context import RequestContext
from addons.deadlines import Deadlines
from addons.decryptview import DecryptedView
from addons.health import Health
from addons.largereads import LargeReads
from addons.lean import DropUnusedBuiltins
from addons.limits import Limits
from addons.listing import ListingTranslation
from addons.metrics import Metrics
from addons.multipart import Multipart
from addons.objectcrypto import ObjectCrypto
from addons.resign import Resign
from addons.route import Route
from addons.tls import TlsOptions
from addons.tracing import Tracing
from addons.webfacts import EnvelopeSeen, FlowFacts

config = Config()

addons = [
    config,
    DropUnusedBuiltins(),
    LargeReads(),
    TlsOptions(config),
    Route(config),
    Health(config),
    RequestContext(config),
    Limits(config),
    ClientAuth(config),
    BucketPolicyGate(config),
    EnvelopeSeen(),
    ObjectCrypto(config),
    ListingTranslation(config),
    ObjectAttributesTranslation(config),
    Multipart(config),
    Resign(config),
    Deadlines(config),
    Tracing(config),
    Metrics(config),
    AccessLog(config),
    FlowFacts(config),
    DecryptedView(config),
]
