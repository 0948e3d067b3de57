"""The audit trail: who touched which patient's data, when, with what outcome."""
