"""The BAXO Connect API: typed records, the HTTP client and history export."""
