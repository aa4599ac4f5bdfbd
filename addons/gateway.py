"""The gateway's addon chain, loaded with ``mitmdump -s addons/gateway.py``.

Order matters: requests pass the addons top to bottom. Health answers probes,
RequestContext names the operation, ClientAuth verifies the client's
signature, ObjectCrypto rewrites bodies, ListingTranslation shows plaintext
sizes in listings, Multipart handles multipart uploads and objects, and Resign
signs what is forwarded.
"""

from addons.auth import ClientAuth
from addons.config import Config
from addons.context import RequestContext
from addons.health import Health
from addons.listing import ListingTranslation
from addons.multipart import Multipart
from addons.objectcrypto import ObjectCrypto
from addons.resign import Resign

config = Config()

addons = [
    config,
    Health(config),
    RequestContext(config),
    ClientAuth(config),
    ObjectCrypto(config),
    ListingTranslation(config),
    Multipart(config),
    Resign(config),
]
