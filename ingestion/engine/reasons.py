"""Why a message went to the dead-letter topic: the `reason` label of `k2_dlq_messages_total`,
every value known up front so each series starts at 0 (an alert's `increase()` sees the first).
No imports: `ingestion.apps` reads it at every process start."""

POISON_REASONS = (
    "not_wire_format",      # not Confluent's wire format (magic byte, schema id)
    "unknown_schema",       # a schema id the registry does not know
    "schema_mismatch",      # a record of another data type's schema
    "undecodable",          # an Avro body that cannot be read (truncated, corrupt)
    "value_out_of_range",   # a value the table cannot hold
    "value_too_long",       # a symbol or exchange longer than the gap store holds
    "gap_unstorable",       # a gap whose row Postgres refused
)
