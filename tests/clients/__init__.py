"""Programs run by real client tools (in their own environments) against the gateway under test."""
