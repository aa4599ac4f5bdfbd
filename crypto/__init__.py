"""Streaming envelope encryption for S3 object bodies (the S3G1 format).

A pure library: no I/O and no proxy code. Typical use::

    data_key = DataKey.generate()
    encryptor = FrameEncryptor(data_key, plaintext_length)
    envelope = Envelope.seal(data_key, keyring, frame=encryptor.header)
    store(envelope.encode(), encryptor.update(piece) ..., encryptor.finalize())

    envelope = Envelope.decode(stored_value)
    decryptor = ObjectDecryptor(envelope.open(keyring), expected_frame=envelope.frame)

See docs/ENCRYPTION_DESIGN.md for the format and its security properties.
"""

from crypto.envelope import DataKey, Envelope
from crypto.errors import (
    AlgorithmNotAllowed,
    CommitmentMismatch,
    CryptoError,
    FormatError,
    IntegrityError,
    KeyUnwrapError,
    LengthMismatch,
    RangeNotSatisfiable,
    TrailingDataError,
    TruncatedError,
    UnknownKeyId,
)
from crypto.format import DEFAULT_CHUNK_SIZE, HEADER_LENGTH, Algorithm, FrameHeader
from crypto.keyring import Keyring, StaticKeyring, kek_from_passphrase
from crypto.pool import BufferPool, PoolStats, shared_pool_stats
from crypto.profiles import ProviderProfile, get_profile, metadata_budget
from crypto.ranges import (
    PartsRangePlan,
    RangePlan,
    RangeRequest,
    parse_range,
    plan_parts_range,
    plan_range,
)
from crypto.sizes import PartLayout, ciphertext_length, plaintext_length, uniform_part_layout
from crypto.stream import FrameEncryptor, ObjectDecryptor, PartsRangeDecryptor, RangeDecryptor

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "HEADER_LENGTH",
    "Algorithm",
    "AlgorithmNotAllowed",
    "BufferPool",
    "CommitmentMismatch",
    "CryptoError",
    "DataKey",
    "Envelope",
    "FormatError",
    "FrameEncryptor",
    "FrameHeader",
    "IntegrityError",
    "KeyUnwrapError",
    "Keyring",
    "LengthMismatch",
    "ObjectDecryptor",
    "PartLayout",
    "PartsRangeDecryptor",
    "PartsRangePlan",
    "PoolStats",
    "ProviderProfile",
    "RangeDecryptor",
    "RangeNotSatisfiable",
    "RangePlan",
    "RangeRequest",
    "StaticKeyring",
    "TrailingDataError",
    "TruncatedError",
    "UnknownKeyId",
    "ciphertext_length",
    "get_profile",
    "kek_from_passphrase",
    "metadata_budget",
    "parse_range",
    "plaintext_length",
    "plan_parts_range",
    "plan_range",
    "shared_pool_stats",
    "uniform_part_layout",
]
