"""Record envelopes as Arrow: build them, index their ids, hash and validate them.

One module per job: `schema` (the row's shape), `builder` (records to batches, the hot
path), `ids` (the duplicate-id index), `hashing` (the content hash) and `validate` (the
contract checks the executor and the Dagster checks share).
"""

from .builder import EnvelopeBuilder, source_key
from .hashing import ContentHasher, content_hash
from .ids import IdSet, event_id_keys
from .schema import (
    ENVELOPE_ARROW_SCHEMA,
    ENVELOPE_VERSION,
    HASHED_FIELDS,
    WALL_CLOCK_FIELDS,
    envelope_json_schema,
)
from .validate import validate_envelope_stream, validate_envelopes

__all__ = [
    "ENVELOPE_ARROW_SCHEMA",
    "ENVELOPE_VERSION",
    "HASHED_FIELDS",
    "WALL_CLOCK_FIELDS",
    "ContentHasher",
    "EnvelopeBuilder",
    "IdSet",
    "content_hash",
    "envelope_json_schema",
    "event_id_keys",
    "source_key",
    "validate_envelope_stream",
    "validate_envelopes",
]
