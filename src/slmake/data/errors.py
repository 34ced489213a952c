"""What can happen to a record, and the one exception the curate stage raises.

Every input record ends in exactly one fate: kept (in a split), dropped under one named rule, or
quarantined for one named reason.  These names appear in the report, the ledger and the card.
"""

# Malformed records: they go to the quarantine file, and a ceiling on their share fails the stage.
QUARANTINE_REASONS = ("not_utf8", "line_too_long", "invalid_json", "bad_row", "missing_field",
                      "wrong_type", "invalid_record")

# Well-formed records that curation decided not to keep.
RULES = ("empty", "empty_response", "too_long", "too_many_tokens", "response_invalid", "duplicate",
         "conflicting_duplicate", "near_duplicate", "label_cap")


class CurationError(Exception):
    """Bad data or config; the message names the file/line or key, and what was expected."""
